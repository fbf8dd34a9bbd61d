"""The run directory: results.json, components, per-example details, figures and a Markdown report."""
from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from rich.table import Table  # noqa: E402

SMALL_MODEL_NOTE = ("The embedded SmolLM2-135M-Instruct is a 135M-parameter model: on TruthfulQA binary choice it "
                    "sits near chance and prefers the label 'A'. Treat its numbers as a demonstration of the "
                    "pipeline, not as evidence about larger models.")


def fmt(x, digits=3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def metric_rows(results):
    """(arm, scorer, metric, summary) for every score of the run."""
    for arm, data in results.data["arms"].items():
        for scorer, metrics in data["scores"].items():
            for metric, s in metrics.items():
                if metric != "note":
                    yield arm, scorer, metric, s


def figures(results) -> list[str]:
    folder = results.run_dir / "figures"
    folder.mkdir(exist_ok=True)
    written = []
    by_metric: dict[str, list] = {}
    for arm, scorer, metric, s in metric_rows(results):
        by_metric.setdefault(f"{scorer}.{metric}", []).append((arm, s["mean"], s["std"]))
    for metric, rows in by_metric.items():
        fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(rows)), 3.2))
        ax.bar([r[0] for r in rows], [r[1] for r in rows], yerr=[r[2] for r in rows], capsize=4, color="#4c78a8")
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} per arm (mean ± std over repetitions)")
        ax.tick_params(axis="x", rotation=20)
        fig.tight_layout()
        name = f"figures/{metric}.png"
        fig.savefig(results.run_dir / name, dpi=110)
        plt.close(fig)
        written.append(name)
    n_layers = results.data["model"]["n_layers"]
    located = {arm: d["counts_by_layer"] for arm, d in results.data["arms"].items() if d["n_components"]}
    if located:
        fig, ax = plt.subplots(figsize=(7, 3.2))
        for arm, counts in located.items():
            per_layer = [sum(n for k, n in counts.items() if int(k.split(":")[1]) == l) for l in range(n_layers)]
            ax.plot(range(n_layers), per_layer, marker="o", label=arm)
        ax.set_xlabel("layer")
        ax.set_ylabel("components")
        ax.set_title("Components per layer")
        ax.legend()
        fig.tight_layout()
        fig.savefig(results.run_dir / "figures/components_per_layer.png", dpi=110)
        plt.close(fig)
        written.append("figures/components_per_layer.png")
    return written


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
    if notes:
        lines += [""] + [f"- {arm} / {scorer}: {note}" for arm, scorer, note in notes]
    if d["comparisons"]:
        lines += ["", "## Comparisons (Welch's t-test across repetitions)", "",
                  "| baseline | treatment | metric | baseline mean | treatment mean | alternative | t | p |",
                  "|---|---|---|---|---|---|---|---|"]
        for c in d["comparisons"]:
            lines.append(f"| {c['baseline']} | {c['treatment']} | {c['metric']} | {fmt(c['baseline_mean'])} | "
                         f"{fmt(c['treatment_mean'])} | {c['alternative']} | {fmt(c['t'], 2)} | {fmt(c['p'], 4)} |")
    lines += ["", "## Figures", ""] + [f"![{f}]({f})" for f in figure_files]
    lines += ["", "## Files", "", "- `results.json`: resolved recipe, seeds, versions, per-repetition values, statistics, timings",
              "- `components/ARM.json`: located components with their TransformerLens and nnsight names",
              "- `details/ARM.SCORER.json`: per-example values"]
    for section in sections:
        lines += ["", section.strip()]
    return "\n".join(lines) + "\n"


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


def results_table(results) -> Table:
    table = Table(title=f"loctest: {results.run_dir.name}")
    for col in ("arm", "components", "metric", "mean ± std"):
        table.add_column(col)
    for arm, scorer, metric, s in metric_rows(results):
        table.add_row(arm, str(results.data["arms"][arm]["n_components"]), f"{scorer}.{metric}", f"{s['mean']:.3f} ± {s['std']:.3f}")
    for c in results.data["comparisons"]:
        table.add_row(f"{c['baseline']} > {c['treatment']}" if c["alternative"] == "greater" else f"{c['baseline']} vs {c['treatment']}",
                      "", c["metric"], f"Welch p = {fmt(c['p'], 4)}")
    return table
