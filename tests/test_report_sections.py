"""Plugins add report sections through one route, the ``loctest_report_sections`` hook: a drop-in scorer file adds
a section with a figure without touching the host; the host report stays generic and shows the model's caveat."""
from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import loctest
from loctest import models
from loctest.report import header_lines

from conftest import tiny_recipe

EDIT_COUNT = '''
from loctest import PluginConfig, Scorer, Scores, hookimpl


class EditCountConfig(PluginConfig):
    dataset: str = "tqa"


class EditCount(Scorer):
    name = "edit-count"
    description = "How many interventions an arm applies, once per question."
    Config = EditCountConfig
    metrics = ("edits",)
    higher_is_better = {"edits": False}

    def score(self, context, interventions):
        questions = context.dataset(self.config.dataset)
        return Scores(values={"edits": [float(len(interventions))] * len(questions)},
                      details={"id": [q.id for q in questions]})


@hookimpl
def register_scorers(register):
    register(EditCount)


@hookimpl
def loctest_report_sections(results):
    import matplotlib.pyplot as plt

    comparisons = results.comparisons_of(EditCount.name)
    if not comparisons:
        return None
    fig, ax = plt.subplots()
    ax.bar([c["treatment"] for c in comparisons], [c["treatment_mean"] - c["baseline_mean"] for c in comparisons])
    figure = results.save_figure(fig, "edit count.png")
    rows = "\\n".join(f"| {c['baseline']} | {c['treatment']} | {c['treatment_mean'] - c['baseline_mean']:+.0f} |"
                     for c in comparisons)
    return f"## Edits per arm\\n\\n| baseline | treatment | more edits |\\n|---|---|---|\\n{rows}\\n\\n![{figure}]({figure})"
'''

RECIPE = """
[datasets.tqa]
plugin = "truthfulqa-binary"
limit = 3

[scorers.edits]
plugin = "edit-count"

[arms.baseline]

[arms.zeroed]
components = ["mlp:0:1", "mlp:1:2"]
editor = "zero-ablation"

[[comparisons]]
baseline = "baseline"
treatment = "zeroed"
metric = "edits.edits"
"""


def test_a_drop_in_scorer_adds_its_own_section_and_figure(tmp_path, monkeypatch):
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "edit_count.py").write_text(EDIT_COUNT)
    monkeypatch.setitem(models.CAVEATS, "tiny-llama", {"truthfulqa-binary": "Random weights: its numbers mean nothing.",
                                                       "mmlu": "About MMLU, which this run has not."})
    try:
        results = loctest.run(tiny_recipe(tmp_path, RECIPE), plugins_dirs=[plugins], progress=False)
    finally:
        sys.modules.pop("loctest_dropin_edit_count", None)
    edits = len(results.data["arms"]["zeroed"]["interventions"])
    assert edits > 0 and results.values("zeroed", "edits.edits") == [float(edits)] * 3

    report = (results.run_dir / "report.md").read_text()
    section = f"## Edits per arm\n\n| baseline | treatment | more edits |\n|---|---|---|\n| baseline | zeroed | +{edits} |"
    assert section in report
    assert "![figures/edit_count.png](figures/edit_count.png)" in report  # the name is made file-safe
    assert (results.run_dir / "figures" / "edit_count.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report.index("## Comparisons") < report.index("## Edits per arm") < report.index("## Self-checks")
    assert results.data["model"]["caveat"] == "Random weights: its numbers mean nothing."
    assert "\n> Random weights: its numbers mean nothing.\n" in report and "About MMLU" not in report
    assert "Probability of the correct answer" not in report  # no binary-choice scorer, no binary-choice section


def test_the_embedded_model_carries_its_caveat_into_the_report():
    caveat = models.CAVEATS[models.EMBEDDED_MODEL]["truthfulqa-binary"]
    assert "near chance" in caveat and "'A'" in caveat
    model = {"name": models.EMBEDDED_MODEL, "caveat": caveat, "n_layers": 30, "n_heads": 9, "d_head": 64, "d_mlp": 1536,
             "device": "cpu"}
    data = {"recipe_file": "r.toml", "seed": 0, "model": model, "resolved": {"backend": {"plugin": "transformer-lens"}}}
    lines = header_lines(SimpleNamespace(run_dir=Path("runs/r"), data=data))
    assert f"> {caveat}" in lines
    assert not any(line.startswith(">") for line in header_lines(SimpleNamespace(
        run_dir=Path("runs/r"), data=data | {"model": model | {"name": "gpt2", "caveat": None}})))
