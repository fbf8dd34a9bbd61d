"""``binary-choice``: the Truth Neurons paper's A/B protocol.

The question and its best correct and best incorrect answers go into the paper's prompt (through the chat
template), in an order drawn afresh for each repetition; the model chooses A when P(A)+P(a) > P(B)+P(b) at
the next token. Both orders of every question are scored once, so R repetitions cost two forward passes per
question; the order draws depend only on the run seed, so every arm sees the same orders (a paired design).
Details hold each question's two prompts (correct answer as A, then as B) with P(correct) and P(incorrect) in each,
and per repetition and question (``per_repetition``) the order drawn (0: correct answer as A), the label the model
chose, and its 0/1 accuracy and P(correct) in that order.

Comparisons of two arms add the paper's probability statistics (:func:`probability_shift`): Eq. 11, the mean
relative drop of the correct answer's probability, and Figure 4, the share of questions whose correct-answer
probability fell, overall and per category; the module's ``loctest_report_sections`` puts them in the report.
"""
from __future__ import annotations

import numpy as np
import torch
from pydantic import Field

from loctest import DatasetRef, Scorer, Scores, hookimpl
from loctest.errors import UserError

from ..common.binary_prompts import BinaryPromptConfig, binary_prompts, label_probabilities
from ..common.texts import shared


class BinaryChoiceConfig(BinaryPromptConfig):
    dataset: DatasetRef = Field("truthfulqa", description="Name of a dataset declared in the recipe's [datasets].")
    repetitions: int = Field(10, ge=1, description="Repetitions, each with a fresh random answer order.")
    min_category_size: int = Field(15, ge=1, description="Comparisons report per-category shares (the paper's "
                                                         "Figure 4) for categories with at least this many questions.")


def probability_shift(pre: np.ndarray, post: np.ndarray, orders: np.ndarray, categories: list[str],
                      min_category_size: int) -> dict:
    """How the correct answer's probability f(T|t) moved from ``pre`` to ``post`` ([N, 2]: correct answer as A,
    as B), read in each repetition's answer order (``orders`` [R, N]) and averaged over repetitions.

    - ``relative_drop``: Eq. 11, the mean over questions of (f_pre - f_post) / f_pre (questions with f_pre = 0
      are left out);
    - ``fell_share``: the share of questions with f_post < f_pre;
    - ``categories``: ``fell_share`` per named category with at least ``min_category_size`` questions (Figure 4).
    """
    rows = np.arange(pre.shape[0])
    before, after = pre[rows, orders], post[rows, orders]  # [R, N]
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = np.where(before > 0, (before - after) / before, np.nan)
    drop = np.nanmean(relative, axis=1)
    fell = after < before
    labels = np.asarray(categories, dtype=str)
    names, counts = np.unique(labels[labels != ""], return_counts=True)
    per_category = {}
    for name, n in zip(names.tolist(), counts.tolist()):
        if n >= min_category_size:
            share = fell[:, labels == name].mean(axis=1)
            per_category[name] = {"n": n, "fell_share": float(share.mean()), "per_repetition": share.tolist()}
    return {"relative_drop": float(drop.mean()), "relative_drop_per_repetition": drop.tolist(),
            "fell_share": float(fell.mean()), "fell_share_per_repetition": fell.mean(axis=1).tolist(),
            "min_category_size": min_category_size, "categories": per_category,
            "categories_left_out": len(names) - len(per_category)}


class BinaryChoice(Scorer):
    name = "binary-choice"
    description = "A/B choice between the best correct and best incorrect answer (Truth Neurons protocol)."
    Config = BinaryChoiceConfig
    metrics = ("accuracy", "correct_prob")
    higher_is_better = {"accuracy": True, "correct_prob": True}
    chance = {"accuracy": 0.5}

    def score(self, context, interventions) -> Scores:
        examples = context.dataset(self.config.dataset)
        prompts = binary_prompts(context.model, self.config, examples)
        with context.progress.task(f"{context.arm}: binary choice", total=len(prompts)) as advance:
            probs = label_probabilities(context.model, prompts, interventions, advance).view(len(examples), 2, 2)
        # order 0: correct is A; order 1: correct is B
        p_correct = torch.stack([probs[:, 0, 0], probs[:, 1, 1]], dim=1).numpy()
        p_incorrect = torch.stack([probs[:, 0, 1], probs[:, 1, 0]], dim=1).numpy()
        chose_a = (probs[:, :, 0] > probs[:, :, 1]).numpy()
        orders = np.stack([context.rng("binary-choice-order", self.config.dataset, r).integers(0, 2, size=len(examples))
                           for r in range(self.config.repetitions)])  # [R, N]
        rows = np.arange(len(examples))
        right, correct_prob = (p_correct > p_incorrect)[rows, orders], p_correct[rows, orders]
        return Scores(
            values={"accuracy": right.mean(1).tolist(), "correct_prob": correct_prob.mean(1).tolist()},
            details={"id": [e.id for e in examples], "category": [e.category for e in examples],
                     "prompts": [shared(prompts[i:i + 2]) for i in range(0, len(prompts), 2)],
                     "p_correct": p_correct.tolist(), "p_incorrect": p_incorrect.tolist(),
                     "per_repetition": {"order": orders.tolist(), "chosen": np.where(chose_a[rows, orders], "A", "B").tolist(),
                                        "accuracy": right.astype(int).tolist(), "correct_prob": correct_prob.tolist()}},
            note=f"chose A in {chose_a.mean():.0%} of prompts",
        )

    def compare(self, baseline: Scores, treatment: Scores) -> dict:
        """Eq. 11 and Figure 4 statistics of the treatment against the baseline (see :func:`probability_shift`)."""
        b, t = baseline.details, treatment.details
        orders = b["per_repetition"]["order"]
        if b["id"] != t["id"] or orders != t["per_repetition"]["order"]:
            raise UserError("binary-choice scorer: compared arms were scored on different questions or answer orders")
        return probability_shift(np.asarray(b["p_correct"]), np.asarray(t["p_correct"]), np.asarray(orders),
                                 b["category"], self.config.min_category_size)


def category_table(comparison: dict) -> list[str]:
    """Figure 4 as a table: per category, the share of questions whose correct-answer probability fell."""
    from loctest.report import pct

    c, extra = comparison, comparison["extra"]
    lines = ["", f"Questions whose P(correct) fell, {c['treatment']} vs {c['baseline']}, per category with "
                 f"≥ {extra['min_category_size']} questions ({extra['categories_left_out']} smaller categories left "
                 "out; Figure 4 style):", "", "| category | questions | fell |", "|---|---|---|"]
    return lines + [f"| {cat} | {v['n']} | {pct(v['fell_share'])} |"
                    for cat, v in sorted(extra["categories"].items(), key=lambda kv: -kv[1]["fell_share"])]


def category_bars(results, comparison: dict) -> str:
    """Figure 4 of Truth Neurons: per category, the share of questions whose correct-answer probability fell."""
    import matplotlib.pyplot as plt

    c, extra = comparison, comparison["extra"]
    items = sorted(extra["categories"].items(), key=lambda kv: kv[1]["fell_share"])
    fig, ax = plt.subplots(figsize=(7, 0.32 * len(items) + 1.6))
    bars = ax.barh([f"{name} ({v['n']})" for name, v in items], [100 * v["fell_share"] for _, v in items], color="#4c78a8")
    ax.bar_label(bars, fmt="%.0f", padding=2, fontsize=8)
    ax.axvline(100 * extra["fell_share"], color="#e45756", linestyle="--", label=f"all questions: {extra['fell_share']:.0%}")
    ax.set_xlim(0, 100)
    ax.set_xlabel("questions whose correct-answer probability fell (%)")
    ax.set_title(f"{c['treatment']} vs {c['baseline']} (categories with ≥ {extra['min_category_size']} questions)", fontsize=9)
    ax.legend(loc="lower right", fontsize=8)
    scorer = c["metric"].partition(".")[0]
    return results.save_figure(fig, f"fell_by_category_{scorer}_{c['baseline']}_vs_{c['treatment']}.png")


@hookimpl
def loctest_report_sections(results):
    """Truth Neurons' Eq. 11 and Figure 4 for every edited arm a binary-choice scorer compared with an unedited one
    (P_pre is the unedited model's): the relative drop of the correct answer's probability, and the share of
    questions (per category too) where it fell."""
    from loctest.report import pct

    arms = results.data["arms"]
    shifts = {(c["metric"].partition(".")[0], c["baseline"], c["treatment"]): c  # one per scorer and pair of arms
              for c in results.comparisons_of(BinaryChoice.name) if not arms[c["baseline"]]["editor"]}
    if not shifts:
        return None
    lines = ["## Probability of the correct answer (binary choice)", "",
             "Eq. 11: mean over questions of (P_pre − P_post) / P_pre of the correct answer's label, read in each "
             "repetition's answer order, averaged over repetitions.", "",
             "| scorer | baseline | treatment | relative drop of P(correct), Eq. 11 | questions whose P(correct) fell |",
             "|---|---|---|---|---|"]
    lines += [f"| {scorer} | {baseline} | {treatment} | {pct(c['extra']['relative_drop'])} | {pct(c['extra']['fell_share'])} |"
              for (scorer, baseline, treatment), c in shifts.items()]
    for c in shifts.values():
        if c["extra"]["categories"]:
            figure = category_bars(results, c)
            lines += category_table(c) + ["", f"![{figure}]({figure})"]
    return "\n".join(lines)
