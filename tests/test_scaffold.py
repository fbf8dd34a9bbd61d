"""``loctest new KIND NAME``: each skeleton passes its own tests unchanged (pytest in a subprocess) and its recipe
runs; bad kinds, names and folders are one line and exit 2 with nothing written. ``loctest plugins NAME`` shows one
plugin's config, metrics and documentation; the plain listing shows metrics and config descriptions."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from loctest.cli import main

from conftest import ROOT

SKELETONS = {"locator": "spread-neurons", "editor": "scale-by", "scorer": "answer-gap"}


def error_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err.strip()


@pytest.fixture(scope="module")
def skeletons(tmp_path_factory):
    folder = tmp_path_factory.mktemp("skeletons")
    for kind, name in SKELETONS.items():
        assert main(["new", kind, name, "--dir", str(folder / "mine")]) == 0
    return folder / "mine"


def test_each_skeleton_passes_its_own_tests_unchanged(skeletons):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(skeletons),
                           str(skeletons)], cwd=skeletons, env=env, capture_output=True, text=True, timeout=900)
    summary = done.stdout.strip().splitlines()[-1]
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    # per kind: its job once per backend (two tests), and its recipe once
    assert re.fullmatch(r"15 passed.*", summary), summary
    assert sorted(p.name for p in skeletons.iterdir() if p.suffix in (".py", ".toml")) == [
        "answer_gap.py", "answer_gap.toml", "scale_by.py", "scale_by.toml", "spread_neurons.py", "spread_neurons.toml",
        "test_answer_gap.py", "test_scale_by.py", "test_spread_neurons.py"]


@pytest.mark.parametrize("kind", SKELETONS)
def test_each_skeleton_recipe_validates_and_runs(skeletons, kind, tmp_path, capsys):
    recipe = skeletons / f"{SKELETONS[kind].replace('-', '_')}.toml"
    assert main(["validate", str(recipe)]) == 0
    assert main(["run", str(recipe), "--out", str(tmp_path), "--set", f'run.cache="{tmp_path / "cache"}"',
                 "--limit", "4", "--no-progress"]) == 0
    (run_dir,) = tmp_path.glob(f"{recipe.stem}-*")
    results = json.loads((run_dir / "results.json").read_text())
    assert results["model"]["name"] == "tiny-llama" and results["comparisons"]
    used = {"locator": lambda arm: arm["locator"], "editor": lambda arm: arm["editor"]}.get(kind)
    plugins = ({(used(arm) or {}).get("plugin") for arm in results["arms"].values()} if used
               else {s["plugin"] for s in results["resolved"]["scorers"].values()})
    assert SKELETONS[kind] in plugins


def test_a_skeleton_is_listed_with_its_config_and_docs(skeletons, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")
    assert main(["plugins", "answer-gap", "--plugins-dir", str(skeletons / "answer_gap.py")]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"scorer answer-gap (from answer_gap, {skeletons / 'answer_gap.py'})")
    assert "metrics: margin (higher is better), prefers_correct (higher is better)" in out
    assert re.search(r"│ repetitions\s+│ int\s+│ 5\s+│ Repetitions: each draws", out)
    assert "(a paired design)" in out  # the class docstring


@pytest.mark.parametrize(("argv", "message"), [
    (["new", "locater", "x-y"], "error: unknown plugin kind 'locater' for 'loctest new'; did you mean 'locator'? valid: editor, locator, scorer"),
    (["new", "scorer", "My_Scorer"], "error: plugin name 'My_Scorer' must be lowercase letters and digits in dash-separated words"),
    (["new", "scorer", "two--dashes"], "error: plugin name 'two--dashes' must be lowercase"),
    (["new", "editor", "zero-ablation"], "error: an editor named 'zero-ablation' exists already (registered by 'builtins')"),
    (["new", "scorer", "json"], "error: plugin name 'json' would write json.py, which shadows the importable module 'json'"),
    (["new", "locator", "class"], "error: plugin name 'class' is a Python keyword"),
])
def test_bad_kind_or_name_is_one_line_and_writes_nothing(argv, message, tmp_path, capsys):
    assert main([*argv, "--dir", str(tmp_path / "out")]) == 2
    assert error_line(capsys).startswith(message)
    assert not (tmp_path / "out").exists()


def test_existing_files_are_never_overwritten(tmp_path, capsys):
    (tmp_path / "my_probe.toml").write_text("keep me")
    assert main(["new", "locator", "my-probe", "--dir", str(tmp_path)]) == 2
    assert error_line(capsys) == (f"error: {tmp_path / 'my_probe.toml'} already exists; nothing written "
                                  "(choose another name or --dir)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my_probe.toml"]
    assert (tmp_path / "my_probe.toml").read_text() == "keep me"
    (tmp_path / "file").write_text("")
    assert main(["new", "locator", "my-probe", "--dir", str(tmp_path / "file")]) == 2
    assert error_line(capsys) == f"error: --dir {str(tmp_path / 'file')!r} is a file, not a folder"


def test_plugins_name_shows_config_metrics_and_docs(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")
    assert main(["plugins", "random"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"locator random (from builtins, {ROOT / 'plugins/loctest_plugins/locators/random.py'})")
    assert re.search(r"│ match\s+│ ArmRef \| None\s+│ None\s+│ Arm whose components to match", out)
    assert "metrics" not in out and "scorers" not in out  # one plugin, not the listing
    assert main(["plugins", "binary-choice", "--json"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)["plugins"]["scorer"]
    assert entry["metrics"] == ["accuracy", "correct_prob"] and entry["higher_is_better"] == {"accuracy": True, "correct_prob": True}
    assert entry["doc"].startswith("``binary-choice``") and entry["source"].endswith("binary_choice.py")


def test_plugins_unknown_name_is_one_line_with_did_you_mean(capsys):
    assert main(["plugins", "zero-ablaton"]) == 2
    assert error_line(capsys).startswith("error: no plugin named 'zero-ablaton'; did you mean 'zero-ablation', ")


def test_plugins_listing_shows_metrics_and_config_descriptions(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"│ binary-choice .*│ accuracy \(higher is better\), correct_prob \(higher is better\)\s+│", out)
    assert re.search(r"│\s+Repetitions, each with a fresh random answer order\.\s+│", out)  # under repetitions: int = 10
    headers = {kind: next(line for line in out[re.search(rf"^{kind}s\s*$", out, re.M).start():].splitlines()
                          if "┃ name" in line) for kind in ("locator", "scorer")}
    assert "┃ metrics" in headers["scorer"] and "metrics" not in headers["locator"]  # only kinds with metrics
