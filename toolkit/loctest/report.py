"""The run directory: results.json, components, per-example details, figures and a Markdown report."""
from __future__ import annotations

import json
import re

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from rich.table import Table  # noqa: E402

from .stats import draws_needed  # noqa: E402

SMALL_MODEL_NOTE = ("The embedded SmolLM2-135M-Instruct is a 135M-parameter model: on TruthfulQA binary choice it "
                    "sits near chance and prefers the label 'A'. Treat its numbers as a demonstration of the "
                    "pipeline, not as evidence about larger models.")


EMPTY_ARM_NOTE = "found no components: the arm was scored unedited"


def empty_located_arms(data: dict) -> list[str]:
    """Arms whose locator returned nothing (their edit changes nothing)."""
    return [arm for arm, a in data["arms"].items() if a["locator"] and not a["n_components"]]


def fmt(x, digits=3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def metric_rows(results):
    """(arm, scorer, metric, summary) for every score of the run."""
    for arm, data in results.data["arms"].items():
        for scorer, metrics in data["scores"].items():
            for metric, s in metrics.items():
                if metric != "note":
                    yield arm, scorer, metric, s


KIND_LABELS = {"mlp": "MLP neurons", "attn": "attention neurons", "head": "attention heads"}


def safe(name: str) -> str:
    """A name usable in a file name."""
    return re.sub(r"[^\w.-]+", "_", name)


def counts_by_kind(counts_by_layer: dict[str, int], neuron_rows: bool = False) -> dict[str, dict[int, int]]:
    """{"kind:layer": n} as {kind: {layer: n}}, kinds in KIND_LABELS order. ``neuron_rows``: when MLP or
    attention neurons are present, both kinds get a row (empty or not), as in the paper's Figure 5."""
    found: dict[str, dict[int, int]] = {}
    for key, n in counts_by_layer.items():
        kind, layer = key.split(":")
        found.setdefault(kind, {})[int(layer)] = n
    if neuron_rows and {"mlp", "attn"} & set(found):
        found = {"mlp": {}, "attn": {}} | found
    return {k: found[k] for k in sorted(found, key=list(KIND_LABELS).index)}


def save(fig, results, name: str) -> str:
    fig.tight_layout()
    fig.savefig(results.run_dir / name, dpi=110)
    plt.close(fig)
    return name


def metric_bars(results, metric: str, rows: list) -> str:
    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(rows)), 3.2))
    ax.bar([r[0] for r in rows], [r[1] for r in rows], yerr=[r[2] for r in rows], capsize=4, color="#4c78a8")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per arm (mean ± std over repetitions)")
    ax.tick_params(axis="x", rotation=20)
    return save(fig, results, f"figures/{safe(metric)}.png")


def layer_heatmap(results, arm: str, counts_by_layer: dict[str, int]) -> str:
    """Figure 5 of Truth Neurons: each cell is the share of the arm's components in that layer (rows: kinds)."""
    n_layers = results.data["model"]["n_layers"]
    by_kind = counts_by_kind(counts_by_layer, neuron_rows=True)
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
    ax.set_title(f"{arm}: share of its {total} components in each layer")
    fig.colorbar(image, ax=ax, fraction=0.03, pad=0.02)
    return save(fig, results, f"figures/layers_{safe(arm)}.png")


def category_bars(results, comparison: dict) -> str:
    """Figure 4 of Truth Neurons: per category, the share of questions whose correct-answer probability fell."""
    extra = comparison["extra"]
    items = sorted(extra["categories"].items(), key=lambda kv: kv[1]["fell_share"])
    fig, ax = plt.subplots(figsize=(7, 0.32 * len(items) + 1.6))
    bars = ax.barh([f"{name} ({c['n']})" for name, c in items], [100 * c["fell_share"] for _, c in items], color="#4c78a8")
    ax.bar_label(bars, fmt="%.0f", padding=2, fontsize=8)
    ax.axvline(100 * extra["fell_share"], color="#e45756", linestyle="--", label=f"all questions: {extra['fell_share']:.0%}")
    ax.set_xlim(0, 100)
    ax.set_xlabel("questions whose correct-answer probability fell (%)")
    ax.set_title(f"{comparison['treatment']} vs {comparison['baseline']} (categories with ≥ {extra['min_category_size']} questions)",
                 fontsize=9)
    ax.legend(loc="lower right", fontsize=8)
    scorer = comparison["metric"].partition(".")[0]
    return save(fig, results, f"figures/fell_by_category_{safe(scorer)}_{safe(comparison['baseline'])}_vs_"
                              f"{safe(comparison['treatment'])}.png")


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
    ax.set_xlabel(f"{cost} (cost of the edit)")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} against {cost}, one point per arm (means)", fontsize=10)
    ax.legend(fontsize=8, title="locator", title_fontsize=8)
    return save(fig, results, f"figures/{safe(metric)}_vs_{safe(cost)}.png")


def tradeoff_plots(results) -> list[str]:
    """Every metric that has a better direction, against every cost metric (e.g. MC2 vs KL)."""
    info = results.data.get("scorer_metrics", {})
    costs = [f"{s}.{m}" for s, i in info.items() for m in i["cost"]]
    means = {(arm, f"{scorer}.{metric}"): s["mean"] for arm, scorer, metric, s in metric_rows(results)}
    arms = results.data["arms"]

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
    (results.run_dir / "figures").mkdir(exist_ok=True)
    by_metric: dict[str, list] = {}
    for arm, scorer, metric, s in metric_rows(results):
        by_metric.setdefault(f"{scorer}.{metric}", []).append((arm, s["mean"], s["std"]))
    written = [metric_bars(results, metric, rows) for metric, rows in by_metric.items()]
    written += [layer_heatmap(results, arm, d["counts_by_layer"]) for arm, d in results.data["arms"].items()
                if d["n_components"]]
    shifts = {(c["metric"].partition(".")[0], c["baseline"], c["treatment"]): c
              for c in results.data["comparisons"] if c.get("extra", {}).get("categories")}  # one per pair of arms
    written += [category_bars(results, c) for c in shifts.values()]
    return written + tradeoff_plots(results)


def pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def components_text(arm_data: dict) -> str:
    kinds = {k: sum(layers.values()) for k, layers in counts_by_kind(arm_data["counts_by_layer"]).items()}
    detail = ", ".join(f"{k} {n}" for k, n in kinds.items())
    return f"{arm_data['n_components']}" + (f" ({detail})" if len(kinds) > 1 else "")


def category_lines(c: dict) -> list[str]:
    extra = c["extra"]
    lines = ["", f"Questions whose P(correct) fell, {c['treatment']} vs {c['baseline']}, per category with "
                 f"≥ {extra['min_category_size']} questions ({extra['categories_left_out']} smaller categories left "
                 "out; Figure 4 style):", "", "| category | questions | fell |", "|---|---|---|"]
    return lines + [f"| {cat} | {v['n']} | {pct(v['fell_share'])} |"
                    for cat, v in sorted(extra["categories"].items(), key=lambda kv: -kv[1]["fell_share"])]


def paired_line(c: dict) -> str:
    e = c["extra"]
    return (f"- {c['treatment']} vs {c['baseline']}, {e['paired_test']} on {e['n']} paired questions: right only under "
            f"{c['baseline']} {e['baseline_only_right']}, only under {c['treatment']} {e['treatment_only_right']}; "
            f"p ({c['baseline']} greater) = {fmt(e['p_baseline_greater'], 4)}, two-sided p = {fmt(e['p_two_sided'], 4)}")


def suppression_tables(d: dict) -> list[str]:
    """Truth Neurons Table 1 style: per compared metric, the baseline and each treatment with its number of
    components, mean ± std and Welch p; for binary choice also the Eq. 11 relative drop, the share of questions
    whose correct-answer probability fell and its per-category table (Figure 4); paired tests where given."""
    lines: list[str] = []
    groups: dict[tuple[str, str], list[dict]] = {}
    for c in d["comparisons"]:
        groups.setdefault((c["baseline"], c["metric"]), []).append(c)
    for (baseline, metric), comps in groups.items():
        scorer, _, name = metric.partition(".")
        shift = any("relative_drop" in c.get("extra", {}) for c in comps)
        extra_head = " relative drop of P(correct), Eq. 11 | questions whose P(correct) fell |" if shift else ""
        base = d["arms"][baseline]["scores"][scorer][name]
        lines += ["", f"### {metric}: {baseline} against each treatment", "",
                  f"| arm | components | {name} (mean ± std) | p (test, alternative) |{extra_head}",
                  "|---|---|---|---|" + ("---|---|" if shift else ""),
                  f"| {baseline} | {components_text(d['arms'][baseline])} | {fmt(base['mean'])} ± {fmt(base['std'])} | |"
                  + (" | |" if shift else "")]
        for c in comps:
            s = d["arms"][c["treatment"]]["scores"][scorer][name]
            extra = c.get("extra", {})
            star = "\\*" if c["p"] is not None and c["p"] < 0.05 else ""
            row = (f"| {c['treatment']} | {components_text(d['arms'][c['treatment']])} | {fmt(s['mean'])} ± "
                   f"{fmt(s['std'])}{star} | {p_text(c, method_name(c) + ', ' + c['alternative'])} |")
            lines.append(row + (f" {pct(extra.get('relative_drop'))} | {pct(extra.get('fell_share'))} |" if shift else ""))
        lines += ["", "\\* p < 0.05 (the row's test: Welch's t-test across repetitions, or rank among draws)."
                  + (" Eq. 11: mean over questions of (P_pre − P_post) / P_pre of the correct answer's label, read "
                     "in each repetition's answer order, averaged over repetitions." if shift else "")]
        for c in comps:
            if c.get("extra", {}).get("categories"):
                lines += category_lines(c)
        paired = [paired_line(c) for c in comps if c.get("extra", {}).get("paired_test")]
        lines += [""] + paired if paired else []
    return lines


def accuracy_matrix(d: dict) -> list[str]:
    """Truth Neurons Table 2 style: accuracy of every arm under every scorer that measures it."""
    scorers = list(dict.fromkeys(s for a in d["arms"].values() for s, ms in a["scores"].items() if "accuracy" in ms))
    if len(scorers) < 2:
        return []
    lines = ["", "## Accuracy by arm and scorer", "", "| arm | " + " | ".join(scorers) + " |",
             "|---|" + "---|" * len(scorers)]
    for arm, a in d["arms"].items():
        cells = [a["scores"].get(s, {}).get("accuracy") for s in scorers]
        lines.append(f"| {arm} | " + " | ".join("" if c is None else fmt(c["mean"]) + (f" ± {fmt(c['std'])}" if c["n"] > 1 else "")
                                             for c in cells) + " |")
    return lines


def markdown(results, figure_files: list[str], sections: list[str]) -> str:
    d = results.data
    m = d["model"]
    lines = [f"# loctest run: {results.run_dir.name}", "",
             f"Recipe `{d['recipe_file']}`, seed {d['seed']}, model `{m['name']}` ({m['n_layers']} layers, "
             f"{m['n_heads']} heads of {m['d_head']}, {m['d_mlp']} MLP neurons per layer) on {m['device']}, "
             f"backend `{d['resolved']['backend']['plugin']}`.", ""]
    if m["embedded"]:
        lines += [f"> {SMALL_MODEL_NOTE}", ""]
    lines += ["## Scores", "", "| arm | components | scorer | metric | mean | std | repetitions |", "|---|---|---|---|---|---|---|"]
    for arm, scorer, metric, s in metric_rows(results):
        lines.append(f"| {arm} | {d['arms'][arm]['n_components']} | {scorer} | {metric} | {fmt(s['mean'])} | {fmt(s['std'])} | {s['n']} |")
    notes = [(arm, scorer, ms["note"]) for arm, a in d["arms"].items() for scorer, ms in a["scores"].items() if "note" in ms]
    notes += [(arm, "locator", EMPTY_ARM_NOTE) for arm in empty_located_arms(d)]
    if notes:
        lines += [""] + [f"- {arm} / {scorer}: {note}" for arm, scorer, note in notes]
    if d["comparisons"]:
        lines += ["", "## Comparisons", "",
                  "| baseline | treatment | metric | baseline mean | treatment mean | alternative | test | t | p |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for c in d["comparisons"]:
            treatment = c["treatment"] + (f" + {len(c['treatment_arms']) - 1} more draws" if c.get("treatment_arms") else "")
            lines.append(f"| {c['baseline']} | {treatment} | {c['metric']} | {fmt(c['baseline_mean'])} | "
                         f"{fmt(c['treatment_mean'])} | {c['alternative']} | {method_name(c)} | {fmt(c['t'], 2)} | {p_text(c)} |")
        lines += ["", "Welch: t-test across repetitions (answer orders, or questions for per-question scorers). Rank: "
                      "the baseline arm's mean ranked among the means of independent control draws (the draw is the unit); "
                      "'treatment mean' is then the first draw's. Rank p is exact, a multiple of 1 / (draws + 1) "
                      "(twice that two-sided), so it cannot go below the smallest value shown beside it."]
        lines += unreachable_alpha_warnings(d["comparisons"])
    if d["comparisons"]:
        lines += ["", "## Effect of each treatment"] + suppression_tables(d)
    lines += accuracy_matrix(d)
    lines += self_check_lines(d)
    lines += ["", "## Figures", ""] + [f"![{f}]({f})" for f in figure_files]
    lines += ["", "## Files", "", "- `results.json`: resolved recipe, seeds, versions, per-repetition values, statistics, timings",
              "- `components/ARM.json`: located components with their TransformerLens and nnsight names",
              "- `details/ARM.SCORER.json`: per-example values"]
    for section in sections:
        lines += ["", section.strip()]
    return "\n".join(lines) + "\n"


def general(x) -> str:
    return f"{x:.3g}" if isinstance(x, (int, float)) else str(x)


def self_check_lines(d: dict) -> list[str]:
    """The "Self-checks" section: every fast path compared at run time with the straightforward computation."""
    checks = d.get("self_checks", [])
    lines = ["", "## Self-checks", ""]
    if not checks:
        return lines + ["No fast path ran in this run (results came from the cache, or no step used one)."]
    failed = [c for c in checks if c["failures"]]
    if failed:
        lines += [f"> **Warning:** {c['name']}: {c['fast']} differed from {c['exact']} by {general(c['max_difference'])} "
                  f"(tolerance {c['tolerance']:.3g}) in {c['failures']} of {c['runs']} checks; {c['outcome']}." for c in failed]
        lines += [""]
    lines += ["| check | fast path | compared with | checks | failed | largest difference | tolerance | outcome |",
              "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {c['name']} | {c['fast']} | {c['exact']} | {c['runs']} | {c['failures']} | {general(c['max_difference'])} | "
              f"{c['tolerance']:.3g} | {c['outcome']} |" for c in checks]
    return lines


def write_outputs(results, sections: list[str]) -> None:
    run_dir = results.run_dir
    (run_dir / "components").mkdir(exist_ok=True)
    (run_dir / "details").mkdir(exist_ok=True)
    for arm, components in results.components.items():
        components.save(run_dir / "components" / f"{arm}.json")
    for arm, by_scorer in results.scores.items():
        for scorer, s in by_scorer.items():
            (run_dir / "details" / f"{arm}.{scorer}.json").write_text(json.dumps(s.details))
    figure_files = figures(results)
    (run_dir / "results.json").write_text(json.dumps(results.data, indent=1, default=str))
    (run_dir / "report.md").write_text(markdown(results, figure_files, sections))


def method_name(comparison: dict) -> str:
    return "rank" if comparison.get("unit") == "arm" else "Welch"


ALPHA = 0.05  # the conventional level the report warns about


def p_floor(c: dict) -> str:
    """'smallest possible with N draws: X', from a comparison's ``min_p`` (the smallest p its design can reach)."""
    design = f" with {c['draws']} draws" if "draws" in c else ""
    return f"smallest possible{design}: {c['min_p']:.4g}"


def p_text(c: dict, *labels: str) -> str:
    """A comparison's p, then in parentheses ``labels`` and the smallest p its design can reach when above 0."""
    notes = [*labels, *([p_floor(c)] if c.get("min_p") else [])]
    return fmt(c["p"], 4) + (f" ({'; '.join(notes)})" if notes else "")


def unreachable_alpha_warnings(comparisons: list[dict]) -> list[str]:
    """A warning per comparison whose design cannot reach p <= ALPHA, whatever the data."""
    warnings = [f"- **Warning:** {c['baseline']} vs {c['treatment']}, {c['metric']}: this design cannot reach "
                f"p ≤ {ALPHA} ({p_floor(c)})"
                + (f"; add draws ({draws_needed(ALPHA, c['alternative'])} draws can reach it)" if "draws" in c else "")
                + "."
                for c in comparisons if (c.get("min_p") or 0) > ALPHA]
    return ["", *warnings] if warnings else []


def results_table(results) -> Table:
    table = Table(title=f"loctest: {results.run_dir.name}")
    for col in ("arm", "components", "metric", "mean ± std"):
        table.add_column(col)
    for arm, scorer, metric, s in metric_rows(results):
        table.add_row(arm, str(results.data["arms"][arm]["n_components"]), f"{scorer}.{metric}", f"{s['mean']:.3f} ± {s['std']:.3f}")
    for c in results.data["comparisons"]:
        table.add_row(f"{c['baseline']} > {c['treatment']}" if c["alternative"] == "greater" else f"{c['baseline']} vs {c['treatment']}",
                      "", c["metric"], f"{method_name(c)} p = {p_text(c)}")
    return table
