"""Train the ``offline`` judge and measure its agreement with held-out human labels.

    python -m loctest_plugins.judges.train_offline [--out FILE]

Questions (not answers) are split, seeded: the judge trains on 80% of the TruthfulQA questions and is scored on
the answers to the other 20%, which it never saw. The shipped weights are exactly this model, so the agreement in
their metadata (and in docs/judges.md) is the agreement of the file users get. Deterministic on CPU.
"""
from __future__ import annotations

import argparse
import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from pydantic import Field

from loctest import PluginConfig

from .judge_data import DATA, LabelledAnswer, labelled_answers, question_split, references
from .offline import WEIGHTS, JudgeNet, OfflineJudge, featurize, load_weights, save_weights
from .reference_features import ReferenceSet, idf_weights

SOURCES = ("finetune_truth.jsonl.gz", "finetune_info.jsonl.gz", "eval_examples.csv.gz")


class TrainConfig(PluginConfig):
    seed: int = Field(0, description="Seed of the question split and of the initialisation.")
    test_fraction: float = Field(0.2, gt=0, lt=1, description="Share of questions held out.")
    steps: int = Field(200, ge=1, description="Full-batch Adam steps.")
    lr: float = Field(1e-2, gt=0, description="Adam learning rate.")
    hidden: int = Field(32, ge=1, description="Hidden units of the MLP over dense features.")
    wd_wide: float = Field(1e-5, ge=0, description="L2 penalty (summed) on the hashed n-gram weights.")
    wd_deep: float = Field(1e-4, ge=0, description="L2 penalty (summed) on the MLP weights.")


def reference_sets(pairs: Sequence[LabelledAnswer], idf: np.ndarray) -> list[ReferenceSet]:
    refs = references()
    built = {q: ReferenceSet(q, *refs[q], idf) for q in {p.question for p in pairs}}
    return [built[p.question] for p in pairs]


def fit(pairs: Sequence[LabelledAnswer], config: TrainConfig, progress=None) -> tuple[JudgeNet, np.ndarray]:
    """Train on ``pairs`` (soft targets: shares of "yes" votes). Returns the net and its IDF table."""
    refs = references()
    questions = sorted({p.question for p in pairs})
    idf = idf_weights([p.answer for p in pairs] + [r for q in questions for side in refs[q] for r in side])
    features = featurize(reference_sets(pairs, idf), [p.answer for p in pairs])
    targets = torch.tensor([[p.truthful, p.informative] for p in pairs], dtype=torch.float32)
    torch.manual_seed(config.seed)
    net = JudgeNet(features.dense.shape[1], config.hidden)
    net.mean.copy_(features.dense.mean(0))
    net.std.copy_(features.dense.std(0).clamp(min=1e-6))
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)
    for _ in range(config.steps):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net(features), targets)
        loss = loss + config.wd_wide * net.wide.square().sum() + config.wd_deep * sum(
            p.square().sum() for p in net.deep.parameters())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if progress:
            progress(1, description=f"training offline judge (loss {loss.item():.3f})")
    return net, idf


def agreement(probabilities: np.ndarray, pairs: Sequence[LabelledAnswer]) -> dict:
    """Per aspect: share of pairs where verdict (p >= 0.5) = majority human label, and the majority-class
    baseline; pairs whose votes tie are left out."""
    out = {}
    for k, aspect in enumerate(("truthful", "informative")):
        share = np.array([getattr(p, aspect) for p in pairs])
        keep = share != 0.5
        human = share[keep] > 0.5
        out[aspect] = {"agreement": float(((probabilities[keep, k] >= 0.5) == human).mean()),
                       "majority_baseline": float(max(human.mean(), 1 - human.mean())), "n": int(keep.sum())}
    return out


def normal(answer: str) -> str:
    return answer.strip().rstrip(".").strip().lower()


def evaluate(weights: Path, pairs: Sequence[LabelledAnswer]) -> dict:
    """Agreement of a weights file with human labels on ``pairs``: on all of them, and on the answers that
    are not verbatim reference answers (model-written answers, the judge's real job)."""
    judge = OfflineJudge({"weights": str(weights)})
    verdicts = judge.judge([p.question for p in pairs], [p.answer for p in pairs])
    probs = np.array([[v.truthful, v.informative] for v in verdicts])
    refs = references()
    generated = np.array([normal(p.answer) not in {normal(r) for r in refs[p.question][0] + refs[p.question][1]}
                          for p in pairs])
    return {"all": agreement(probs, pairs),
            "not_reference_answers": agreement(probs[generated], [p for p, g in zip(pairs, generated) if g])}


def split_pairs(config: TrainConfig) -> tuple[list[LabelledAnswer], list[LabelledAnswer]]:
    pairs = labelled_answers()
    train_q, _ = question_split([p.question for p in pairs], config.test_fraction, config.seed)
    return [p for p in pairs if p.question in train_q], [p for p in pairs if p.question not in train_q]


def main(argv: Sequence[str] | None = None) -> dict:
    from loctest.progress import Progress

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=WEIGHTS, help="weights file to write (default: the shipped one)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # bit-for-bit reproducible
    config = TrainConfig()
    train, test = split_pairs(config)
    with Progress() as bars, bars.task("training offline judge", total=config.steps) as advance:
        net, idf = fit(train, config, advance)
    metadata = {"config": config.model_dump(), "n_train_pairs": len(train), "n_test_pairs": len(test),
                "n_train_questions": len({p.question for p in train}), "n_test_questions": len({p.question for p in test}),
                "sources_sha256": {n: hashlib.sha256((DATA / n).read_bytes()).hexdigest() for n in SOURCES}}
    save_weights(net, idf, metadata, args.out)
    load_weights.cache_clear()
    metadata["held_out"] = evaluate(args.out, test)
    save_weights(net, idf, metadata, args.out)
    for subset, result in metadata["held_out"].items():
        for aspect, r in result.items():
            print(f"{subset:>22} {aspect:>11}: agreement {r['agreement']:.1%} "
                  f"(majority baseline {r['majority_baseline']:.1%}, n={r['n']})")
    return metadata


if __name__ == "__main__":
    main()
