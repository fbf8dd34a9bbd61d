"""``ig-truth-neurons``: truth neurons by integrated gradients (Li et al. 2025, "Truth Neurons").

For every question the binary-choice prompt gets the correct answer as A or B (a seeded draw per question);
f(T|t) and f(T|f) are P(label)+P(lowercase label) of the correct and the incorrect answer at the next token.
Questions the unedited model gets wrong are dropped (manipulation check). Per layer, integrated gradients
from the zero baseline give every MLP and attention neuron Attr_t and Attr_f; D = Attr_t - Attr_f. A seeded
half of the questions selects candidates (adaptive and share thresholds), the other half tests them
(one-sided t-tests of D > 0, Bonferroni-corrected); the survivors are returned. Everything that decides the
numbers, the counts and a table of the candidates go to ``truth_neurons-<arm>.json`` in the run directory.
"""
from __future__ import annotations

import json
import re
import shutil
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from loctest import ComponentSet, Locator, PluginConfig
from loctest.errors import UserError

from ..scorers.binary_choice import SYSTEM_PROMPT, USER_PROMPT, binary_prompts, label_probabilities
from ..truth_neurons.cache import AttributionCache, model_fingerprint
from ..truth_neurons.ig import integrated_gradients, label_objective, site_components
from ..truth_neurons.selection import candidates, significance, split_halves

QUADRATURE = "right Riemann sum: alpha = k/m, k = 1..m"
BASELINE = "zero activation at the scaled positions"


class IGTruthNeuronsConfig(PluginConfig):
    dataset: str = Field("truthfulqa", description="Name of a dataset declared in the recipe's [datasets].")
    adaptive_threshold: float = Field(..., gt=0, le=100, description=(
        "t (%): a neuron is salient in an example when its D exceeds t % of that example's largest D over all "
        "layers of its type. Model-dependent and required (the paper used 1 to 25; see docs/truth-neurons.md)."))
    share_threshold: float = Field(40.0, gt=0, le=100, description="p (%): keep neurons salient in at least p % of the selection-half examples (paper: 40).")
    alpha: float = Field(0.05, gt=0, lt=1, description="Significance level of the Bonferroni-corrected one-sided t-tests.")
    steps: int = Field(20, ge=1, description="m: Riemann-sum steps of integrated gradients (paper: 20).")
    positions: Literal["last", "prompt"] = Field("last", description=(
        "Positions scaled from the baseline: 'last' (the last prompt token, the paper's setting) or 'prompt' "
        "(every prompt token; a neuron's attribution is summed over positions; much slower)."))
    kinds: list[Literal["mlp", "attn"]] = Field(["mlp", "attn"], min_length=1, description="Layer types: 'mlp' (MLP neurons) and/or 'attn' (attention neurons).")
    layers: list[int] | None = Field(None, description="Layers to attribute (default: every layer).")
    split_seed: int = Field(0, description="Seed of the selection/testing split (combined with the run seed).")
    batch_rows: int = Field(128, ge=1, description="Rows per forward/backward pass of the IG engine (one row per layer and step); halves itself on CUDA out-of-memory.")
    save_attributions: bool = Field(False, description="Copy every kept example's attributions (safetensors) into the run directory.")
    system_prompt: str = Field(SYSTEM_PROMPT, description="System message of the binary-choice prompt (the paper's by default).")
    user_prompt: str = Field(USER_PROMPT, description="User message with {question}, {answer_a}, {answer_b}.")


class IGTruthNeurons(Locator):
    name = "ig-truth-neurons"
    description = "Truth neurons: integrated-gradients attribution differences, split-half selection, Bonferroni t-tests."
    Config = IGTruthNeuronsConfig

    def sites(self, shape) -> list[tuple[str, int]]:
        layers = self.config.layers if self.config.layers is not None else list(range(shape.n_layers))
        bad = [l for l in layers if not 0 <= l < shape.n_layers]
        if bad:
            raise UserError(f"ig-truth-neurons: layers: {bad[0]} is out of range (model has {shape.n_layers} layers)")
        return [(kind, l) for kind in self.config.kinds for l in sorted(set(layers))]

    def locate(self, context) -> ComponentSet:
        cfg, backend = self.config, context.backend
        examples = context.dataset(cfg.dataset)
        order = context.rng("ig-truth-neurons-placement", cfg.dataset).integers(0, 2, size=len(examples))  # 1: correct is B
        prompts = [p for i, p in enumerate(binary_prompts(backend, cfg, examples)) if i % 2 == order[i // 2]]
        with context.progress.task(f"{context.arm}: manipulation check", total=len(prompts)) as advance:
            probs = label_probabilities(backend, prompts, [], advance).numpy()
        rows = np.arange(len(examples))
        p_correct, p_incorrect = probs[rows, order], probs[rows, 1 - order]
        kept = np.flatnonzero(p_correct > p_incorrect)
        if len(kept) < 3:
            raise UserError(f"ig-truth-neurons: only {len(kept)} of {len(examples)} questions are answered correctly "
                            f"by the unedited model; the split-half protocol needs at least 3 (use more questions)")

        sites = self.sites(backend.shape)
        labels = [[backend.answer_token_ids(t) for t in pair] for pair in (("A", "a"), ("B", "b"))]
        cache = AttributionCache(context.cache_dir / "ig-attributions")
        fingerprint = model_fingerprint(backend)
        settings = {"steps": cfg.steps, "positions": cfg.positions, "quadrature": QUADRATURE, "baseline": BASELINE, "sites": sites}
        attributions, paths, batch_rows = [], [], cfg.batch_rows
        with context.progress.task(f"{context.arm}: integrated gradients", total=len(kept)) as advance:
            for i in kept:
                groups = [labels[order[i]], labels[1 - order[i]]]  # columns: correct, incorrect
                key = cache.key(fingerprint, prompts[i], groups, settings)
                found = cache.get(key)
                if found is None:
                    found, batch_rows = integrated_gradients(backend, prompts[i], label_objective(groups), sites,
                                                             cfg.steps, cfg.positions, batch_rows)
                    cache.put(key, found, {"example": examples[i].id, "model": backend.loaded.name})
                attributions.append(found)
                paths.append(cache.path(key))
                advance(1)

        # D per layer type: [kept examples, neurons of all chosen layers of that type]
        columns = {kind: [(s, c) for s in sites if s[0] == kind for c in site_components(s, backend.shape)] for kind in cfg.kinds}
        d = {kind: torch.stack([torch.cat([a.attributions[s][0] - a.attributions[s][1] for s in sites if s[0] == kind])
                                for a in attributions]).numpy() for kind in cfg.kinds}
        selection, testing = split_halves(len(kept), context.rng("ig-truth-neurons-split", cfg.split_seed))
        chosen, shares = [], []
        for kind in cfg.kinds:
            cols, share = candidates(d[kind][selection], cfg.adaptive_threshold, cfg.share_threshold)
            chosen += [(kind, c) for c in cols]
            shares += list(share[cols])
        tested = np.stack([d[kind][testing, c] for kind, c in chosen], axis=1) if chosen else np.zeros((len(testing), 0))
        result = significance(tested, cfg.alpha)

        table = []
        for j, (kind, c) in enumerate(chosen):
            site, component = columns[kind][c]
            table.append({"name": component.name, "kind": kind, "layer": site[1], "index": component.index,
                          "dim": component.dim, "share": float(shares[j]), "mean_d": float(result.mean[j]),
                          "t": float(result.t[j]), "p": float(result.p[j]), "p_bonferroni": float(result.p_bonferroni[j]),
                          "truth_neuron": bool(result.significant[j])})
        found = ComponentSet(row["name"] for row in table if row["truth_neuron"])
        self._write(context, examples, order, p_correct, p_incorrect, kept, selection, testing, attributions,
                    paths, table, found, settings, batch_rows)
        return found

    def _write(self, context, examples, order, p_correct, p_incorrect, kept, selection, testing, attributions,
               paths, table, found, settings, batch_rows) -> None:
        cfg = self.config
        half = {int(kept[i]): "selection" for i in selection} | {int(kept[i]): "testing" for i in testing}
        deltas = [a.completeness_delta() for a in attributions]
        gaps = [{s: a.value - a.zeroed[s] for s in a.attributions} for a in attributions]
        delta = torch.stack([v.abs() for per in deltas for v in per.values()])
        gap = torch.stack([v.abs() for per in gaps for v in per.values()])
        results = {
            "method": "ig-truth-neurons", "arm": context.arm, "model": context.backend.loaded.name,
            "settings": {**cfg.model_dump(mode="json"), **{k: v for k, v in settings.items() if k != "sites"},
                         "targets": "f(T|t) = P(correct label) + P(lowercase); f(T|f) likewise for the incorrect label",
                         "answer_placement": "seeded per question: run seed + dataset name",
                         "run_seed": context.seed, "batch_rows_used": batch_rows},
            "counts": {"questions": len(examples), "answered_correctly": len(kept), "selection": len(selection),
                       "testing": len(testing), "candidates": len(table),
                       "candidates_by_kind": {k: sum(r["kind"] == k for r in table) for k in cfg.kinds},
                       "truth_neurons": len(found),
                       "truth_neurons_by_kind": {k: sum(r["kind"] == k and r["truth_neuron"] for r in table) for k in cfg.kinds}},
            "completeness": {"description": "per example, site and target: |sum_n Attr(n) - (f(x) - f(site zeroed))|",
                             "mean_abs_delta": float(delta.mean()), "max_abs_delta": float(delta.max()),
                             "mean_abs_f_gap": float(gap.mean()),
                             "relative": float(delta.mean() / gap.mean()) if float(gap.mean()) > 0 else 0.0},
            "neurons": table,
            "examples": [{"id": e.id, "correct_label": "AB"[order[i]], "p_correct": float(p_correct[i]),
                          "p_incorrect": float(p_incorrect[i]), "half": half.get(i)} for i, e in enumerate(examples)],
        }
        context.run_dir.mkdir(parents=True, exist_ok=True)
        (context.run_dir / f"truth_neurons-{context.arm}.json").write_text(json.dumps(results, indent=1))
        if cfg.save_attributions:
            folder = context.run_dir / f"attributions-{context.arm}"
            folder.mkdir(parents=True, exist_ok=True)
            for i, path in zip(kept, paths):
                shutil.copyfile(path, folder / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', str(examples[i].id))}.safetensors")
