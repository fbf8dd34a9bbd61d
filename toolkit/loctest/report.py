"""The run directory: results.json, components, per-example details, figures, a Markdown report and the same
report as a self-contained HTML page.

The report is generic: a verdict per comparison (loctest.verdict), scores, comparisons (with the paired tests
scorers add in loctest.stats' format), located arms against their random draws, sweeps, self-checks, figures
and files. Plugins add sections of their own through the ``loctest_report_sections`` hook.
"""
from __future__ import annotations

import json

from rich.table import Table

from .figures import counts_by_kind, figures, metric_rows, recipe_arms, sweep_figures
from .html_report import html_page
from .verdict import ALPHA, p_floor, verdict_lines

EMPTY_ARM_NOTE = "found no components: the arm was scored unedited"


def empty_located_arms(data: dict) -> list[str]:
    """Arms whose locator returned nothing (their edit changes nothing)."""
    return [arm for arm, a in data["arms"].items() if a["locator"] and not a["n_components"]]


def fmt(x, digits=3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def components_text(arm_data: dict) -> str:
    kinds = {k: sum(layers.values()) for k, layers in counts_by_kind(arm_data["counts_by_layer"]).items()}
    detail = ", ".join(f"{k} {n}" for k, n in kinds.items())
    return f"{arm_data['n_components']}" + (f" ({detail})" if len(kinds) > 1 else "")


def effect_tables(d: dict) -> list[str]:
    """Truth Neurons Table 1 style: per baseline and compared metric, the baseline and each treatment with its
    number of components, mean ± std and p."""
    lines = ["", "## Effect of each treatment"]
    groups: dict[tuple[str, str], list[dict]] = {}
    for c in d["comparisons"]:
        groups.setdefault((c["baseline"], c["metric"]), []).append(c)
    for (baseline, metric), comps in groups.items():
        scorer, _, name = metric.partition(".")
        base = d["arms"][baseline]["scores"][scorer][name]
        lines += ["", f"### {metric}: {baseline} against each treatment", "",
                  f"| arm | components | {name} (mean ± std) | p (test, alternative) |", "|---|---|---|---|",
                  f"| {baseline} | {components_text(d['arms'][baseline])} | {fmt(base['mean'])} ± {fmt(base['std'])} | |"]
        for c in comps:
            s = d["arms"][c["treatment"]]["scores"][scorer][name]
            star = "\\*" if c["p"] is not None and c["p"] < ALPHA else ""
            lines.append(f"| {c['treatment']} | {components_text(d['arms'][c['treatment']])} | {fmt(s['mean'])} ± "
                         f"{fmt(s['std'])}{star} | {p_text(c, method_name(c) + ', ' + c['alternative'])} |")
        lines += ["", f"\\* p < {ALPHA} (the row's test: Welch's t-test across repetitions, or rank among draws)."]
    return lines


def paired_test_text(test: dict, c: dict) -> str:
    """A paired test's name and alternative; for McNemar, the pairs where only one arm was right."""
    text = ", ".join(filter(None, [test["test"], test.get("alternative")]))
    if "baseline_only" in test:
        text += (f"; right only under {c['baseline']} {test['baseline_only']}, "
                 f"only under {c['treatment']} {test['treatment_only']}")
    return text + (f"; {test['note']}" if test.get("note") else "")


def paired_tests(d: dict) -> list[str]:
    """Every test a scorer added to a comparison's ``extra`` in loctest.stats' format (a dict with ``test`` and
    ``p``: McNemar, paired t, ...), once per scorer and pair of arms."""
    def row(c: dict, statistic: str, t: dict) -> str:
        return (f"| {c['baseline']} | {c['treatment']} | {statistic} | {paired_test_text(t, c)} | {t.get('n', '')} | "
                f"{fmt(t.get('mean_difference'))} | {p_text(t)} |")

    rows, seen = [], set()
    for c in d["comparisons"]:
        if c.get("paired"):
            rows.append(row(c, c["metric"], c["paired"]))
        scorer = c["metric"].partition(".")[0]
        if (scorer, c["baseline"], c["treatment"]) in seen:
            continue
        seen.add((scorer, c["baseline"], c["treatment"]))
        rows += [row(c, f"{scorer}.{name}", t) for name, t in c.get("extra", {}).items()
                 if isinstance(t, dict) and {"test", "p"} <= t.keys()]
    if not rows:
        return []
    return ["", "## Paired tests", "", "Over the examples both arms scored: each comparison's metric example by example "
            "(`paired` in `results.json`: exact McNemar when every value is 0 or 1, else a paired t-test, in the "
            "comparison's alternative; per-example values are each example's mean over repetitions), then the "
            "tests scorers add (`extra`).", "",
            "| baseline | treatment | statistic | test | pairs | treatment − baseline | p |", "|---|---|---|---|---|---|---|", *rows]


def metric_matrices(d: dict) -> list[str]:
    """Truth Neurons Table 2 style: for every metric that several scorers measure (accuracy, say), its value in
    every arm under each of them."""
    scorers_of: dict[str, dict[str, None]] = {}  # metric -> the scorers measuring it, in order
    for a in d["arms"].values():
        for scorer, metrics in a["scores"].items():
            for metric in metrics:
                if metric != "note":
                    scorers_of.setdefault(metric, {})[scorer] = None
    lines = []
    for metric, scorers in scorers_of.items():
        if len(scorers) < 2:
            continue
        lines += ["", f"## {metric[:1].upper() + metric[1:]} by arm and scorer", "",
                  "| arm | " + " | ".join(scorers) + " |", "|---|" + "---|" * len(scorers)]
        for arm, a in d["arms"].items():
            if "sweep" in a:
                continue
            cells = [a["scores"].get(s, {}).get(metric) for s in scorers]
            lines.append(f"| {arm} | " + " | ".join("" if c is None else fmt(c["mean"]) + (f" ± {fmt(c['std'])}" if c["n"] > 1 else "")
                                                 for c in cells) + " |")
    return lines


def header_lines(results) -> list[str]:
    """The title, what ran, and the model's caveat where it has one."""
    d, m = results.data, results.data["model"]
    lines = [f"# loctest run: {results.run_dir.name}", "",
             f"Recipe `{d['recipe_file']}`, seed {d['seed']}, model `{m['name']}` ({m['n_layers']} layers, "
             f"{m['n_heads']} heads of {m['d_head']}, {m['d_mlp']} MLP neurons per layer) on {m['device']}, "
             f"backend `{d['resolved']['backend']['plugin']}`.", ""]
    return lines + ([f"> {m['caveat']}", ""] if m.get("caveat") else [])


def score_lines(results) -> list[str]:
    d = results.data
    lines = ["## Scores", "", "| arm | components | scorer | metric | mean | std | repetitions |", "|---|---|---|---|---|---|---|"]
    for arm, scorer, metric, s in metric_rows(results):
        lines.append(f"| {arm} | {d['arms'][arm]['n_components']} | {scorer} | {metric} | {fmt(s['mean'])} | {fmt(s['std'])} | {s['n']} |")
    if generated := len(d["arms"]) - len(recipe_arms(results)):
        lines += ["", f"The {generated} arms the sweeps generated are summarised under Sweeps; their scores are in "
                      "`results.json` (`arms`)."]
    notes = [(arm, scorer, ms["note"]) for arm, a in recipe_arms(results).items() for scorer, ms in a["scores"].items()
             if "note" in ms]
    notes += [(arm, "locator", EMPTY_ARM_NOTE) for arm in empty_located_arms(d)]
    return lines + ([""] + [f"- {arm} / {scorer}: {note}" for arm, scorer, note in notes] if notes else [])


def comparison_lines(d: dict) -> list[str]:
    """The comparisons table, then each treatment's effect and the scorers' paired tests."""
    if not d["comparisons"]:
        return []
    lines = ["", "## Comparisons", "",
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
    return lines + effect_tables(d) + paired_tests(d)


def unedited_arm(d: dict) -> str | None:
    """The first of the recipe's arms with no editor: the reference of "effect"."""
    return next((arm for arm, a in d["arms"].items() if not a["editor"] and "sweep" not in a), None)


def located_vs_draws_rows(d: dict) -> list[dict]:
    """Per comparison ranked among random draws: the located arm's locator, editor and metric, its effect (mean
    minus the unedited arm's, or its raw mean without one), the draws' effects (min, mean, max), and the rank p."""
    reference = unedited_arm(d)
    rows = []
    for c in d["comparisons"]:
        if c.get("unit") != "arm":
            continue
        scorer, _, metric = c["metric"].partition(".")
        offset = d["arms"][reference]["scores"][scorer][metric]["mean"] if reference else 0.0
        located, draws = d["arms"][c["baseline"]], [m - offset for m in c["draw_means"]]
        rows.append({"arm": c["baseline"], "locator": (located["locator"] or {}).get("plugin", "listed components"),
                     "editor": (located["editor"] or {}).get("plugin", "none"), "metric": c["metric"],
                     "effect": c["baseline_mean"] - offset, "draws": len(draws), "random_min": min(draws),
                     "random_mean": sum(draws) / len(draws), "random_max": max(draws),
                     "p": f"{c['p']:.3g} (smallest {c['min_p']:.3g}; {c['alternative']})"})
    return rows


def located_vs_draws_header(d: dict) -> list[str]:
    """The columns of the located-vs-random-draws table: effects against the unedited arm, or raw means."""
    reference = unedited_arm(d)
    return ["locator × editor", "arm", "metric", f"effect vs {reference}" if reference else "mean",
            "random: min – max", "random mean", "rank p"]


def located_vs_draws_cells(row: dict) -> list[str]:
    return [f"{row['locator']} × {row['editor']}", row["arm"], row["metric"], f"{row['effect']:+.3g}",
            f"{row['random_min']:+.3g} – {row['random_max']:+.3g} ({row['draws']} draws)", f"{row['random_mean']:+.3g}",
            row["p"]]


def located_vs_draws_lines(d: dict) -> list[str]:
    """The report's "Located vs matched random draws" table (issue: both kinds of evidence, one row per locator
    x editor and metric)."""
    rows = located_vs_draws_rows(d)
    if not rows:
        return []
    reference = unedited_arm(d)
    header = located_vs_draws_header(d)
    return ["", "## Located vs matched random draws", "",
            "Each arm ranked among random draws, edited alike: its "
            + (f"effect (its mean minus the unedited arm {reference}'s)" if reference else
               "mean (no arm is unedited, so no effect is taken)")
            + ", the same for the draws (min – max, and their mean), and the rank p with the smallest p the draws allow "
              "(1 / (draws + 1), twice that two-sided) and the alternative.", "",
            "| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(located_vs_draws_cells(row)) + " |" for row in rows)]


def located_vs_draws_table(d: dict) -> Table | None:
    """The same table for the terminal, or None when no comparison ranks an arm among draws."""
    rows = located_vs_draws_rows(d)
    if not rows:
        return None
    table = Table(title="located vs matched random draws")
    for column in located_vs_draws_header(d):
        table.add_column(column)
    for row in rows:
        table.add_row(*located_vs_draws_cells(row))
    return table


def sweep_lines(d: dict, figure_of: dict[tuple[str, str], str]) -> list[str]:
    """Per sweep: a table of each metric's area between the located and the random draws' mean curves, with its
    rank p, then the figures (``figure_of``: path by (arm, metric))."""
    if not d["sweeps"]:
        return []
    lines = ["", "## Sweeps", "", "Each arm's top k (by its locator's scores) against matched random draws (nested sets "
             "with the same count of each kind per layer), edited alike. Area: trapezoid rule over log2 k of the located "
             "curve minus the draws' mean curve (metric units x doublings of k); p: its rank among the draws' areas."]
    for arm, sweep in d["sweeps"].items():
        lines += ["", f"### {arm}: k = {', '.join(map(str, sweep['sizes']))}, {sweep['draws']} draws", "",
                  "| metric | located (k ascending) | random mean | area | p (rank, alternative) |", "|---|---|---|---|---|"]
        lines += [f"| {metric} | {', '.join(map(general, c['located']))} | {', '.join(map(general, c['random_mean']))} | "
                  f"{c['area']:+.4g} | {p_text(c, 'rank, ' + c['alternative'])} |" for metric, c in sweep["metrics"].items()]
        lines += ["", *(f"![{figure_of[arm, metric]}]({figure_of[arm, metric]})" for metric in sweep["metrics"])]
    return lines


def markdown(results, figure_files: list[str], sections: list[str], sweep_figure_files: dict[tuple[str, str], str]) -> str:
    """The report: what ran, the verdict, scores, comparisons, located arms against their random draws, sweeps (with
    ``sweep_figure_files``), metrics several scorers share, the plugins' ``sections``, self-checks, the host's
    figures and the files."""
    d = results.data
    lines = (header_lines(results) + verdict_lines(d) + score_lines(results) + comparison_lines(d)
             + located_vs_draws_lines(d) + sweep_lines(d, sweep_figure_files) + metric_matrices(d))
    for section in sections:
        lines += ["", section.strip()]
    lines += self_check_lines(d)
    lines += ["", "## Figures", ""] + [f"![{f}]({f})" for f in figure_files]
    lines += ["", "## Files", "", "- `results.json`: resolved recipe, seeds, versions, per-repetition values, statistics, timings",
              "- `components/ARM.json`: located components with their TransformerLens and nnsight names",
              "- `details/ARM.SCORER.json`: per-example values",
              "- `report.html`: this report as one page, figures inline"]
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
        components.save(run_dir / "components" / f"{arm}.json", results.site_names)
    for arm, by_scorer in results.scores.items():
        for scorer, s in by_scorer.items():
            (run_dir / "details" / f"{arm}.{scorer}.json").write_text(json.dumps(s.details))
    figure_files = figures(results)
    sweep_figure_files = sweep_figures(results)
    (run_dir / "results.json").write_text(json.dumps(results.data, indent=1, default=str))
    report = markdown(results, figure_files, sections, sweep_figure_files)
    (run_dir / "report.md").write_text(report)
    (run_dir / "report.html").write_text(html_page(report, run_dir, f"loctest run: {run_dir.name}"))


def method_name(comparison: dict) -> str:
    return "rank" if comparison.get("unit") == "arm" else "Welch"


def p_text(c: dict, *labels: str) -> str:
    """A comparison's (or a test's) p, then in parentheses ``labels`` and the smallest p its design can reach when
    above 0."""
    notes = [*labels, *([p_floor(c)] if c.get("min_p") else [])]
    return fmt(c["p"], 4) + (f" ({'; '.join(notes)})" if notes else "")


def results_table(results) -> Table:
    table = Table(title=f"loctest: {results.run_dir.name}")
    for col in ("arm", "components", "metric", "mean ± std"):
        table.add_column(col)
    for arm, scorer, metric, s in metric_rows(results):
        table.add_row(arm, str(results.data["arms"][arm]["n_components"]), f"{scorer}.{metric}", f"{s['mean']:.3f} ± {s['std']:.3f}")
    for c in results.data["comparisons"]:
        table.add_row(f"{c['baseline']} > {c['treatment']}" if c["alternative"] == "greater" else f"{c['baseline']} vs {c['treatment']}",
                      "", c["metric"], f"{method_name(c)} p = {p_text(c)}")
    for arm, sweep in results.data["sweeps"].items():
        for metric, c in sweep["metrics"].items():
            table.add_row(f"{arm} sweep vs random", f"k {sweep['sizes'][0]}-{sweep['sizes'][-1]}", metric,
                          f"area {c['area']:+.3g}, rank p = {p_text(c)}")
    return table
