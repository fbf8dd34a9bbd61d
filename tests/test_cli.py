"""The command line: exit codes 0 / 1 / 2, one located line per user error, no traceback unless asked."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from loctest.cli import main
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
