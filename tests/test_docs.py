"""The docs stay true: every hookspec is documented, the example plugin runs, the README's quick start and
recipe list match the repository, and docs/recipes.md covers every recipe key."""
from __future__ import annotations

import re

import pytest
import torch

import loctest
from loctest import hookspecs
from loctest.models import ModelConfig
from loctest.plugin_manager import create_host
from loctest.recipe import SECTIONS, Comparison, DatasetSelection, PluginsSection, RunSection, Sweep

from conftest import ROOT, make_model

DOCS = ROOT / "docs"
EXAMPLE = DOCS / "examples" / "example_plugin.py"
README = ROOT / "README.md"
HOOKSPECS = sorted(name for name in dir(hookspecs) if hasattr(getattr(hookspecs, name), "loctest_spec"))


def test_hookspecs_have_docstrings_and_are_documented():
    assert "register_locators" in HOOKSPECS and "loctest_report_sections" in HOOKSPECS
    guide = (DOCS / "writing-plugins.md").read_text(encoding="utf-8")
    for name in HOOKSPECS:
        assert (getattr(hookspecs, name).__doc__ or "").strip(), f"hookspec {name} has no docstring"
        assert f"`{name}" in guide, f"hookspec {name} is not explained in docs/writing-plugins.md"


def test_writing_plugins_includes_the_example_file():
    guide = (DOCS / "writing-plugins.md").read_text(encoding="utf-8")
    assert "docs/examples/example_plugin.py" in guide
    for name in ("top-activation", "scale-activations", "answer-margin"):
        assert name in guide


def test_example_plugin_registers_its_three_plugins():
    host = create_host(extra_paths=[EXAMPLE], autoload=False)
    assert not host.failures
    for kind, name in (("locator", "top-activation"), ("editor", "scale-activations"), ("scorer", "answer-margin")):
        assert host.registry(kind).owner(name) == "example_plugin"


def _recipe(tmp_path, arms: str) -> str:
    path = tmp_path / "example.toml"
    path.write_text(f"""
[run]
seed = 3
out = "{tmp_path / 'runs'}"
cache = "{tmp_path / 'cache'}"

[model]
name = "tiny-llama"
device = "cpu"

[datasets.tqa]
plugin = "truthfulqa-binary"
limit = 4

[scorers.margin]
plugin = "answer-margin"
dataset = "tqa"
repetitions = 3

[arms.baseline]
{arms}
""")
    return str(path)


def test_example_plugin_runs_in_a_recipe(tmp_path):
    located = 'locator = { plugin = "top-activation", dataset = "tqa", count = 12 }'
    recipe = _recipe(tmp_path, f"""
[arms.scaled]
{located}
editor = {{ plugin = "scale-activations", factor = 0.0, positions = "all" }}

[arms.zeroed]
{located}
editor = {{ plugin = "zero-ablation", positions = "all" }}

[[comparisons]]
baseline = "baseline"
treatment = "scaled"
metric = "margin.margin"
alternative = "two-sided"
""")
    results = loctest.run(recipe, plugins_dirs=[EXAMPLE], progress=False)

    # the locator's choice is the top 12 of mean |activation| at the last prompt token, found independently here
    backend = make_model("transformer-lens", "tiny-llama")
    from loctest_plugins.datasets.truthfulqa import TruthfulQABinary

    by_id = {e.id: e for e in TruthfulQABinary().load()}
    questions = [by_id[i].question for i in results.data["datasets"]["tqa"]["ids"]]
    assert len(questions) == 4
    sites = [("mlp", layer) for layer in range(backend.shape.n_layers)]
    acts = backend.capture_last([backend.chat_prompt(q) for q in questions], sites)
    strength = torch.cat([acts[s].abs().mean(0) for s in sites])
    expected = {f"mlp:{i // backend.shape.d_mlp}:{i % backend.shape.d_mlp}" for i in torch.topk(strength, 12).indices.tolist()}
    assert set(results.components["scaled"].names()) == expected

    # scaling by 0 is zero-ablation: identical scores; and the edit moves the margin away from the baseline
    assert results.values("scaled", "margin.margin") == pytest.approx(results.values("zeroed", "margin.margin"), abs=1e-5)
    base, scaled = results.values("baseline", "margin.margin"), results.values("scaled", "margin.margin")
    assert len(base) == 3 and all(abs(b - s) > 1e-4 for b, s in zip(base, scaled))
    assert results.comparisons[0]["p"] is not None

    # the scorer's numbers follow from its per-answer details
    details = results.scores["baseline"]["margin"].details
    assert details["id"] == results.data["datasets"]["tqa"]["ids"]
    bounds = [(max(g) - min(b), min(g) - max(b)) for g, b in zip(details["correct_logprobs"], details["incorrect_logprobs"])]
    for value in base:
        assert sum(lo for _, lo in bounds) / 4 - 1e-6 <= value <= sum(hi for hi, _ in bounds) / 4 + 1e-6
    assert all(0 <= v <= 1 for v in results.values("baseline", "margin.prefers_correct"))
    assert (results.run_dir / "components" / "scaled.json").exists()
    shift = f"| margin.margin | baseline | scaled | {results.comparisons[0]['treatment_mean'] - results.comparisons[0]['baseline_mean']:+.3f} |"
    report = (results.run_dir / "report.md").read_text()
    assert "## Answer margin: shift of each treatment" in report and shift in report  # the scorer's own section
    assert (results.run_dir / "figures" / "answer_margin_shifts.png").exists()


def test_readme_quick_start_is_two_commands_and_ci_runs_the_second():
    match = re.search(r"^#+ [^\n]*Quick start[^\n]*\n+```[a-z]*\n(.*?)```", README.read_text(encoding="utf-8"), re.S | re.M)
    assert match, "README needs a 'Quick start' heading followed by a fenced code block"
    commands = match.group(1).strip().splitlines()
    assert commands == ["make demo", "make test"]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert [line for line in ci.splitlines() if line.startswith("make ")] == [commands[1]]


def test_readme_lists_every_recipe():
    section = README.read_text(encoding="utf-8").split("## Recipes", 1)[1].split("\n## ", 1)[0]
    for recipe in sorted((ROOT / "recipes").glob("*.toml")):
        assert f"recipes/{recipe.name}" in section, f"README's Recipes section does not list recipes/{recipe.name}"


def test_recipe_reference_covers_every_key():
    reference = (DOCS / "recipes.md").read_text(encoding="utf-8")
    for section in SECTIONS:
        assert f"[{section}" in reference or f"[[{section}" in reference, f"docs/recipes.md misses section {section}"
    for model in (RunSection, ModelConfig, PluginsSection, DatasetSelection, Comparison, Sweep):
        for field in model.model_fields:
            assert f"`{field}`" in reference, f"docs/recipes.md misses key {field!r} of {model.__name__}"


def test_readme_lists_every_builtin_plugin():
    section = README.read_text(encoding="utf-8").split("## Built-in plugins", 1)[1].split("\n## ", 1)[0]
    host = create_host(autoload=False)
    for kind, registry in host.registries.items():
        for name in registry.names():
            if registry.owner(name) == "builtins":
                assert f"| {kind} | `{name}` |" in section, f"README's Built-in plugins table does not list {kind} {name!r}"
