"""Bad input -> exit 2: one line naming the file, the row or line and the column or key; no traceback, nothing
written outside the --out folder, earlier runs untouched."""
from __future__ import annotations

import json
import os

import pytest

import loctest.runner
from conftest import tiny_recipe, write_plugin
from loctest.cache import JsonCache
from loctest.cli import main
from loctest.errors import LoctestWarning, UserError
from loctest.runner import marks_failed_runs, new_run_dir

SCORED = """[scorers.choice]
plugin = "binary-choice"
dataset = "DATASET"
repetitions = 1
[arms.baseline]
"""
TQA = '[datasets.tqa]\nplugin = "truthfulqa-binary"\nlimit = 2\n' + SCORED.replace("DATASET", "tqa")
CSV_HEAD = "question,correct,incorrect\n"

# file name, content, extra dataset keys, expected end of the error line after "FILE: "
DATA = {
    "empty csv": ("q.csv", "", "", "empty file: expected a header line and rows"),
    "csv with only a header": ("q.csv", CSV_HEAD, "", "no rows after the header line"),
    "csv row missing its answer cells": ("q.csv", CSV_HEAD + "Q1,yes,no\nQ2,yes\n", "",
                                         "line 3: 2 cells, the header has 3: column 'incorrect' is missing"),
    "csv row with an empty answer": ("q.csv", CSV_HEAD + "Q1,yes,no\nQ2, ,no\n", "",
                                     "line 3: column 'correct': holds no answer"),
    "csv header missing a column": ("q.csv", "question,correct,incorect\nQ1,yes,no\n", "",
                                    "line 1 (header): no column 'incorrect'; did you mean 'incorect'?"),
    "csv not utf-8": ("q.csv", CSV_HEAD.encode() + b"Q1,yes,no\nQ\xe92,yes,no\n", "",
                      "line 3: not UTF-8 text (byte 0xe9 at offset 38); save the file as UTF-8"),
    "duplicate questions": ("q.csv", CSV_HEAD + "Q1,yes,no\nQ2,yes,no\nQ1,no,yes\n", "",
                            "line 4: column 'question': duplicate of line 2 ('Q1'); set allow_duplicates = true"),
    "json row with an empty answer": ("q.json", json.dumps([{"question": "Q1", "correct": "yes", "incorrect": "no"},
                                                            {"question": "Q2", "correct": "", "incorrect": "no"}]),
                                      "", "row 2: key 'correct': holds no answer"),
    "json row without a key": ("q.json", json.dumps([{"question": "Q1", "correct": "yes", "incorrect": "no"},
                                                     {"question": "Q2", "corect": "yes", "incorrect": "no"}]),
                               "", "row 2: no key 'correct'; did you mean 'corect'?"),
    "json not a list": ("q.json", '{"question": "Q1"}', "", "expected a JSON list of objects, got dict"),
    "json syntax": ("q.json", '[{"question": "Q1",\n', "", "line 2: not valid JSON (Expecting property name"),
    "jsonl broken line": ("q.jsonl", '{"question": "Q1", "correct": "y", "incorrect": "n"}\n{"question": "Q2", \n',
                          "", "line 2: not valid JSON (Expecting property name enclosed in double quotes, column 20)"),
    "jsonl line not an object": ("q.jsonl", '{"question": "Q1", "correct": "y", "incorrect": "n"}\n\n[1, 2]\n', "",
                                 "line 3: expected a JSON object, got list '[1, 2]'"),
    "no examples after the split": ("q.csv", CSV_HEAD + "Q1,yes,no\n", 'split = "train"',
                                    "no examples selected: 1 before the selection, 0 after split = 'train' "
                                    "(split_fraction = 0.5, split_seed = 0)"),
}


def snapshot(root) -> dict:
    """Every file under ``root`` with its content."""
    return {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """``tmp_path`` as the working directory, holding an earlier run that must stay untouched."""
    monkeypatch.chdir(tmp_path)
    earlier = tmp_path / "runs" / "earlier-20200101-000000"
    earlier.mkdir(parents=True)
    (earlier / "results.json").write_text('{"ok": true}')
    return tmp_path


@pytest.fixture
def no_model(monkeypatch):
    """Bad input is found before any weights load."""
    def refuse(*_):
        raise AssertionError("the model was loaded")
    monkeypatch.setattr(loctest.runner, "load_model", refuse)


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and "internal error" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    return lines[0]


def check_rejected(capsys, folder, argv: list[str]) -> str:
    """Run the CLI, expect exit 2 with one line and no file under ``folder`` changed or written; return the line."""
    before = snapshot(folder)
    assert main(argv) == 2
    line = error_line(capsys)
    assert snapshot(folder) == before
    return line


def data_recipe(folder, name: str, content, extra: str = ""):
    """A recipe scoring dataset ``mine``: a table read from ``folder/data/name``, which holds ``content``."""
    data = folder / "data" / name
    data.parent.mkdir(exist_ok=True)
    data.write_bytes(content if isinstance(content, bytes) else content.encode())
    body = f'[datasets.mine]\nplugin = "table"\npath = "{data}"\n{extra}\n' + SCORED.replace("DATASET", "mine")
    return tiny_recipe(folder, body), data


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize("case", list(DATA))
def test_bad_data_file(sandbox, capsys, no_model, case, command):
    name, content, extra, expected = DATA[case]
    recipe, data = data_recipe(sandbox, name, content, extra)
    line = check_rejected(capsys, sandbox, [command, str(recipe)])
    where = f"{data}: " if case != "no examples after the split" else ""
    assert line.startswith(f"error: {recipe}: datasets.mine: {where}{expected}")


def test_allow_duplicates_keeps_repeated_questions(sandbox, capsys):
    recipe, _ = data_recipe(sandbox, "q.csv", CSV_HEAD + "Q1,yes,no\nQ1,no,yes\n", "allow_duplicates = true")
    assert main(["validate", str(recipe)]) == 0
    assert capsys.readouterr().err == ""


def test_every_data_problem_is_listed(sandbox, capsys):
    recipe, data = data_recipe(sandbox, "q.csv", "")
    recipe.write_text(recipe.read_text() + f'[datasets.other]\nplugin = "table"\npath = "{data.with_name("o.jsonl")}"\n')
    data.with_name("o.jsonl").write_text("[]\n")
    assert main(["validate", str(recipe)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: {recipe}: datasets.mine: {data}: empty file: expected a header line and rows",
        f"error: {recipe}: datasets.other: {data.with_name('o.jsonl')}: line 1: expected a JSON object, got list '[]'"]


UNSAFE = {  # recipe lines, CLI flags, expected key and name, expected hint
    "run name": ("", ["--set", 'run.name="../../x"'], "run.name: unsafe name '../../x'", "; did you mean 'x'?"),
    "arm name": ('[arms."../../../x"]\n', [], "arms.../../../x: unsafe name '../../../x'", "; did you mean 'x'?"),
    "scorer name": ('[scorers."a/b"]\nplugin = "binary-choice"\ndataset = "tqa"\n', [],
                    "scorers.a/b: unsafe name 'a/b'", "; did you mean 'a-b'?"),
    "dataset name": ('[datasets.".hidden"]\nplugin = "truthfulqa-binary"\n', [],
                     "datasets..hidden: unsafe name '.hidden'", "; did you mean 'hidden'?"),
}


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize("case", list(UNSAFE))
def test_unsafe_names(sandbox, capsys, no_model, case, command):
    extra, flags, expected, hint = UNSAFE[case]
    recipe = tiny_recipe(sandbox, TQA + extra)
    line = check_rejected(capsys, sandbox, [command, str(recipe), *flags])
    assert line.startswith(f"error: {recipe}: {expected}: use letters, digits, '.', '_' and '-'")
    assert line.endswith(hint)
    assert not list(sandbox.parent.glob("x-*")) and not list(sandbox.parent.parent.glob("x-*"))


BAD_DEFAULT = '''
from pydantic import Field

from loctest import Locator, PluginConfig, hookimpl


class Bad(Locator):
    name = "bad"
    description = "Declares a default that fails its own type."

    class Config(PluginConfig):
        x: int = Field("abc", description="A number.")


@hookimpl
def register_locators(register):
    register(Bad)
'''


@pytest.mark.parametrize("command", ["validate", "run", "plugins"])
def test_plugin_default_that_fails_its_own_type(sandbox, capsys, no_model, command):
    write_plugin(sandbox / "plugins", "bad_default", BAD_DEFAULT)
    recipe = tiny_recipe(sandbox, TQA)
    argv = [command] + ([str(recipe)] if command != "plugins" else []) + ["--plugins-dir", str(sandbox / "plugins")]
    line = check_rejected(capsys, sandbox, argv)
    assert line == ("error: plugin 'bad_default': locator 'bad': config field 'x': the default 'abc' fails its own "
                    "type: Input should be a valid integer, unable to parse string as an integer")


def folder_cases(folder):
    file = folder / "taken.txt"
    file.write_text("not a folder")
    return {"out is a file": (["--out", str(file)], f"run.out: {file} is a file, not a folder"),
            "out inside a file": (["--out", str(file / "sub")], f"run.out: {file} is a file, not a folder (in the path "
                                                                 f"{file / 'sub'})"),
            "cache is a file": (["--set", f'run.cache="{file}"'], f"run.cache: {file} is a file, not a folder")}


@pytest.mark.parametrize("case", ["out is a file", "out inside a file", "cache is a file"])
def test_unusable_output_folders(sandbox, capsys, no_model, case):
    args, expected = folder_cases(sandbox)[case]
    recipe = tiny_recipe(sandbox, TQA)
    line = check_rejected(capsys, sandbox, ["run", str(recipe), *args])
    assert line == f"error: {recipe}: {expected}"


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_unwritable_out_folder(sandbox, capsys, no_model):
    locked = sandbox / "locked"
    locked.mkdir(mode=0o500)
    recipe = tiny_recipe(sandbox, TQA)
    line = check_rejected(capsys, sandbox, ["run", str(recipe), "--out", str(locked / "runs")])
    assert line == f"error: {recipe}: run.out: cannot write to {locked} (to create {locked / 'runs'})"


def test_corrupt_json_cache_file_is_dropped_with_a_warning(tmp_path):
    cache = JsonCache(tmp_path)
    cache.put("scores", "k", {"values": {"accuracy": [0.5]}})
    path = cache.path("scores", "k")
    path.write_text(path.read_text()[:10])
    with pytest.warns(LoctestWarning, match=f"corrupt cache file {path} .*JSONDecodeError.*removed, recomputing"):
        assert cache.get("scores", "k") is None
    assert not path.exists() and cache.get("scores", "k") is None
    cache.put("scores", "k", [1])
    assert cache.get("scores", "k") == [1]


def test_corrupt_attribution_cache_file_is_dropped_with_a_warning(tmp_path):
    from loctest_plugins.truth_neurons.cache import AttributionCache

    cache = AttributionCache(tmp_path)
    cache.path("k").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{\"a\"")
    with pytest.warns(LoctestWarning, match=f"corrupt cache file {cache.path('k')} .*SafetensorError"):
        assert cache.get("k") is None
    assert not cache.path("k").exists()


def test_corrupt_cache_file_in_a_run_is_recomputed(sandbox, capsys):
    recipe = tiny_recipe(sandbox, TQA)
    assert main(["run", str(recipe), "--no-progress"]) == 0
    [scores] = (sandbox / "cache" / "scores").iterdir()
    scores.write_text(scores.read_text()[:20])
    capsys.readouterr()
    assert main(["run", str(recipe), "--no-progress"]) == 0
    warning = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and warning[0].startswith(f"warning: corrupt cache file {scores} (JSONDecodeError: ")
    assert warning[0].endswith("): removed, recomputing")
    assert json.loads(scores.read_text())["values"]


def test_failed_run_is_marked_and_earlier_runs_are_untouched(sandbox):
    earlier = snapshot(sandbox / "runs")

    @marks_failed_runs
    def failing():
        new_run_dir(sandbox / "runs", "late")
        raise UserError("bad components")

    with pytest.raises(UserError):
        failing()
    failed = [p for p in (sandbox / "runs").iterdir() if p.name.startswith("late-")]
    assert len(failed) == 1 and failed[0].name.endswith("-failed")
    assert (failed[0] / "FAILED.txt").read_text().startswith("UserError: bad components\n\nTraceback")
    assert {p: b for p, b in snapshot(sandbox / "runs").items() if failed[0] not in p.parents} == earlier


def test_failed_cli_run_leaves_a_marked_run_directory(sandbox, capsys):
    recipe = tiny_recipe(sandbox, TQA + '[arms.rand]\nlocator = { plugin = "random", kind = "mlp", count = 100000 }\n')
    earlier = snapshot(sandbox / "runs")
    assert main(["run", str(recipe), "--no-progress"]) == 2
    assert error_line(capsys) == (f"error: {recipe}: arms.rand.locator: random locator: count 100000 exceeds the "
                                  "256 components available")
    runs = sorted(p.name for p in (sandbox / "runs").iterdir())
    assert len(runs) == 2 and runs[1].startswith("recipe-") and runs[1].endswith("-failed")
    assert (sandbox / "runs" / runs[1] / "FAILED.txt").read_text().startswith(
        f"RecipeError: {recipe}: arms.rand.locator: random locator: count 100000 exceeds")
    assert {p: b for p, b in snapshot(sandbox / "runs").items() if runs[1] not in str(p)} == earlier
