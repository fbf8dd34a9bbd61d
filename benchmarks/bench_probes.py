"""Benchmark: fitting every head's truthfulness probe at once (``probe-heads``) against ITI's per-head
scikit-learn loop, on the same activations, in the same run.

The activations are real: each head's output at the last token of "Q: ...\\nA: answer" for every answer of
the first ``--questions`` TruthfulQA training questions (60% split), from the embedded SmolLM2-135M-Instruct
(30 layers x 9 heads of 64). Probes train on 80% of the questions and are scored on the other 20%, as in the
locator. The baseline is ITI's loop: ``LogisticRegression(random_state=0, max_iter=1000)`` per head.

    python benchmarks/bench_probes.py [--questions 490] [--repeats 3] [--saved acts.pt] [--device cuda]

Prints the wall-clock time of both (best of ``--repeats``), the speed-up, and how far the validation
accuracies and the top-16 heads agree. Other processes share the CPU: the load average is printed with the
numbers, and both sides run under the same conditions, interleaved.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from loctest.model import Model
from loctest.models import ModelConfig, load_model
from loctest.plugin_manager import create_host
from loctest.recipe import DatasetSelection
from loctest.runner import select
from loctest_plugins.datasets.truthfulqa_mc import TruthfulQAMC
from loctest_plugins.common.qa import QA_PROMPT, labelled_texts
from loctest_plugins.locators.probe_heads import fit_logistic_probes, question_split


def activations(n_questions: int, saved: Path | None):
    """[heads, N, d_head] activations, labels [N] and the validation mask [N] (kept in ``saved`` if given)."""
    examples = select(TruthfulQAMC().load(), DatasetSelection(split="train", split_fraction=0.6))[:n_questions]
    texts, truthful, question = labelled_texts(examples, QA_PROMPT)
    if saved and saved.exists():
        x = torch.load(saved)
        if x.shape[1] != len(texts):
            raise SystemExit(f"{saved} holds {x.shape[1]} texts, not the {len(texts)} of {n_questions} questions")
    else:
        model = create_host().registry("model").get("transformer-lens")(load_model(ModelConfig(device="cpu")))
        sites = [("attn", layer) for layer in range(model.shape.n_layers)]
        started = time.perf_counter()
        captured = model.capture_last(texts, sites)
        print(f"collected {len(texts)} texts x {len(sites)} layers in {time.perf_counter() - started:.1f} s")
        x = torch.stack([captured[s] for s in sites], 1).view(len(texts), -1, model.shape.d_head).transpose(0, 1)
        if saved:
            torch.save(x.contiguous(), saved)
    val = question_split(len(examples), 0.2, np.random.default_rng(0))[question]
    return x.contiguous(), truthful, val


def batched(x, y, val, device):
    x, y, val = x.to(device), y.to(device), val.to(device)
    w, b = fit_logistic_probes(x[:, ~val], y[~val])
    return ((torch.bmm(x[:, val], w.unsqueeze(-1)).squeeze(-1) + b.unsqueeze(-1) > 0) == y[val]).float().mean(-1).cpu().numpy()


def sklearn_loop(x, y, val):
    xn, yn, vn = x.numpy(), y.numpy(), val.numpy()
    return np.array([LogisticRegression(random_state=0, max_iter=1000).fit(xn[g][~vn], yn[~vn]).score(xn[g][vn], yn[vn])
                     for g in range(xn.shape[0])])


def interleaved(repeats: int, **fns):
    """Best wall-clock time and last result of each function, runs alternating so load changes hit both."""
    times = {name: [] for name in fns}
    results = {}
    for _ in range(repeats):
        for name, fn in fns.items():
            started = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - started)
    return {name: min(t) for name, t in times.items()}, results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=490, help="TruthfulQA training questions (490 = all of the 60%% split)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="device of the batched fit (scikit-learn runs on the CPU)")
    parser.add_argument("--saved", type=Path, help="keep the collected activations in this .pt file and reuse them")
    args = parser.parse_args()
    x, y, val = activations(args.questions, args.saved)
    print(f"{x.shape[0]} heads, {int((~val).sum())} training and {int(val.sum())} validation texts, d_head {x.shape[2]}; "
          f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    times, results = interleaved(args.repeats, batched=lambda: batched(x, y, val, args.device), sklearn=lambda: sklearn_loop(x, y, val))
    (t_batched, t_sklearn), (ours, theirs) = times.values(), results.values()
    top_ours, top_theirs = set(np.argsort(-ours, kind="stable")[:16]), set(np.argsort(-theirs, kind="stable")[:16])
    print(f"batched torch probes: {t_batched:.2f} s   per-head scikit-learn loop: {t_sklearn:.2f} s   "
          f"speed-up {t_sklearn / t_batched:.1f}x")
    print(f"validation accuracy: largest per-head difference {np.abs(ours - theirs).max() * 100:.2f} points, "
          f"mean {ours.mean():.4f} vs {theirs.mean():.4f}, best {ours.max():.4f} vs {theirs.max():.4f}; "
          f"top-16 heads in common: {len(top_ours & top_theirs)}")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
