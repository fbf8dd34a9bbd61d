"""The command line: exit codes 0 / 1 / 2, one located line per user error, no traceback unless asked."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import loctest
import loctest.models
from loctest.base import Example
from loctest.cli import main
from loctest.errors import UserError
from loctest.models import resolve_device
from loctest.recipe import DatasetSelection, apply_overrides, parse_limit
from loctest.runner import select
from conftest import BUILTINS, write_plugin

RECIPE = """
[run]
backend = "nnsight"
out = "OUT/runs"
cache = "OUT/cache"

[model]
name = "tiny-llama"
device = "cpu"

[datasets.tqa]
plugin = "truthfulqa-binary"
limit = 4

[scorers.tqa]
plugin = "binary-choice"
dataset = "tqa"
repetitions = 2

[arms.baseline]

[arms.rand]
locator = { plugin = "random", kind = "mlp", count = 5 }
editor = "zero-ablation"
"""

BROKEN = {
    "unknown plugin": (('"random"', '"randm"'), "arms.rand.locator.plugin: unknown locator 'randm': did you mean 'random'?"),
    "misspelled key": (("count = 5", "cuont = 5"), "arms.rand.locator.cuont: unknown key; did you mean 'count'?"),
    "wrong type": (("repetitions = 2", 'repetitions = "two"'), "scorers.tqa.repetitions: Input should be a valid integer"),
    "missing dataset file": (('plugin = "truthfulqa-binary"', 'plugin = "table"\npath = "gone.csv"'),
                             "datasets.tqa.path: file not found: "),
    "toml syntax": (("[arms.baseline]", "[arms.baseline"), "TOML syntax error: "),
}


def write_recipe(tmp_path: Path, text: str = RECIPE) -> Path:
    path = tmp_path / "recipe.toml"
    path.write_text(text.replace("OUT", str(tmp_path)))
    return path


def one_error_line(err: str) -> str:
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_recipe_exits_2_with_one_located_line(tmp_path, capsys, case, command):
    (old, new), expected = BROKEN[case]
    path = write_recipe(tmp_path, RECIPE.replace(old, new, 1))
    assert main([command, str(path)]) == 2
    out, err = capsys.readouterr()
    line = one_error_line(err)
    assert line.startswith(f"error: {path}: {expected}")
    assert out == ""
    assert not (tmp_path / "runs").exists()  # nothing ran


@pytest.mark.parametrize("command", ["validate", "run"])
def test_missing_recipe_file(tmp_path, capsys, command):
    assert main([command, str(tmp_path / "missing.toml")]) == 2
    assert one_error_line(capsys.readouterr().err) == f"error: {tmp_path / 'missing.toml'}: recipe file not found"


@pytest.mark.parametrize("argv", [["--traceback", "validate"], ["validate", "--traceback"]])
def test_traceback_flag_shows_one(tmp_path, capsys, argv):
    path = write_recipe(tmp_path, RECIPE.replace('"random"', '"randm"'))
    assert main([*argv, str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: arms.rand.locator.plugin: unknown locator 'randm'")
    assert "Traceback (most recent call last)" in err and "loctest.errors.RecipeError" in err


def test_bad_set_flag(tmp_path, capsys):
    path = write_recipe(tmp_path)
    assert main(["validate", str(path), "--set", "run.seed"]) == 2
    assert one_error_line(capsys.readouterr().err) == "error: --set 'run.seed': expected dotted.key=value"
    assert main(["validate", str(path), "--set", "run.seed=x1"]) == 2
    assert "run.seed: Input should be a valid integer" in one_error_line(capsys.readouterr().err)


def test_validate_ok(tmp_path, capsys):
    path = write_recipe(tmp_path)
    assert main(["validate", str(path), "--set", "datasets.tqa.limit=2"]) == 0
    out, err = capsys.readouterr()
    assert out == f"{path}: OK (2 arms, 1 scorers, 1 datasets, 0 comparisons)\n" and err == ""


def test_plugins_table_lists_builtins_with_config_fields(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    for kind, names in BUILTINS.items():
        assert f"{kind}s" in out
        for name in names:
            assert f"│ {name} " in out
    assert "count: int | None = None" in out  # random's config
    assert "repetitions: int = 10" in out  # binary-choice's config
    assert "path: str = (required)" in out  # table's config


def test_plugins_json_lists_builtins_with_config_fields(capsys):
    assert main(["plugins", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert listing["failures"] == []
    entries = {kind: {e["name"]: e for e in found} for kind, found in listing["plugins"].items()}
    for kind, names in BUILTINS.items():
        for name in names:
            entry = entries[kind][name]
            assert entry["plugin"] == "builtins" and entry["description"]
            for field in entry["config"]:
                assert set(field) == {"name", "type", "default", "required", "description"}
                assert field["description"], f"{kind} {name}: field {field['name']} has no description"
    random = {f["name"]: f for f in entries["locator"]["random"]["config"]}
    assert random["count"] == {"name": "count", "type": "int | None", "default": None, "required": False,
                               "description": random["count"]["description"]}
    assert random["kind"]["default"] == "mlp"
    assert entries["dataset"]["table"]["config"][0] == {
        "name": "path", "type": "str", "default": None, "required": True, "description": entries["dataset"]["table"]["config"][0]["description"]}
    assert entries["scorer"]["binary-choice"]["metrics"] == ["accuracy", "correct_prob"]


EXPLODING = '''
from loctest import Locator, hookimpl


class Exploding(Locator):
    name = "exploding"
    description = "Fails while locating (a plugin bug)."

    def locate(self, context):
        raise RuntimeError("kaput\\nsecond line of the message")


@hookimpl
def register_locators(register):
    register(Exploding)
'''


def test_internal_error_in_a_plugin_exits_1_with_one_line(tmp_path, capsys):
    write_plugin(tmp_path / "plugins", "exploding", EXPLODING)
    path = write_recipe(tmp_path, RECIPE.replace('{ plugin = "random", kind = "mlp", count = 5 }', '"exploding"'))
    argv = ["run", str(path), "--plugins-dir", str(tmp_path / "plugins"), "--no-progress"]
    assert main(argv) == 1
    assert one_error_line(capsys.readouterr().err) == (
        "internal error: RuntimeError: kaput [in arms.rand.locator, plugin 'exploding'] (run with --traceback for details)")
    assert main([*argv, "--traceback"]) == 1
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "RuntimeError: kaput" in err and "in locate" in err


def test_user_error_from_a_plugin_at_run_time_is_located(tmp_path, capsys):
    path = write_recipe(tmp_path, RECIPE.replace("count = 5", "count = 100000"))
    assert main(["run", str(path), "--no-progress"]) == 2
    assert one_error_line(capsys.readouterr().err) == (
        f"error: {path}: arms.rand.locator: random locator: count 100000 exceeds the 256 components available")


def test_console_script(tmp_path):
    script = shutil.which("loctest", path=str(Path(sys.executable).parent))
    assert script, "the loctest console script is not installed beside this Python"
    path = write_recipe(tmp_path, RECIPE.replace("cuont", "count").replace("count = 5", "cuont = 5"))
    done = subprocess.run([script, "validate", str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert one_error_line(done.stderr).startswith(f"error: {path}: arms.rand.locator.cuont: unknown key")
    assert done.stdout == ""


def test_unknown_plugin_error_tells_which_plugin_failed_to_import(tmp_path, capsys):
    write_plugin(tmp_path / "plugins", "mine", "import no_such_module_anywhere\n")
    path = write_recipe(tmp_path, '[plugins]\npaths = ["plugins"]\n' + RECIPE.replace('"random"', '"mine"'))
    assert main(["validate", str(path)]) == 2
    error = one_error_line(capsys.readouterr().err)
    assert error.startswith(f"error: {path}: arms.rand.locator.plugin: unknown locator 'mine': valid: ")
    assert error.endswith(f"; plugin 'mine' ({tmp_path / 'plugins' / 'mine.py'}) failed to load: "
                          "ModuleNotFoundError: No module named 'no_such_module_anywhere'")


def test_version_names_loctest_and_the_packages_behind_its_numbers(capsys):
    from importlib.metadata import version

    assert main(["--version"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"loctest {loctest.__version__}"
    for package in ("torch", "transformers", "transformer-lens", "nnsight", "peft"):
        assert f"{package} {version(package)}" in lines


def test_validate_several_files_reports_every_file(tmp_path, capsys):
    good = write_recipe(tmp_path)
    bad = tmp_path / "bad.toml"
    bad.write_text(good.read_text().replace('"random"', '"randm"').replace("repetitions = 2", 'repetitions = "two"'))
    other = tmp_path / "other.toml"
    other.write_text(good.read_text())
    missing = tmp_path / "missing.toml"
    assert main(["validate", str(good), str(bad), str(missing), str(other)]) == 2
    out, err = capsys.readouterr()
    assert out.splitlines() == [f"{path}: OK (2 arms, 1 scorers, 1 datasets, 0 comparisons)" for path in (good, other)]
    errors = err.splitlines()
    assert len(errors) == 4 and "Traceback" not in err
    assert errors[0].startswith(f"error: {bad}: scorers.tqa.repetitions: Input should be a valid integer")
    assert errors[1].startswith(f"error: {bad}: arms.rand.locator.plugin: unknown locator 'randm'")
    assert errors[2] == f"error: {missing}: recipe file not found"
    assert errors[3] == "error: 2 of 4 recipes failed validation"
    assert main(["validate", str(good), str(other)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2


LIMIT_ERROR = ("expected a count N >= 1 (at most N examples per dataset, e.g. 40) or a fraction 0 < F <= 1 (that "
               "share of each dataset's selected examples, e.g. 0.1)")


@pytest.mark.parametrize("limit", ["0", "-3", "1.5", "abc", "40.0", "2e0"])
def test_bad_limit_exits_2_with_one_line(tmp_path, capsys, limit):
    path = write_recipe(tmp_path)
    assert main(["run", str(path), "--limit", limit, "--no-progress"]) == 2
    assert one_error_line(capsys.readouterr().err) == f"error: limit {limit}: {LIMIT_ERROR}"
    assert not (tmp_path / "runs").exists()
    with pytest.raises(UserError, match="^limit 0: expected a count"):
        loctest.run(path, limit=0)


@pytest.mark.parametrize(("limit", "field", "recipe_value", "expected"), [
    ("3", "limit", 4, 3), ("40", "limit", 4, 4), ("0.5", "limit_fraction", None, 0.5),
    (0.25, "limit_fraction", 0.1, 0.1), (0.25, "limit_fraction", 0.5, 0.25), (1, "limit", None, 1)])
def test_limit_lowers_each_datasets_count_or_fraction(limit, field, recipe_value, expected):
    raw = {"datasets": {"a": {"plugin": "x"} | ({field: recipe_value} if recipe_value is not None else {}),
                        "b": {"plugin": "x"}}}
    datasets = apply_overrides(raw, {}, limit=limit)["datasets"]
    assert datasets["a"][field] == expected and datasets["b"][field] == parse_limit(limit)
    assert raw["datasets"]["b"] == {"plugin": "x"}  # the recipe itself is untouched


def test_limit_fraction_applies_after_split_and_limit_per_dataset():
    examples = [Example(id=str(i), question=f"q{i}", correct=("a",), incorrect=("b",)) for i in range(40)]
    train = select(examples, DatasetSelection(split="train", split_fraction=0.5))
    assert len(train) == 20
    assert select(examples, DatasetSelection(split="train", limit_fraction=0.3)) == train[:6]
    assert select(examples, DatasetSelection(split="train", limit=10, limit_fraction=0.25)) == train[:2]  # of 10
    assert select(examples, DatasetSelection(split="test", limit_fraction=0.01)) == select(
        examples, DatasetSelection(split="test"))[:1]  # at least one


def test_limit_fraction_in_a_run(tmp_path):
    results = loctest.run(write_recipe(tmp_path), limit=0.5, progress=False)
    assert results.data["datasets"]["tqa"]["n"] == 2  # half of the recipe's 4
    assert results.data["resolved"]["datasets"]["tqa"]["limit_fraction"] == 0.5
    log = (results.run_dir / "run.log").read_text()
    assert f"command: loctest.run({str(tmp_path / 'recipe.toml')!r}, {{}}, out=None, limit=0.5" in log


@pytest.mark.parametrize(("device", "hint"), [("cdua", "did you mean 'cuda'? "), ("cuda:x", "did you mean 'cuda'? "),
                                              ("gpu", ""), ("", "")])
def test_unknown_device_exits_2_naming_the_key(tmp_path, capsys, device, hint):
    path = write_recipe(tmp_path)
    assert main(["run", str(path), "--device", device, "--no-progress"]) == 2
    assert one_error_line(capsys.readouterr().err) == (
        f"error: {path}: model.device: not a torch device; {hint}expected 'auto' or a torch device string such as "
        f"'cpu', 'cuda', 'cuda:1', 'mps' (got {device!r})")
    recipe = write_recipe(tmp_path, RECIPE.replace('device = "cpu"', f'device = "{device}"'))
    assert main(["validate", str(recipe)]) == 2
    assert f"model.device: not a torch device; {hint}" in one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize("device", ["cuda:1", "mps", "cpu:0", "auto", "xpu:3"])
def test_any_torch_device_string_validates(tmp_path, capsys, device):
    path = write_recipe(tmp_path, RECIPE.replace('device = "cpu"', f'device = "{device}"'))
    assert main(["validate", str(path)]) == 0  # whether this machine has it is checked by `run`


@pytest.mark.parametrize(("gpus", "device", "problem"), [
    (0, "cuda:1", "torch sees no CUDA device (install a CUDA build of torch, see README)"),
    (0, "cuda", "torch sees no CUDA device (install a CUDA build of torch, see README)"),
    (1, "cuda:1", "torch sees only cuda:0"),
    (2, "cuda:2", "torch sees only cuda:0, cuda:1")])
def test_unavailable_device_exits_2_before_loading_weights(tmp_path, capsys, monkeypatch, gpus, device, problem):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    monkeypatch.setattr(loctest.models, "random_weights", lambda *a: pytest.fail("weights were loaded"))
    path = write_recipe(tmp_path)
    assert main(["run", str(path), "--device", device, "--no-progress"]) == 2
    assert one_error_line(capsys.readouterr().err) == (
        f"error: {path}: model: device {device!r} is not available on this machine: {problem}")
    assert not (tmp_path / "runs").exists()


def test_mps_unavailable_and_auto(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(UserError, match="^device 'mps' is not available on this machine: torch sees no MPS device"):
        resolve_device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu") == resolve_device("cpu")


NOISY = '''
import warnings

from huggingface_hub.utils import tqdm as hub_tqdm
from tqdm.auto import tqdm
from transformers.utils import logging

from loctest import ComponentSet, Locator, hookimpl
from loctest.errors import LoctestWarning


def third_party_bars():
    """What model loading draws: the GGUF bar (tqdm.auto), transformers' and huggingface_hub's own."""
    for bar in (tqdm(range(3), desc="Converting and de-quantizing GGUF tensors..."),
                logging.tqdm(range(3), desc="Loading weights"), hub_tqdm(range(3), desc="Fetching 2 files")):
        for _ in bar:
            pass


class Noisy(Locator):
    name = "noisy"
    description = "Draws third-party progress bars and warns."

    def locate(self, context):
        third_party_bars()
        warnings.warn("a noisy plugin was here", LoctestWarning)
        return ComponentSet(["mlp:0:1"])


@hookimpl
def register_locators(register):
    register(Noisy)
'''
THIRD_PARTY_BARS = ("Converting and de-quantizing GGUF tensors", "Loading weights", "Fetching 2 files")


def run_noisy(tmp_path, *flags) -> Path:
    module = write_plugin(tmp_path / "plugins", "noisy", NOISY)
    path = write_recipe(tmp_path, RECIPE.replace('{ plugin = "random", kind = "mlp", count = 5 }', '"noisy"'))
    assert main(["run", str(path), "--plugins-dir", str(module.parent), *flags]) == 0
    return path


def test_run_quiets_third_party_bars_and_shows_one_line_across_stages(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    run_noisy(tmp_path)
    err = capsys.readouterr().err
    assert not [bar for bar in THIRD_PARTY_BARS if bar in err], err
    # load, score:baseline:tqa, locate:rand, edit:rand, score:rand:tqa, report
    assert [line.split()[-3] for line in err.splitlines() if line.startswith("stages ")] == ["6/6"], err
    assert "warning: a noisy plugin was here" in err.splitlines()
    namespace = {}  # the run left tqdm as it found it: the same bars show again
    exec(compile(NOISY, "noisy", "exec"), namespace)
    namespace["third_party_bars"]()
    shown = capsys.readouterr().err
    assert all(bar in shown for bar in THIRD_PARTY_BARS), shown


def test_no_progress_shows_no_bar_at_all(tmp_path, capsys):
    run_noisy(tmp_path, "--no-progress")
    assert capsys.readouterr().err == "warning: a noisy plugin was here\n"


def test_run_log_records_command_versions_warnings_and_stages(tmp_path, capsys):
    from importlib.metadata import version

    path = run_noisy(tmp_path, "--no-progress", "--limit", "3")
    [run_dir] = (tmp_path / "runs").iterdir()
    log = (run_dir / "run.log").read_text()
    assert f"command: loctest run {path} --plugins-dir {tmp_path / 'plugins'} --no-progress --limit 3\n" in log
    assert f"transformers {version('transformers')}, transformer-lens {version('transformer-lens')}" in log
    assert " warning: a noisy plugin was here\n" in log
    stages = re.findall(r"stage (\S+): done in \d+\.\d\d s\n", log)
    assert stages == ["load", "score:baseline:tqa", "locate:rand", "edit:rand", "score:rand:tqa", "report"]
    assert "finished in " in log.splitlines()[-1] and str(run_dir / "report.md") in log.splitlines()[-1]


@pytest.mark.parametrize(("plugin", "error", "code"), [
    ('"exploding"', "internal error: RuntimeError: kaput [in arms.rand.locator, plugin 'exploding']", 1),
    ('{ plugin = "random", kind = "mlp", count = 100000 }',
     "error: RECIPE: arms.rand.locator: random locator: count 100000 exceeds the 256 components available", 2)])
def test_failed_run_leaves_run_log_with_the_error_and_its_traceback(tmp_path, capsys, plugin, error, code):
    write_plugin(tmp_path / "plugins", "exploding", EXPLODING)
    path = write_recipe(tmp_path, RECIPE.replace('{ plugin = "random", kind = "mlp", count = 5 }', plugin))
    assert main(["run", str(path), "--plugins-dir", str(tmp_path / "plugins"), "--no-progress"]) == code
    error = error.replace("RECIPE", str(path))
    assert one_error_line(capsys.readouterr().err).startswith(error)  # no traceback on the console
    [run_dir] = (tmp_path / "runs").iterdir()
    assert run_dir.name.endswith("-failed")
    log = (run_dir / "run.log").read_text()
    assert f"command: loctest run {path} --plugins-dir" in log
    assert "stage score:baseline:tqa: done in " in log and log.count("stage locate:rand") == 1  # began, never ended
    assert f" {error}\nTraceback (most recent call last):\n" in log
    assert "(run with --traceback" not in log
