"""The report's figures pass a look (every text inside the saved figure, chance and unedited lines, p marks,
labelled axes and colour bars, no empty kind rows) and report.html is the same report on one self-contained page."""
from __future__ import annotations

import base64
import re

import matplotlib
import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

import loctest
from loctest.figures import figures, metric_bars, sweep_figures
from loctest.html_report import html_page

from conftest import ROOT, tiny_recipe

RECIPE = f"""
[plugins]
paths = ["{ROOT / 'docs' / 'examples' / 'example_plugin.py'}"]

[datasets.tqa]
plugin = "truthfulqa-binary"
limit = 5

[scorers.truthfulqa_binary_choice_scorer]
plugin = "binary-choice"
dataset = "tqa"
repetitions = 3

[scorers.kl]
plugin = "kl"
dataset = "tqa"
count = 3

[arms.unedited-baseline-model]

[arms.mlp-neurons-listed-by-hand]
components = ["mlp:0:1", "mlp:1:2", "mlp:1:3"]
editor = "zero-ablation"

[arms.random-mlp-neurons-matched]
locator = {{ plugin = "random", match = "mlp-neurons-listed-by-hand" }}
editor = "zero-ablation"

[arms.top-activation-neurons-swept]
locator = {{ plugin = "top-activation", dataset = "tqa", count = 4 }}
editor = "zero-ablation"
sweep = {{ sizes = [1, 2, 4], draws = 2 }}

[[comparisons]]
baseline = "unedited-baseline-model"
treatment = "random-mlp-neurons-matched"
metric = "truthfulqa_binary_choice_scorer.accuracy"
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return loctest.run(tiny_recipe(tmp_path_factory.mktemp("figures"), RECIPE), progress=False)


@pytest.fixture(scope="module")
def drawn(run):
    """Every host figure drawn again, each kept (after its save) with the name it was saved under."""
    kept = {}
    save = run.save_figure

    def keep(fig, name):
        path = save(fig, name)
        kept[path] = fig
        return path

    run.save_figure = keep
    try:
        figures(run)
        sweep_figures(run)
    finally:
        del run.save_figure
    return kept


def outside_the_figure(fig) -> list[str]:
    """What leaves the saved figure (a clipped title, a cut-off label): each axes' tight box (its title, axis and
    tick labels as drawn, legend, bar labels) and each figure-level text must lie inside the figure's box."""
    canvas = FigureCanvasAgg(fig)  # the saved figure is closed: draw it again as it was saved (same layout)
    canvas.draw()
    renderer = canvas.get_renderer()
    boxes = [(ax.get_title() or ax.get_ylabel() or "axes", ax.get_tightbbox(renderer)) for ax in fig.axes]
    boxes += [(text.get_text(), text.get_window_extent(renderer)) for text in fig.texts if text.get_text().strip()]
    box = fig.bbox
    return [name for name, b in boxes if b.x0 < box.x0 - 1 or b.y0 < box.y0 - 1 or b.x1 > box.x1 + 1 or b.y1 > box.y1 + 1]


def test_every_text_of_every_figure_lies_inside_the_saved_figure(run, drawn):
    assert {"figures/truthfulqa_binary_choice_scorer.accuracy.png", "figures/kl.kl.png",
            "figures/layers_mlp-neurons-listed-by-hand.png"} <= set(drawn)
    assert any("_vs_" in path for path in drawn)  # the trade-off plot against kl
    assert "figures/sweep_top-activation-neurons-swept_truthfulqa_binary_choice_scorer.accuracy.png" in drawn
    for path, fig in drawn.items():
        assert outside_the_figure(fig) == [], path
        png = (run.run_dir / path).read_bytes()  # the saved file is that figure (at save_figure's 110 dpi)
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        size = np.array([int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")])
        assert np.abs(size - fig.get_size_inches() * 110).max() <= 1


def test_bar_charts_draw_chance_and_the_unedited_arm_and_mark_the_tested_bar(run, drawn):
    (ax,) = drawn["figures/truthfulqa_binary_choice_scorer.accuracy.png"].axes
    unedited = np.mean(run.values("unedited-baseline-model", "truthfulqa_binary_choice_scorer.accuracy"))
    lines = {line.get_label(): line.get_ydata()[0] for line in ax.get_lines() if not line.get_label().startswith("_")}
    assert lines["chance (0.5)"] == 0.5
    assert lines[f"unedited (unedited-baseline-model): {unedited:.3g}"] == pytest.approx(unedited)
    assert {text.get_text() for text in ax.get_legend().get_texts()} == set(lines)
    p = run.comparisons[0]["p"]
    marks = [t.get_text() for t in ax.texts if t.get_text()]
    assert marks == [f"p={p:.2g}{'*' if p < 0.05 else ''} vs unedited-baseline-model"]
    assert ax.get_ylabel().split() == ["accuracy", "(scorer", "truthfulqa_binary_choice_scorer)"]  # wrapped to fit
    assert ax.get_xlabel() == "arm"
    assert "\n" in ax.get_title()  # wrapped to the figure's width

    (sweep,) = drawn["figures/sweep_top-activation-neurons-swept_truthfulqa_binary_choice_scorer.accuracy.png"].axes
    assert {"chance (0.5)", f"unedited (unedited-baseline-model): {unedited:.3g}"} <= {l.get_label() for l in sweep.get_lines()}

    (kl,) = drawn["figures/kl.kl.png"].axes
    assert [line.get_label() for line in kl.get_lines() if not line.get_label().startswith("_")] == [
        "unedited (unedited-baseline-model): 0"]  # kl has no chance level


def test_layer_heatmaps_label_their_colour_bar_and_show_only_the_kinds_present(drawn):
    fig = drawn["figures/layers_mlp-neurons-listed-by-hand.png"]
    heatmap, colour_bar = fig.axes
    assert [t.get_text() for t in heatmap.get_yticklabels()] == ["MLP neurons"]
    assert colour_bar.get_ylabel() == "share of components" and heatmap.get_xlabel() == "layer"


def data_images(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def test_report_html_is_the_report_on_one_self_contained_page(run):
    report = (run.run_dir / "report.md").read_text()
    page = (run.run_dir / "report.html").read_text()
    figures_in_report = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    assert len(figures_in_report) >= 4
    assert data_images(page) == [(run.run_dir / f).read_bytes() for f in figures_in_report]
    assert page.count("<table>") == report.count("\n|---") > 3
    assert "<h2>Verdict</h2>" in page and "lowers truthfulqa_binary_choice_scorer.accuracy relative to" in page
    assert not re.search(r'(src|href)="(?!data:)[a-z]+:', page) and "<link" not in page and "<script" not in page


def test_html_embeds_only_files_of_the_run_directory(tmp_path):
    (tmp_path / "run" / "figures").mkdir(parents=True)
    (tmp_path / "run" / "figures" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\nfake")
    (tmp_path / "outside.png").write_bytes(b"\x89PNG\r\n\x1a\nsecret")
    page = html_page("# T\n\n![a](figures/a.png) ![b](../outside.png) ![c](https://example.com/c.png) ![d](figures/no.png)"
                     "\n\n<script>alert(1)</script>", tmp_path / "run", "T <1>")
    assert data_images(page) == [b"\x89PNG\r\n\x1a\nfake"]
    assert "example.com" not in page and "secret" not in page and "<script>" not in page
    assert page.count("not found]") == 3 and "<title>T &lt;1&gt;</title>" in page


def test_a_bar_chart_of_many_arms_stops_growing_and_keeps_every_text_inside(run):
    kept = []
    save = run.save_figure

    def keep(fig, name):
        kept.append(fig)
        return save(fig, name)

    run.save_figure = keep
    try:
        metric_bars(run, "kl.kl", [(f"a-random-draw-with-a-long-name~draw{i}", 0.1 * (i % 5), 0.02) for i in range(40)])
    finally:
        del run.save_figure
    (fig,) = kept
    (ax,) = fig.axes
    assert fig.get_size_inches()[0] == 16.0 and outside_the_figure(fig) == []
    assert {label.get_rotation() for label in ax.get_xticklabels()} == {90.0}
