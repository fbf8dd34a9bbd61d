"""The host's figures of a run, saved under ``figures/`` in the run directory: a bar chart per metric, a heatmap of
each located arm's components per layer, metrics against cost metrics, and each sweep's effect against k (the
arms a sweep generates appear only there). Plugins draw their own figures and save them with
``RunResults.save_figure``."""
from __future__ import annotations

import textwrap

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .verdict import ALPHA  # noqa: E402

KIND_LABELS = {"mlp": "MLP neurons", "attn": "attention neurons", "head": "attention heads", "resid": "residual-stream layers"}
TITLE_SIZE = LABEL_SIZE = 10
CROWDED_BARS = 12  # more arms than this in one bar chart: the compact layout


def recipe_arms(results) -> dict[str, dict]:
    """The records of the recipe's own arms (not those its sweeps generated)."""
    return {arm: data for arm, data in results.data["arms"].items() if "sweep" not in data}


def metric_rows(results):
    """(arm, scorer, metric, summary) for every score of the recipe's own arms."""
    for arm, data in recipe_arms(results).items():
        for scorer, metrics in data["scores"].items():
            for metric, s in metrics.items():
                if metric != "note":
                    yield arm, scorer, metric, s


def counts_by_kind(counts_by_layer: dict[str, int]) -> dict[str, dict[int, int]]:
    """{"kind:layer": n} as {kind: {layer: n}}, kinds in KIND_LABELS order."""
    found: dict[str, dict[int, int]] = {}
    for key, n in counts_by_layer.items():
        kind, layer = key.split(":")
        found.setdefault(kind, {})[int(layer)] = n
    return {k: found[k] for k in sorted(found, key=list(KIND_LABELS).index)}


def metric_label(metric: str, separator: str = " ") -> str:
    """"SCORER.METRIC" in words: "correct prob (scorer truthfulqa)" (``separator`` "\\n": on two lines)."""
    scorer, _, name = metric.partition(".")
    return f"{name.replace('_', ' ')}{separator}(scorer {scorer})"


def wrapped(text: str, inches: float, size: float = TITLE_SIZE) -> str:
    """``text`` broken into lines of at most ``inches`` at font ``size`` (a character: about 0.6 of the size)."""
    chars = max(12, int(inches * 72 / (0.6 * size)))
    return "\n".join(line for part in text.split("\n") for line in textwrap.wrap(part, chars))


def wrapped_title(ax, text: str) -> None:
    """A title that fits the axes (about 3/4 of the figure's width), so no part of it is cut off."""
    ax.set_title(wrapped(text, 0.75 * ax.figure.get_figwidth()), fontsize=TITLE_SIZE)


def wrapped_ylabel(ax, text: str) -> None:
    """A y-axis label that fits the axes' height (about 2/3 of the figure's)."""
    ax.set_ylabel(wrapped(text, 0.65 * ax.figure.get_figheight(), LABEL_SIZE), fontsize=LABEL_SIZE)


def significance_marks(results, metric: str) -> dict[str, list[str]]:
    """Per arm, the p of each comparison on ``metric`` that tests it (the treatment; the arm ranked among draws),
    starred below ALPHA."""
    marks: dict[str, list[str]] = {}
    for c in results.data["comparisons"]:
        if c["metric"] == metric and c.get("p") is not None:
            tested, against = (c["baseline"], "draws") if c.get("unit") == "arm" else (c["treatment"], c["baseline"])
            marks.setdefault(tested, []).append(f"p={c['p']:.2g}{'*' if c['p'] < ALPHA else ''} vs {against}")
    return marks


def reference_lines(results, ax, metric: str) -> list[float]:
    """The scorer's chance level and the unedited arm's (the first with no editor) mean as horizontal lines;
    returns their levels."""
    scorer, _, name = metric.partition(".")
    chance = results.data.get("scorer_metrics", {}).get(scorer, {}).get("chance", {}).get(name)
    unedited = next(((arm, a["scores"][scorer][name]["mean"]) for arm, a in recipe_arms(results).items()
                     if not a["editor"] and name in a["scores"].get(scorer, {})), None)
    lines = ([(chance, dict(color="#777777", linestyle=":", label=f"chance ({chance:g})"))] if chance is not None else [])
    lines += ([(unedited[1], dict(color="#e45756", linestyle="--", label=f"unedited ({unedited[0]}): {unedited[1]:.3g}"))]
              if unedited is not None else [])
    for level, style in lines:
        ax.axhline(level, linewidth=1.2, **style)
    return [level for level, _ in lines]


def metric_bars(results, metric: str, rows: list) -> str:
    """Each arm's mean ± std, the chance and unedited lines, and the p of the comparisons testing each arm."""
    crowded = len(rows) > CROWDED_BARS  # narrow bars: vertical labels, and the figure stops growing at 16 inches
    fig, ax = plt.subplots(figsize=(min(16.0, max(5.5, (0.4 if crowded else 1.3) * len(rows))), 4.2))
    arms, means, stds = [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]
    bars = ax.bar(arms, means, yerr=stds, capsize=2 if crowded else 4, color="#4c78a8")
    marks = significance_marks(results, metric)
    ax.bar_label(bars, labels=["\n".join(marks.get(arm, [])) for arm in arms], padding=3, fontsize=6 if crowded else 7,
                 rotation=90 if crowded else 0)
    references = reference_lines(results, ax, metric)
    levels = [m + s for m, s in zip(means, stds)] + references
    low, high = min(0.0, *(m - s for m, s in zip(means, stds))), max(0.0, *levels)
    ax.set_ylim(low, high + 0.45 * (high - low or 1.0))  # room above for the p labels and the legend
    wrapped_ylabel(ax, metric_label(metric, "\n"))
    ax.set_xlabel("arm")
    wrapped_title(ax, f"{metric_label(metric)} per arm: mean ± std over repetitions (p: the comparisons on this "
                      f"metric, * below {ALPHA})")
    ax.tick_params(axis="x", rotation=90 if crowded else 20, labelsize=7 if crowded else None)
    plt.setp(ax.get_xticklabels(), ha="right", rotation_mode="anchor")
    if references:
        ax.legend(fontsize=7, loc="upper right")  # in the room above the bars
    return results.save_figure(fig, f"{metric}.png")


def layer_heatmap(results, arm: str, counts_by_layer: dict[str, int]) -> str:
    """Figure 5 of Truth Neurons: each cell is the share of the arm's components in that layer (rows: kinds)."""
    n_layers = results.data["model"]["n_layers"]
    by_kind = counts_by_kind(counts_by_layer)
    total = sum(counts_by_layer.values())
    grid = np.zeros((len(by_kind), n_layers))
    for row, layers in enumerate(by_kind.values()):
        for layer, n in layers.items():
            grid[row, layer] = n / total
    fig, ax = plt.subplots(figsize=(max(6, 0.28 * n_layers + 2.5), 0.55 * len(by_kind) + 1.6))
    image = ax.imshow(grid, cmap="Blues", vmin=0, aspect="auto")
    ax.set_yticks(range(len(by_kind)), [KIND_LABELS[k] for k in by_kind])
    step = max(1, n_layers // 16)
    ax.set_xticks(range(0, n_layers, step))
    ax.set_xlabel("layer")
    wrapped_title(ax, f"{arm}: share of its {total} components in each layer")
    fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02).set_label("share of components", fontsize=8)
    return results.save_figure(fig, f"layers_{arm}.png")


def tradeoff_plot(results, metric: str, cost: str, points: list[tuple[str, str, float, float]]) -> str:
    """One point per arm: a metric against what the edit costs (ITI's and Wang & Veitch's Figure 1c), coloured
    by the arm's locator."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    groups = sorted({g for _, g, _, _ in points})
    colors = plt.get_cmap("tab10")
    for i, group in enumerate(groups):
        mine = [(x, y) for _, g, x, y in points if g == group]
        ax.scatter([x for x, _ in mine], [y for _, y in mine], color=colors(i % 10), label=group, s=36)
    for arm, _, x, y in points:
        ax.annotate(arm, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(f"{metric_label(cost)}: cost of the edit")
    wrapped_ylabel(ax, metric_label(metric, "\n"))
    wrapped_title(ax, f"{metric_label(metric)} against {metric_label(cost)}, one point per arm (means)")
    ax.legend(fontsize=8, title="locator", title_fontsize=8)
    return results.save_figure(fig, f"{metric}_vs_{cost}.png")


def tradeoff_plots(results) -> list[str]:
    """Every metric that has a better direction, against every cost metric (e.g. MC2 vs KL)."""
    info = results.data.get("scorer_metrics", {})
    costs = [f"{s}.{m}" for s, i in info.items() for m in i["cost"]]
    means = {(arm, f"{scorer}.{metric}"): s["mean"] for arm, scorer, metric, s in metric_rows(results)}
    arms = recipe_arms(results)

    def group(arm):
        return (arms[arm]["locator"] or {}).get("plugin") or ("fixed components" if arms[arm]["n_components"] else "unedited")

    written = []
    for cost in costs:
        for scorer, i in info.items():
            for metric in i["higher_is_better"]:
                name = f"{scorer}.{metric}"
                points = [(arm, group(arm), means[arm, cost], means[arm, name]) for arm in arms
                          if (arm, cost) in means and (arm, name) in means]
                if name not in costs and len(points) > 1:
                    written.append(tradeoff_plot(results, name, cost, points))
    return written


def figures(results) -> list[str]:
    """Draw the host's figures; returns their paths relative to the run directory."""
    by_metric: dict[str, list] = {}
    for arm, scorer, metric, s in metric_rows(results):
        by_metric.setdefault(f"{scorer}.{metric}", []).append((arm, s["mean"], s["std"]))
    written = [metric_bars(results, metric, rows) for metric, rows in by_metric.items()]
    written += [layer_heatmap(results, arm, d["counts_by_layer"]) for arm, d in recipe_arms(results).items()
                if d["n_components"] and d.get("draw", {}).get("draw", 0) == 0]  # of an arm's draws, the first
    return written + tradeoff_plots(results)


def sweep_figures(results) -> dict[tuple[str, str], str]:
    """Every sweep's figure, by (arm, metric)."""
    return {(arm, metric): sweep_plot(results, arm, metric, curves, sweep["draws"])
            for arm, sweep in results.data["sweeps"].items() for metric, curves in sweep["metrics"].items()}


def sweep_plot(results, arm: str, metric: str, curves: dict, draws: int) -> str:
    """A sweep's metric against k (log scale): the located top k, and the random draws' mean and min-max band."""
    sizes = results.data["sweeps"][arm]["sizes"]
    random = np.array(curves["random"])  # [sizes, draws]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.fill_between(sizes, random.min(axis=1), random.max(axis=1), color="#bbbbbb", alpha=0.6,
                    label=f"{draws} matched random draws (min-max)")
    ax.plot(sizes, curves["random_mean"], "--", color="#555555", label="random draws' mean")
    ax.plot(sizes, curves["located"], "o-", color="#d62728", label=f"{arm}: top k by locator score")
    reference_lines(results, ax, metric)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(k) for k in sizes])
    ax.set_xlabel("k (components edited, log scale)")
    wrapped_ylabel(ax, f"{metric_label(metric, chr(10))}, mean over repetitions")
    wrapped_title(ax, f"{metric_label(metric)} against k: {arm}'s top k vs matched random draws; area "
                      f"{curves['area']:+.3g} over log2 k, rank p {curves['p']:.3g} ({curves['alternative']})")
    ax.legend(fontsize=8)
    return results.save_figure(fig, f"sweep_{arm}_{metric}.png")
