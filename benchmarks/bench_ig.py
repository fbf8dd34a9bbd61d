"""Integrated gradients for truth neurons: loctest's engine vs Captum LayerIntegratedGradients, in one run.

Workload (the issue's): the embedded SmolLM2-135M-Instruct, TruthfulQA binary-choice prompts, every MLP and
attention layer (30 + 30 sites), m = 20 right-Riemann steps, both targets f(T|t) and f(T|f).

- engine: ``truth_neurons.ig.integrated_gradients`` on each backend, all 60 sites, both targets, self-checks
  included (every prompt: prefill and token copies; the first timed prompt also the one-time check of one
  layer against the reference).
- baseline: Captum ``LayerIntegratedGradients`` on the Hugging Face model, one call per layer and target
  (the layer's input = the MLP neurons / attention neurons; the baseline input zeroes that input at the last
  position, so Captum integrates exactly the engine's path). Two variants: the usual forward (logits at every
  position) and a faster one computing the last position's logits only. Captum over all 60 layers takes
  about half an hour per prompt here, so it runs on ``--captum-layers`` (spread over depth, MLP and attention
  each) and the per-example cost is extrapolated as mean seconds per (layer, target) x 60 x 2.
- correctness: engine vs the straightforward reference (``reference_integrated_gradients``, one full
  forward/backward per site, step and target) on ``--reference-layers`` of the first prompt, and vs Captum on
  every Captum site; error = max |a - b| / max |b| per site and target.
- scaling: engine vs reference on tiny random Llama models with 4, 8, 16 and 32 layers (reference on two
  sites, extrapolated).

Run: ``python benchmarks/bench_ig.py`` (about 40 minutes on 2 busy CPU cores). Prints a table and writes
``benchmarks/results/ig.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from rich.console import Console
from rich.markup import escape
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from captum.attr import LayerIntegratedGradients  # noqa: E402

from conftest import make_model  # noqa: E402
from loctest.models import EMBEDDED_MODEL, ModelConfig, load_model  # noqa: E402
from loctest.cache import NUMERIC_PACKAGES, package_versions  # noqa: E402
from loctest.selfcheck import SelfChecks  # noqa: E402
from loctest_plugins.datasets.truthfulqa import TruthfulQABinary  # noqa: E402
from loctest_plugins.common.binary_prompts import BinaryPromptConfig, binary_prompts  # noqa: E402
from loctest_plugins.truth_neurons.ig import (integrated_gradients, label_objective,  # noqa: E402
                                              reference_integrated_gradients)

STEPS = 20
console = Console()


def workload(model, n: int):
    """The first ``n`` TruthfulQA questions, correct answer as A for even, as B for odd ones; token groups
    [correct label, incorrect label]."""
    examples = TruthfulQABinary().load()[:n]
    prompts = binary_prompts(model, BinaryPromptConfig(), examples)
    labels = [[model.answer_token_ids(t) for t in pair] for pair in (("A", "a"), ("B", "b"))]
    return [(prompts[2 * i + i % 2], [labels[i % 2], labels[1 - i % 2]]) for i in range(n)]


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


class CaptumBaseline:
    """Captum LayerIntegratedGradients on one layer's input (down_proj: MLP neurons, o_proj: attention
    neurons). The baseline input is the prompt's ids negated (-id - 1): the forward function maps them back
    and zeroes the layer's input at the last position, so the path runs from that zeroed activation.
    ``last_logits_only`` computes the vocabulary projection at the last position only (faster than the usual
    full-logits forward)."""

    def __init__(self, model: torch.nn.Module, last_logits_only: bool):
        self.model = model
        self.keep = {"logits_to_keep": 1} if last_logits_only else {}
        self.zero_last = False

    def module(self, site) -> torch.nn.Module:
        kind, layer = site
        block = self.model.model.layers[layer]
        return block.mlp.down_proj if kind == "mlp" else block.self_attn.o_proj

    def forward(self, ids: torch.Tensor, group: list[int]) -> torch.Tensor:
        self.zero_last = bool((ids < 0).all())
        ids = torch.where(ids < 0, -ids - 1, ids)
        probs = self.model(input_ids=ids, **self.keep).logits[:, -1].float().softmax(-1)
        return probs[:, group].sum(-1)

    def attribute(self, ids: torch.Tensor, site, group: list[int]) -> torch.Tensor:
        """[width] attributions at the last position for one site and target."""
        module = self.module(site)

        def zero_last(mod, args):
            if self.zero_last:
                x = args[0].clone()
                x[:, -1] = 0
                return (x,)
        handle = module.register_forward_pre_hook(zero_last)
        try:
            lig = LayerIntegratedGradients(self.forward, module)
            attr = lig.attribute(ids, baselines=-ids - 1, additional_forward_args=(group,), n_steps=STEPS,
                                 method="riemann_right", attribute_to_layer_input=True)
        finally:
            handle.remove()
        return attr[0, -1].detach().float()


@contextmanager
def timed(record: dict):
    """Adds the block's wall-clock and process CPU seconds to ``record`` (with one torch thread, CPU time is
    the compute the block got, whatever else shares the machine)."""
    wall, cpu = time.perf_counter(), time.process_time()
    yield record
    record["wall_s"] = time.perf_counter() - wall
    record["cpu_s"] = time.process_time() - cpu


def mean_of(records: list[dict]) -> dict:
    return {k: statistics.mean(r[k] for r in records) for k in ("wall_s", "cpu_s")}


def embedded(args) -> dict:
    backends = {name: make_model(name, EMBEDDED_MODEL) for name in args.backends}
    first = next(iter(backends.values()))
    sites = [(kind, l) for kind in ("mlp", "attn") for l in range(first.shape.n_layers)]
    prompts = workload(first, args.prompts)
    lengths = [first.encode([p]).input_ids.shape[1] for p, _ in prompts]
    out = {"prompts": len(prompts), "prompt_tokens": lengths, "sites": len(sites), "steps": STEPS, "targets": 2,
           "batch_tokens": args.batch_tokens, "engine": {}, "captum": {}}

    engine_attr = {}
    for name, model in backends.items():
        integrated_gradients(model, prompts[0][0], label_objective(prompts[0][1]), sites[:1], 2)  # warm-up
        model.backend.checks = SelfChecks()  # the timed prompts pay for every self-check, the first for the one-time ones
        runs = []
        for i, (prompt, groups) in enumerate(prompts):
            with timed({"prompt": i}) as run:
                attribution, info = integrated_gradients(model, prompt, label_objective(groups), sites, STEPS, "last", args.batch_tokens)
            runs.append(run | {"layout": info.layout})
            engine_attr.setdefault(i, attribution)
            console.print(f"engine {escape(f'[{name}]')} prompt {i} ({lengths[i]} tokens, {info.layout}): "
                          f"{run['wall_s']:.1f} s wall, {run['cpu_s']:.1f} s CPU")
        out["engine"][name] = {"runs": runs, "per_example": mean_of(runs), "self_checks": model.checks.summary(),
                               "per_example_after_the_first": mean_of(runs[1:]) if len(runs) > 1 else None}
    out["completeness_max_abs_delta"] = max(float(v.abs().max()) for a in engine_attr.values() for v in a.completeness_delta().values())

    model = load_model(ModelConfig(name=EMBEDDED_MODEL, device="cpu")).instantiate()
    captum_sites = [(kind, l) for l in args.captum_layers for kind in ("mlp", "attn")]
    for variant, last_only in (("full_logits", False), ("last_logits_only", True)):
        captum = CaptumBaseline(model, last_only)
        calls, errors = [], []
        for i, (prompt, groups) in enumerate(prompts):
            ids = first.encode([prompt]).input_ids
            for site in captum_sites:
                for t in range(2):
                    with timed({"prompt": i, "site": f"{site[0]}:{site[1]}", "target": t}) as call:
                        attr = captum.attribute(ids, site, groups[t])
                    calls.append(call)
                    errors.append(relative_error(engine_attr[i].attributions[site][t], attr))
                console.print(f"captum {escape(f'[{variant}]')} prompt {i} {site[0]}:{site[1]}: "
                              f"{calls[-1]['wall_s'] + calls[-2]['wall_s']:.1f} s wall for 2 targets")
        per_call = mean_of(calls)
        out["captum"][variant] = {"layers": args.captum_layers, "calls": calls, "per_layer_and_target": per_call,
                                  "per_example_extrapolated": {k: v * len(sites) * 2 for k, v in per_call.items()},
                                  "max_relative_error_vs_engine": max(errors)}

    reference_sites = [(kind, l) for l in args.reference_layers for kind in ("mlp", "attn")]
    prompt, groups = prompts[0]
    with timed({"layers": args.reference_layers}) as record:
        reference = reference_integrated_gradients(first, prompt, label_objective(groups), reference_sites, STEPS)
    record["max_relative_error_vs_engine"] = max(relative_error(engine_attr[0].attributions[s][t], reference.attributions[s][t])
                                                 for s in reference_sites for t in range(2))
    out["reference"] = record
    for e in out["engine"].values():
        e["speedup_vs_captum"] = {variant: {k: c["per_example_extrapolated"][k] / e["per_example"][k] for k in ("wall_s", "cpu_s")}
                                  for variant, c in out["captum"].items()}
    return out


def scaling(args) -> list[dict]:
    """Engine cost per example vs layer count (a second prompt: the first also pays for the backend's one-time
    self-check, recorded apart); the reference runs on the first MLP and the last attention site and is
    extrapolated to all sites (its cost per site grows linearly with depth, so the two average out)."""
    rows = []
    for layers in args.tiny_layers:
        model = make_model(args.backends[0], "tiny-llama", tiny_layers=layers)
        prompt, groups = workload(model, 1)[0]
        sites = [(kind, l) for kind in ("mlp", "attn") for l in range(layers)]
        sampled = [("mlp", 0), ("attn", layers - 1)]
        objective = label_objective(groups)
        with timed({}) as first:  # pays for the one-time self-check ("ig-reference") of the model
            integrated_gradients(model, prompt, objective, sites, STEPS, "last", args.batch_tokens)
        with timed({}) as engine:
            attribution, _ = integrated_gradients(model, prompt, objective, sites, STEPS, "last", args.batch_tokens)
        with timed({}) as ref:
            reference = reference_integrated_gradients(model, prompt, objective, sampled, STEPS)
        reference_s = ref["cpu_s"] / len(sampled) * len(sites)
        error = max(relative_error(attribution.attributions[s][t], reference.attributions[s][t]) for s in sampled for t in range(2))
        rows.append({"layers": layers, "sites": len(sites), "prompt_tokens": model.encode([prompt]).input_ids.shape[1],
                     "engine_cpu_s": engine["cpu_s"], "engine_wall_s": engine["wall_s"], "first_prompt_cpu_s": first["cpu_s"],
                     "reference_cpu_s_extrapolated": reference_s, "speedup": reference_s / engine["cpu_s"],
                     "max_relative_error": error})
        console.print(f"tiny-llama {layers} layers: engine {engine['cpu_s']:.2f} s, reference {reference_s:.1f} s (extrapolated), CPU")
    return rows


def show(results: dict) -> None:
    if "embedded" in results:
        e = results["embedded"]
        table = Table(title=f"IG, {EMBEDDED_MODEL}: {e['sites']} sites x {e['steps']} steps x 2 targets, {e['prompts']} prompts "
                            f"(CPU seconds, wall in brackets)")
        for col in ("method", "s / example", "examples / s", "speedup", "max rel. error"):
            table.add_column(col, justify="right")
        for variant, c in e["captum"].items():
            per = c["per_example_extrapolated"]
            table.add_row(f"Captum LayerIG per layer, {variant.replace('_', ' ')} (from layers {c['layers']})",
                          f"{per['cpu_s']:.0f} ({per['wall_s']:.0f})", f"{1 / per['cpu_s']:.1e}", "1x",
                          f"{c['max_relative_error_vs_engine']:.1e} vs engine")
        for name, r in e["engine"].items():
            per = r["per_example"]
            ratios = ", ".join(f"{v['cpu_s']:.0f}x ({v['wall_s']:.0f}x) vs {k.replace('_', ' ')}" for k, v in r["speedup_vs_captum"].items())
            table.add_row(escape(f"loctest engine [{name}]"), f"{per['cpu_s']:.1f} ({per['wall_s']:.1f})", f"{1 / per['cpu_s']:.3f}",
                          ratios, f"{e['reference']['max_relative_error_vs_engine']:.1e} vs reference")
        console.print(table)
    if "scaling" in results:
        table = Table(title="Cost vs layer count, tiny-llama (random weights), all MLP + attention sites, m = 20, 2 targets (CPU s)")
        for col in ("layers", "sites", "tokens", "engine s", "reference s (extrap.)", "speedup", "max rel. error"):
            table.add_column(col, justify="right")
        for r in results["scaling"]:
            table.add_row(str(r["layers"]), str(r["sites"]), str(r["prompt_tokens"]), f"{r['engine_cpu_s']:.2f}",
                          f"{r['reference_cpu_s_extrapolated']:.1f}", f"{r['speedup']:.0f}x", f"{r['max_relative_error']:.1e}")
        console.print(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=3, help="TruthfulQA prompts for the embedded-model comparison")
    parser.add_argument("--backends", nargs="+", default=["transformer-lens", "nnsight"])
    parser.add_argument("--batch-tokens", type=int, default=128)
    parser.add_argument("--captum-layers", type=int, nargs="+", default=[0, 15, 29])
    parser.add_argument("--reference-layers", type=int, nargs="+", default=[15])
    parser.add_argument("--tiny-layers", type=int, nargs="+", default=[4, 8, 16, 32])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: CPU time measures the compute each method got)")
    parser.add_argument("--skip-embedded", action="store_true")
    parser.add_argument("--skip-scaling", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "ig.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    results = json.loads(args.out.read_text()) if args.out.exists() else {}  # a skipped part keeps its earlier results
    for part, measure, skipped in (("embedded", embedded, args.skip_embedded), ("scaling", scaling, args.skip_scaling)):
        if not skipped:
            environment = {"versions": package_versions(NUMERIC_PACKAGES + ("captum",)), "threads": torch.get_num_threads(),
                           "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                           "load_average_start": os.getloadavg()}
            results[part] = measure(args)
            results[f"{part}_environment"] = environment | {"load_average_end": os.getloadavg()}
    results.pop("environment", None)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1))
    show(results)
    console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
