"""End-to-end runs on tiny-llama: the run directory, the Python API, caching and resume, the random control,
CLI flags, lifecycle hooks and backend parity."""
from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest

import loctest
from loctest import ComponentSet, ModelShape, RunContext, RunResults
from loctest.cli import main
from loctest.progress import Progress
from loctest.runner import new_run_dir
from loctest.stats import summary
from loctest_plugins.locators.random import RandomLocator
from conftest import logging_scorer, tiny_recipe, write_plugin

PARITY_ATOL = 1e-5  # probabilities, float32 on CPU; accuracies must be identical

RECIPE = """
[run]
seed = 0
backend = "nnsight"
out = "OUT/runs"
cache = "OUT/cache"

[model]
name = "tiny-llama"

[datasets.tqa]
plugin = "truthfulqa-binary"
limit = 8

[scorers.tqa]
plugin = "binary-choice"
dataset = "tqa"
repetitions = 3

[arms.baseline]

[arms.matched]
locator = { plugin = "random", match = "rand" }
editor = "zero-ablation"

[arms.rand]
locator = { plugin = "random", kind = "mlp", count = 20 }
editor = "zero-ablation"

[[comparisons]]
baseline = "baseline"
treatment = "rand"
metric = "tqa.accuracy"
"""

OBSERVER = '''
from loctest import hookimpl

STAGES = []


@hookimpl
def loctest_before_stage(stage, context):
    STAGES.append(("before", stage))


@hookimpl
def loctest_after_stage(stage, context, result):
    STAGES.append(("after", stage, type(result).__name__))


@hookimpl
def loctest_report_sections(results):
    return "## Observer\\n\\nSaw arms " + ", ".join(results.data["arms"])
'''

COUNTING = logging_scorer("loctest_plugins.scorers.binary_choice", "BinaryChoice", "BinaryChoiceConfig")


def write_recipe(folder: Path, text: str = RECIPE) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "recipe.toml"
    path.write_text(text.replace("OUT", str(folder)))
    return path


def all_values(results: RunResults) -> dict:
    return {arm: {s: r.values for s, r in by_scorer.items()} for arm, by_scorer in results.scores.items()}


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    """One run of the recipe (on nnsight, the faster backend on CPU), with a plugin that watches the stages."""
    folder = tmp_path_factory.mktemp("first")
    write_plugin(folder / "plugins", "observer", OBSERVER)
    results = loctest.run(write_recipe(folder), plugins_dirs=[folder / "plugins"], progress=False)
    stages = sys.modules.pop("loctest_dropin_observer").STAGES
    return results, stages


def test_run_directory(first):
    results, _ = first
    run_dir = results.run_dir
    names = {p.relative_to(run_dir).as_posix() for p in run_dir.rglob("*") if p.is_file()}
    assert {"results.json", "report.md", "components/baseline.json", "components/rand.json", "components/matched.json",
            "details/baseline.tqa.json", "details/rand.tqa.json", "details/matched.tqa.json",
            "figures/tqa.accuracy.png", "figures/tqa.correct_prob.png"} <= names
    for figure in run_dir.glob("figures/*.png"):
        assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    data = json.loads((run_dir / "results.json").read_text())
    assert data == json.loads(json.dumps(results.data, default=str))
    assert data["recipe"]["datasets"]["tqa"]["limit"] == 8 and data["recipe"]["arms"]["rand"]["locator"]["count"] == 20
    assert data["resolved"]["run"]["seed"] == data["seed"] == 0
    assert data["resolved"]["backend"]["plugin"] == "nnsight"
    assert data["resolved"]["datasets"]["tqa"]["split_seed"] == 0
    assert all(data["versions"][p] for p in ("python", "loctest", "torch", "transformers", "transformer-lens", "nnsight"))
    assert data["model"] | {"name": "tiny-llama", "n_layers": 2, "n_heads": 4, "d_head": 16, "d_mlp": 128,
                            "device": "cpu", "caveat": None} == data["model"]
    assert data["datasets"]["tqa"]["n"] == 8 and len(set(data["datasets"]["tqa"]["ids"])) == 8
    assert {arm: a["n_components"] for arm, a in data["arms"].items()} == {"baseline": 0, "rand": 20, "matched": 20}
    for arm in data["arms"].values():
        for metric, s in arm["scores"]["tqa"].items():
            if metric != "note":
                assert len(s["values"]) == 3
                assert {k: s[k] for k in ("mean", "std", "n")} == summary(s["values"])
    (comparison,) = data["comparisons"]
    assert comparison["baseline"] == "baseline" and comparison["treatment"] == "rand"
    assert comparison["baseline_mean"] == pytest.approx(np.mean(results.values("baseline", "tqa.accuracy")))
    assert comparison["p"] is not None and 0 <= comparison["p"] <= 1
    assert {"load", "score:rand:tqa", "locate:rand", "edit:rand", "total"} <= set(data["timings_s"])

    saved = json.loads((run_dir / "components" / "rand.json").read_text())
    assert ComponentSet.from_json(saved) == results.components["rand"]
    assert saved[0]["nnsight"].startswith("model.layers[") and saved[0]["nnsight"].endswith(".input")
    details = json.loads((run_dir / "details" / "rand.tqa.json").read_text())
    assert details["id"] == data["datasets"]["tqa"]["ids"] and np.shape(details["p_correct"]) == (8, 2)

    report = (run_dir / "report.md").read_text()
    assert all(arm in report for arm in data["arms"]) and "tqa" in report and "![" in report
    assert "## Observer\n\nSaw arms baseline, rand, matched" in report


def test_python_api_values(first):
    results, _ = first
    for arm in ("baseline", "rand", "matched"):
        for metric in ("accuracy", "correct_prob"):
            values = results.values(arm, f"tqa.{metric}")
            assert values == results.data["arms"][arm]["scores"]["tqa"][metric]["values"]
            assert len(values) == 3 and all(0 <= v <= 1 for v in values)
    assert results.comparisons == results.data["comparisons"]


def test_lifecycle_hooks_see_every_stage_in_order(first):
    _, stages = first
    assert stages[:2] == [("before", "load"), ("after", "load", "NoneType")]
    assert stages[-2:] == [("before", "report"), ("after", "report", "RunResults")]
    names = [s[1] for s in stages if s[0] == "before"]
    assert names == ["load", "score:baseline:tqa", "locate:rand", "edit:rand", "score:rand:tqa",
                     "locate:matched", "edit:matched", "score:matched:tqa", "report"]
    assert ("after", "locate:rand", "ComponentSet") in stages and ("after", "edit:rand", "list") in stages
    assert ("after", "score:rand:tqa", "Scores") in stages


def test_random_control_matches_another_arms_layers(first):
    results, _ = first
    rand, matched = results.components["rand"], results.components["matched"]
    assert matched.counts_by_layer() == rand.counts_by_layer()
    assert set(matched.names()) != set(rand.names())


def random_context(seed: int = 0, arm: str = "arm") -> RunContext:
    """A RunContext whose model only has a shape: enough for the random locator."""
    model = types.SimpleNamespace(shape=ModelShape(n_layers=4, n_heads=4, d_head=16, d_mlp=128, d_model=64))
    return RunContext(model=model, seed=seed, run_dir=Path("."), cache_dir=Path("."),
                      progress=Progress(enabled=False), arm=arm)


def test_random_locator_is_seeded_and_draws_differ():
    def draw(seed=0, arm="arm", **config):
        return RandomLocator(RandomLocator.Config(**config)).locate(random_context(seed, arm))

    same = draw(kind="mlp", count=30)
    assert len(same) == 30 and same.names() == draw(kind="mlp", count=30).names()
    assert set(draw(kind="mlp", count=30, draw=1).names()) != set(same.names())
    assert set(draw(seed=1, kind="mlp", count=30).names()) != set(same.names())
    assert {c.layer for c in draw(kind="mlp", count=30, layers=[1, 3])} == {1, 3}
    heads = draw(kind="head", count=5)
    assert len(heads) == 5 and {c.kind for c in heads} == {"head"}
    attn = draw(kind="attn", count=40, layers=[2])
    assert len(attn) == 40 and all(c.kind == "attn" and c.layer == 2 and c.dim < 16 for c in attn)

    context = random_context(arm="control")
    context.components["located"] = ComponentSet(["mlp:0:1", "mlp:0:2", "mlp:3:5", "head:1:0", "attn:2:1:3"])
    matched = RandomLocator(RandomLocator.Config(match="located")).locate(context)
    assert matched.counts_by_layer() == context.components["located"].counts_by_layer()


ZERO_ARM = '''
from pydantic import Field

from loctest import ArmRef, Editor, PluginConfig, hookimpl, interventions


class ZeroArm(Editor):
    name = "zero-arm"
    description = "Zeroes the components of another arm."

    class Config(PluginConfig):
        arm: ArmRef = Field(..., description="Arm whose components to zero.")

    def interventions(self, context, components):
        return interventions.zero(context.components[self.config.arm], context.shape)


@hookimpl
def register_editors(register):
    register(ZeroArm)
'''


def test_each_plugin_is_built_once_and_named_arms_run_first(tmp_path, monkeypatch):
    write_plugin(tmp_path / "plugins", "zero_arm", ZERO_ARM)
    built = []
    real_init = loctest.base.Plugin.__init__
    monkeypatch.setattr(loctest.base.Plugin, "__init__",
                        lambda self, config=None: built.append(self.name) or real_init(self, config))
    recipe = tiny_recipe(tmp_path, f"""[plugins]\npaths = ["{tmp_path / 'plugins'}"]
[datasets.tqa]\nplugin = "truthfulqa-binary"\nlimit = 2
[scorers.tqa]\nplugin = "binary-choice"\ndataset = "tqa"\nrepetitions = 1
[arms.zeroed]\ncomponents = ["mlp:0:1"]\neditor = {{ plugin = "zero-arm", arm = "rand" }}
[arms.rand]\nlocator = {{ plugin = "random", count = 3 }}
""")
    results = loctest.run(recipe, progress=False)
    assert list(results.data["arms"]) == ["rand", "zeroed"]  # the editor names 'rand': it runs first
    zeroed = results.data["arms"]["zeroed"]["interventions"]  # 'zero N columns of SITE', for rand's 3 neurons
    assert sum(int(description.split()[1]) for description in zeroed) == 3
    assert sorted(built) == ["binary-choice", "random", "transformer-lens", "truthfulqa-binary", "zero-arm"]


def test_run_directories_are_never_shared(tmp_path):
    first, second = new_run_dir(tmp_path, "x"), new_run_dir(tmp_path, "x")
    assert first != second and first.is_dir() and second.is_dir()


@pytest.fixture
def counting_recipe(tmp_path):
    """The recipe with a scorer that logs each call to ``log`` (and can be interrupted once)."""
    def make(folder: str, interrupt_arm: str = "") -> tuple[Path, Path]:
        root = tmp_path / folder
        write_plugin(root / "plugins", "counting", COUNTING, name="counting-choice")
        log = root / "calls.log"
        text = RECIPE.replace('plugin = "binary-choice"', f'plugin = "counting-choice"\nlog = "{log}"\n'
                                                            f'interrupt_arm = "{interrupt_arm}"')
        return write_recipe(root, '[plugins]\npaths = ["plugins"]\n' + text), log
    return make


def calls(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


def test_resume_after_an_interrupted_run_then_rerun_from_the_cache(first, counting_recipe, capsys, monkeypatch):
    path, log = counting_recipe("resumed", interrupt_arm="rand")
    assert main(["run", str(path), "--no-progress"]) == 130
    assert "interrupted: finished work is kept in the cache" in capsys.readouterr().err
    assert calls(log) == ["baseline"]
    resumed = loctest.run(path, progress=False)
    assert calls(log) == ["baseline", "rand", "matched"]  # the finished arm came from the cache
    assert len(list((path.parent / "runs").glob("*/results.json"))) == 1  # the interrupted run wrote no results
    # counting-choice is binary-choice plus a log: the resumed run equals the uninterrupted first run
    assert all_values(resumed) == all_values(first[0])
    assert resumed.comparisons[0]["p"] == first[0].comparisons[0]["p"]

    def no_locating(*args):
        raise AssertionError("located again instead of reading the cache")

    monkeypatch.setattr(RandomLocator, "locate", no_locating)
    again = loctest.run(path, progress=False)
    assert calls(log) == ["baseline", "rand", "matched"]  # no scorer call the second time
    assert all_values(again) == all_values(resumed)
    assert {a: c.names() for a, c in again.components.items()} == {a: c.names() for a, c in resumed.components.items()}
    assert again.run_dir != resumed.run_dir and (resumed.run_dir / "results.json").exists()


def test_cli_flags_limit_device_backend_out(tmp_path, capsys):
    path = write_recipe(tmp_path / "flags")
    out = tmp_path / "elsewhere"
    argv = ["run", str(path), "--limit", "4", "--device", "cpu", "--backend", "transformer-lens", "--out", str(out),
            "--no-progress", "--set", "scorers.tqa.repetitions=2"]
    assert main(argv) == 0
    (results_file,) = out.glob("*/results.json")
    assert f"Report: {results_file.parent / 'report.md'}" in capsys.readouterr().out
    data = json.loads(results_file.read_text())
    assert data["resolved"]["backend"]["plugin"] == "transformer-lens"
    assert data["resolved"]["model"]["device"] == "cpu" and data["model"]["device"] == "cpu"
    assert data["recipe"]["datasets"]["tqa"]["limit"] == 4 and data["datasets"]["tqa"]["n"] == 4
    assert len(data["arms"]["rand"]["scores"]["tqa"]["accuracy"]["values"]) == 2
    assert not (tmp_path / "flags" / "runs").exists()


def test_python_api_overrides(tmp_path, first):
    results = loctest.run(write_recipe(tmp_path), overrides={"run.seed": 1, "datasets.tqa.limit": "2"}, progress=False)
    assert results.data["seed"] == 1 and results.data["datasets"]["tqa"]["n"] == 2
    assert results.components["rand"] != first[0].components["rand"]


def test_backends_agree_on_a_recipe(first):
    """Parity: the same recipe on TransformerLens gives nnsight's accuracies exactly, probabilities within PARITY_ATOL."""
    ns = first[0]
    tl = loctest.run(ns.data["recipe_file"], backend="transformer-lens", progress=False)
    assert tl.data["resolved"]["backend"]["plugin"] == "transformer-lens"
    assert {a: c.names() for a, c in ns.components.items()} == {a: c.names() for a, c in tl.components.items()}
    for arm in tl.scores:
        assert ns.values(arm, "tqa.accuracy") == tl.values(arm, "tqa.accuracy")
        np.testing.assert_allclose(ns.values(arm, "tqa.correct_prob"), tl.values(arm, "tqa.correct_prob"), rtol=0, atol=PARITY_ATOL)
        np.testing.assert_allclose(ns.scores[arm]["tqa"].details["p_correct"], tl.scores[arm]["tqa"].details["p_correct"],
                                   rtol=0, atol=PARITY_ATOL)
    assert tl.values("rand", "tqa.correct_prob") != tl.values("baseline", "tqa.correct_prob")  # the edit does something


WRITING_LOCATOR = '''
from loctest import ComponentSet, Locator, hookimpl


class WritingLocator(Locator):
    name = "writing"
    description = "Two fixed heads; writes a table of them into the run directory."

    def locate(self, context):
        with (context.cache_dir.parent / "calls.log").open("a") as log:
            log.write(context.arm + "\\n")
        context.write_output(f"writing/{context.arm}/table.json", {"heads": [0, 1]})
        return ComponentSet(["head:0:0", "head:0:1"])


@hookimpl
def register_locators(register):
    register(WritingLocator)
'''


def test_a_cached_locator_brings_back_the_files_it_wrote(tmp_path, clean_dropins):
    write_plugin(tmp_path / "plugins", "writing", WRITING_LOCATOR)
    recipe = RECIPE.split("[arms.baseline]")[0] + '[arms.found]\nlocator = "writing"\neditor = "zero-ablation"\n'
    path = write_recipe(tmp_path, recipe)
    first = loctest.run(path, plugins_dirs=[tmp_path / "plugins"], progress=False)
    again = loctest.run(path, plugins_dirs=[tmp_path / "plugins"], progress=False)
    assert (tmp_path / "calls.log").read_text().split() == ["found"]  # the second run read the cache
    written = [run.run_dir / "writing" / "found" / "table.json" for run in (first, again)]
    assert json.loads(written[1].read_text()) == json.loads(written[0].read_text()) == {"heads": [0, 1]}


def test_a_plugin_writes_files_inside_the_run_directory_only(tmp_path):
    context = RunContext(None, 0, tmp_path / "run", tmp_path / "cache", Progress(enabled=False))
    assert context.write_output("edits/arm.json", {"a": [1]}) == tmp_path / "run" / "edits" / "arm.json"
    assert json.loads((tmp_path / "run" / "edits" / "arm.json").read_text()) == {"a": [1]}
    assert context.write_output("notes.txt", "text").read_text() == "text"
    assert context.write_output("raw.bin", b"\x00\x01").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in (tmp_path / "run").rglob("*")) == ["arm.json", "edits", "notes.txt", "raw.bin"]
    for outside in ("../escaped.json", str(tmp_path / "absolute.json"), "edits/../../escaped.json", "."):
        with pytest.raises(ValueError, match="not a file name inside the run directory"):
            context.write_output(outside, {})
    assert not (tmp_path / "escaped.json").exists() and not (tmp_path / "absolute.json").exists()


NOTHING_LOCATOR = '''
from loctest import ComponentSet, Locator, hookimpl


class NothingLocator(Locator):
    name = "nothing"
    description = "Finds no components (like a locator whose statistics reject every candidate)."

    def locate(self, context):
        return ComponentSet()


@hookimpl
def register_locators(register):
    register(NothingLocator)
'''


def test_an_arm_whose_locator_finds_nothing_is_flagged(tmp_path, capsys, clean_dropins):
    write_plugin(tmp_path / "plugins", "nothing", NOTHING_LOCATOR)
    recipe = RECIPE.split("[arms.baseline]")[0] + '[arms.none]\nlocator = "nothing"\neditor = "zero-ablation"\n'
    path = write_recipe(tmp_path, recipe)
    assert main(["run", str(path), "--no-progress", "--limit", "2", "--plugins-dir", str(tmp_path / "plugins")]) == 0
    assert "arm 'none' found no components: the arm was scored unedited" in capsys.readouterr().out
    (report,) = (tmp_path / "runs").glob("*/report.md")
    assert "- none / locator: found no components" in report.read_text()
