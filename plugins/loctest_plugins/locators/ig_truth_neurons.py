"""``ig-truth-neurons``: truth neurons by integrated gradients (Li et al. 2025, "Truth Neurons").

For every question the binary-choice prompt gets the correct answer as A or B (a seeded draw per question);
f(T|t) and f(T|f) are P(label)+P(lowercase label) of the correct and the incorrect answer at the next token.
Questions the unedited model gets wrong are dropped (manipulation check). Per layer, integrated gradients
from the zero baseline give every MLP and attention neuron Attr_t and Attr_f; D = Attr_t - Attr_f. A seeded
half of the questions selects candidates (adaptive and share thresholds), the other half tests them
(one-sided t-tests of D > 0, Bonferroni-corrected); the survivors are returned (``keep = "candidates"``: every
candidate). Each component's score is its t statistic on the testing half, so the truth neurons are the top of
the candidates' ranking. Every setting that decides the numbers, the counts and a table of the candidates go to
``truth_neurons-<arm>.json`` in the run directory.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from loctest import ComponentSet, DatasetRef, Example, Locator, hookimpl
from loctest.errors import UserError

from ..common.binary_prompts import BinaryPromptConfig, binary_prompts, label_probabilities
from ..truth_neurons.cache import AttributionCache
from ..truth_neurons.ig import Attribution, integrated_gradients, label_objective, site_components
from ..truth_neurons.selection import candidates, significance, split_halves

QUADRATURE = "right Riemann sum: alpha = k/m, k = 1..m"
BASELINE = "zero activation at the scaled positions"
REPORT_ROWS = 30
WORST_SITES = 5
TARGETS = "f(T|t) = P(correct label) + P(its lowercase), f(T|f) likewise for the incorrect label, same prompt"


class IGTruthNeuronsConfig(BinaryPromptConfig):
    dataset: DatasetRef = Field("truthfulqa", description="Name of a dataset declared in the recipe's [datasets].")
    adaptive_threshold: float = Field(..., gt=0, le=100, description=(
        "t (%): a neuron is salient in an example when its D exceeds t % of that example's largest D over all "
        "layers of its type. Model-dependent and required (the paper used 1 to 25; see docs/truth-neurons.md)."))
    share_threshold: float = Field(40.0, gt=0, le=100, description="p (%): keep neurons salient in at least p % of the selection-half examples (paper: 40).")
    alpha: float = Field(0.05, gt=0, lt=1, description="Significance level of the Bonferroni-corrected one-sided t-tests.")
    keep: Literal["significant", "candidates"] = Field("significant", description=(
        "Which components to return: 'significant' (the truth neurons: those passing the Bonferroni tests) or "
        "'candidates' (every candidate of the selection half, to sweep the top k beyond the truth neurons). "
        "Either way each is scored by its t statistic on the testing half."))
    steps: int = Field(20, ge=1, description="m: Riemann-sum steps of integrated gradients (paper: 20).")
    positions: Literal["last", "prompt"] = Field("last", description=(
        "Positions scaled from the baseline: 'last' (the last prompt token, the paper's setting) or 'prompt' "
        "(every prompt token; a neuron's attribution is summed over positions; much slower)."))
    kinds: list[Literal["mlp", "attn"]] = Field(["mlp", "attn"], min_length=1, description="Layer types: 'mlp' (MLP neurons) and/or 'attn' (attention neurons).")
    layers: list[int] | None = Field(None, description="Layers to attribute (default: every layer).")
    split_seed: int = Field(0, description="Seed of the selection/testing split (combined with the run seed).")
    batch_tokens: int = Field(128, ge=1, description=(
        "Tokens per forward/backward pass of the IG engine (under 'last' one token per layer and step, under "
        "'prompt' a whole prompt); halves itself on CUDA out-of-memory."))
    balance_labels: bool = Field(False, description=(
        "Use as many correctly answered questions with the correct answer at A as at B (a seeded subsample of the "
        "larger group), so that D cannot come from a preference for one label. Off in the paper's protocol."))
    save_attributions: bool = Field(False, description="Copy every kept question's attributions (safetensors) into the run directory.")


@dataclass
class Questions:
    """The dataset with each question's answer placement, prompt, and the unedited model's f values."""

    examples: list[Example]
    correct_is_b: np.ndarray  # [N] 0: the correct answer is A, 1: it is B
    prompts: list[str]
    p_correct: np.ndarray
    p_incorrect: np.ndarray

    @property
    def kept(self) -> np.ndarray:
        """Indices of the questions the unedited model answers correctly (the manipulation check)."""
        return np.flatnonzero(self.p_correct > self.p_incorrect)


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def t_score(t: float) -> float:
    """A candidate's score: its t statistic, finite (undefined, for D constant 0, -> 0; +-inf, for D constant and
    non-zero, -> the largest float of that sign), so the ranking agrees with the tests' verdicts."""
    return float(np.nan_to_num(t, nan=0.0))


class IGTruthNeurons(Locator):
    name = "ig-truth-neurons"
    description = "Truth neurons: integrated-gradients attribution differences, split-half selection, Bonferroni t-tests."
    Config = IGTruthNeuronsConfig
    scored = True

    def sites(self, shape) -> list[tuple[str, int]]:
        layers = self.config.layers if self.config.layers is not None else list(range(shape.n_layers))
        bad = [l for l in layers if not 0 <= l < shape.n_layers]
        if bad:
            raise UserError(f"ig-truth-neurons: layers: {bad[0]} is out of range (model has {shape.n_layers} layers)")
        return [(kind, l) for kind in self.config.kinds for l in sorted(set(layers))]

    def locate(self, context) -> ComponentSet:
        sites = self.sites(context.shape)
        questions = self.questions(context)
        kept = self.used(context, questions)
        if len(kept) < 3:
            raise UserError(f"ig-truth-neurons: only {len(kept)} of {len(questions.examples)} questions are answered "
                            f"correctly by the unedited model{' (after balance_labels)' if self.config.balance_labels else ''}; "
                            "the split-half protocol needs at least 3 (use more questions)")
        attributions, paths, engine = self.attributions(context, questions, kept, sites)
        selection, testing = split_halves(len(kept), context.rng("ig-truth-neurons-split", self.config.split_seed))
        table = self.select(context, sites, attributions, selection, testing)
        returned = [row for row in table if row["truth_neuron"] or self.config.keep == "candidates"]
        found = ComponentSet((row["name"] for row in returned), {row["name"]: row["score"] for row in returned})
        halves = {int(kept[i]): "selection" for i in selection} | {int(kept[i]): "testing" for i in testing}
        self.write(context, questions, halves, attributions, table, engine)
        if self.config.save_attributions:
            for i, path in zip(kept, paths):
                name = re.sub(r"[^A-Za-z0-9_.-]", "_", str(questions.examples[i].id))
                context.write_output(f"attributions-{context.arm}/{name}.safetensors", path.read_bytes())
        return found

    def questions(self, context) -> Questions:
        """Seeded answer placement, the prompts, and P(label)+P(lowercase) of both answers (unedited model)."""
        cfg, model = self.config, context.model
        examples = context.dataset(cfg.dataset)
        correct_is_b = context.rng("ig-truth-neurons-placement", cfg.dataset).integers(0, 2, size=len(examples))
        both = binary_prompts(model, cfg, examples)  # per question: correct as A, then correct as B
        prompts = [both[2 * i + int(b)] for i, b in enumerate(correct_is_b)]
        with context.progress.task(f"{context.arm}: manipulation check", total=len(prompts)) as advance:
            probs = label_probabilities(model, prompts, [], advance).numpy()
        rows = np.arange(len(examples))
        return Questions(examples, correct_is_b, prompts, probs[rows, correct_is_b], probs[rows, 1 - correct_is_b])

    def used(self, context, questions: Questions) -> np.ndarray:
        """The correctly answered questions, balanced between correct-at-A and correct-at-B when asked."""
        kept = questions.kept
        if not self.config.balance_labels:
            return kept
        groups = [kept[questions.correct_is_b[kept] == b] for b in (0, 1)]
        n = min(len(g) for g in groups)
        rng = context.rng("ig-truth-neurons-balance", self.config.dataset)
        return np.sort(np.concatenate([rng.choice(g, n, replace=False) for g in groups]))

    def attributions(self, context, questions: Questions, kept: np.ndarray, sites) -> tuple[list[Attribution], list, dict]:
        """IG of the questions ``kept`` (columns: correct, incorrect), from the on-disk cache where present."""
        cfg, model = self.config, context.model
        labels = [[model.answer_token_ids(t) for t in pair] for pair in (("A", "a"), ("B", "b"))]
        cache = AttributionCache(context.cache_dir / "ig-attributions")
        identity = model.identity()
        settings = {"steps": cfg.steps, "positions": cfg.positions, "quadrature": QUADRATURE, "baseline": BASELINE, "sites": sites}
        out, paths, batch_tokens, engine = [], [], cfg.batch_tokens, {}
        with context.progress.task(f"{context.arm}: integrated gradients", total=len(kept)) as advance:
            for i in kept:
                b = int(questions.correct_is_b[i])
                groups = [labels[b], labels[1 - b]]
                key = cache.key(identity, questions.prompts[i], groups, settings)
                found = cache.get(key)
                if found is None:
                    found, info = integrated_gradients(model, questions.prompts[i], label_objective(groups), sites,
                                                       cfg.steps, cfg.positions, batch_tokens)
                    batch_tokens = min(batch_tokens, info.batch_tokens)  # keep an out-of-memory backoff
                    engine[info.layout] = engine.get(info.layout, 0) + 1
                    cache.put(key, found, {"example": str(questions.examples[i].id), "model": model.name})
                out.append(found)
                paths.append(cache.path(key))
                advance(1)
        return out, paths, {"computed_by_layout": engine, "from_cache": len(out) - sum(engine.values()),
                            "batch_tokens_used": batch_tokens}

    def select(self, context, sites, attributions: list[Attribution], selection, testing) -> list[dict]:
        """Candidates from the selection half per layer type, t-tests on the testing half: one row per candidate."""
        cfg, shape = self.config, context.shape
        chosen, shares, d_test = [], [], []
        for kind in cfg.kinds:
            kind_sites = [s for s in sites if s[0] == kind]
            components = [c for s in kind_sites for c in site_components(s, shape)]
            # D per question: [kept questions, neurons of every chosen layer of this type]
            d = torch.stack([torch.cat([a.attributions[s][0] - a.attributions[s][1] for s in kind_sites])
                             for a in attributions]).numpy()
            columns, share = candidates(d[selection], cfg.adaptive_threshold, cfg.share_threshold)
            chosen += [components[c] for c in columns]
            shares += share[columns].tolist()
            d_test.append(d[testing][:, columns])
        result = significance(np.concatenate(d_test, axis=1), cfg.alpha)
        return [{"name": c.name, "kind": c.kind, "layer": c.layer, "index": c.index, "dim": c.dim,
                 "share": shares[j], "mean_d": float(result.mean[j]), "t": _finite(result.t[j]), "score": t_score(result.t[j]),
                 "p": float(result.p[j]),
                 "p_bonferroni": float(result.p_bonferroni[j]), "truth_neuron": bool(result.significant[j])}
                for j, c in enumerate(chosen)]

    def write(self, context, questions: Questions, halves: dict, attributions: list[Attribution], table, engine) -> None:
        cfg = self.config
        deltas = [a.completeness_delta() for a in attributions]
        delta = torch.stack([v.abs() for d in deltas for v in d.values()])
        gap = torch.stack([(a.value - a.zeroed[s]).abs() for a in attributions for s in a.attributions])
        by_site = {s: torch.stack([d[s].abs().max() for d in deltas]) for s in deltas[0]}
        worst = sorted(by_site, key=lambda s: -float(by_site[s].median()))[:WORST_SITES]
        counts = {"questions": len(questions.examples), "answered_correctly": len(questions.kept),
                  "used": len(halves),
                  "selection": sum(h == "selection" for h in halves.values()),
                  "testing": sum(h == "testing" for h in halves.values()), "candidates": len(table),
                  "truth_neurons": sum(r["truth_neuron"] for r in table)}
        for kind in cfg.kinds:
            counts[f"candidates_{kind}"] = sum(r["kind"] == kind for r in table)
            counts[f"truth_neurons_{kind}"] = sum(r["kind"] == kind and r["truth_neuron"] for r in table)
        results = {
            "method": self.name, "arm": context.arm, "model": context.model.name,
            "settings": {**cfg.model_dump(mode="json"), "quadrature": QUADRATURE, "baseline": BASELINE, "targets": TARGETS,
                         "answer_placement": "seeded per question from the run seed and the dataset name",
                         "split": "seeded permutation (run seed, split_seed); selection = first half (n // 2)",
                         "run_seed": context.seed, "engine": engine},
            "counts": counts,
            "completeness": {"description": "per question, site and target: |sum_n Attr(n) - (f(x) - f(site zeroed))|, "
                                            "the right Riemann sum's error (shrinks as steps grow)",
                             "mean_abs_delta": float(delta.mean()), "max_abs_delta": float(delta.max()),
                             "mean_abs_f_gap": float(gap.mean()), "mean_f": float(torch.stack([a.value for a in attributions]).mean()),
                             "worst_sites": [{"site": f"{k}:{l}", "median_abs_delta": float(by_site[k, l].median()),
                                              "max_abs_delta": float(by_site[k, l].max())} for k, l in worst]},
            "neurons": table,
            "questions": [{"id": e.id, "correct_label": "AB"[int(questions.correct_is_b[i])], "p_correct": float(questions.p_correct[i]),
                           "p_incorrect": float(questions.p_incorrect[i]), "half": halves.get(i)}
                          for i, e in enumerate(questions.examples)],
        }
        context.write_output(f"truth_neurons-{context.arm}.json", results)


@hookimpl
def loctest_report_sections(results) -> str:
    """The report's view of every ``ig-truth-neurons`` arm: counts, answer balance, completeness, the neurons."""
    parts = []
    for arm, data in results.data["arms"].items():
        path = results.run_dir / f"truth_neurons-{arm}.json"
        if (data.get("locator") or {}).get("plugin") != IGTruthNeurons.name or not path.exists():
            continue
        found = json.loads(path.read_text())
        counts, completeness = found["counts"], found["completeness"]
        kept = [q for q in found["questions"] if q["half"]]
        on_a = sum(q["correct_label"] == "A" for q in kept)
        kinds = found["settings"]["kinds"]
        lines = [
            f"## Truth neurons: {arm}", "",
            f"- {counts['answered_correctly']} of {counts['questions']} questions passed the manipulation check; "
            f"{len(kept)} were used ({on_a} with the correct answer at A, {len(kept) - on_a} at B"
            f"{', balanced' if found['settings'].get('balance_labels') else ''}); {counts['selection']} selected "
            f"candidates, {counts['testing']} tested them.",
            "- candidates / truth neurons: " + ", ".join(
                f"{kind} {counts[f'candidates_{kind}']} / {counts[f'truth_neurons_{kind}']}" for kind in kinds)
            + f" (t = {found['settings']['adaptive_threshold']}%, p = {found['settings']['share_threshold']}%, "
              f"Bonferroni alpha {found['settings']['alpha']}).",
            f"- completeness (m = {found['settings']['steps']}): mean |sum Attr - (f(x) - f(zeroed))| "
            f"{completeness['mean_abs_delta']:.2g}, largest {completeness['max_abs_delta']:.2g}, against a mean "
            f"|f(x) - f(zeroed)| of {completeness['mean_abs_f_gap']:.2g} and a mean f of {completeness['mean_f']:.2g}. "
            "Worst layers (median over questions of the larger target's error): " + ", ".join(
                f"{w['site']} {w['median_abs_delta']:.2g}" for w in completeness["worst_sites"])
            + ". Where that error is comparable to f, the layer's attributions are unreliable: raise `steps`.",
        ]
        chosen = sorted((r for r in found["neurons"] if r["truth_neuron"]), key=lambda r: r["p_bonferroni"])
        if chosen:
            lines += ["", "| neuron | mean D | t | p (Bonferroni) | share in selection half |", "|---|---|---|---|---|"]
            lines += [f"| `{r['name']}` | {r['mean_d']:.3g} | {r['t'] if r['t'] is None else round(r['t'], 2)} | "
                      f"{r['p_bonferroni']:.2g} | {r['share']:.0%} |" for r in chosen[:REPORT_ROWS]]
            if len(chosen) > REPORT_ROWS:
                lines.append(f"\n{len(chosen) - REPORT_ROWS} more in `truth_neurons-{arm}.json`.")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)
