"""``mmlu``: multiple-choice accuracy with the standard MMLU prompt (Hendrycks et al. 2021).

The prompt: "The following are multiple choice questions (with answers) about {subject}.\\n\\n", then k solved
examples, then the question, its options "A. ..", "B. .." in their original order and "Answer:". By default it
is the user message of the chat template under the Truth Neurons paper's MMLU system prompt (their Figure 8);
with ``chat = false``, or for a model without a chat template, it is the raw text. The model's choice is the
label with the highest next-token probability ("A", "B", ... after the chat template; " A", " B", ... after
raw text; only the labels of the example's options compete). The options keep the dataset's order, so one
repetition is the whole measurement; comparisons get exact McNemar tests on the paired per-question outcomes.
Details hold each question's prompt, the right and the chosen option's index, its 0/1 ``accuracy`` and the labels'
probabilities.
"""
from __future__ import annotations

import re
import string

import torch
from pydantic import Field, model_validator

from loctest import DatasetRef, PluginConfig, Scorer, Scores
from loctest.errors import UserError
from loctest.stats import mcnemar

from ..common.texts import shared

SYSTEM_PROMPT = ("You are a helpful assistant. You should only output 'A', 'B', 'C', or 'D' as one character index "
                 "for the correct answer. Do not output any other characters or symbols.")
LABELS = string.ascii_uppercase


class MMLUScorerConfig(PluginConfig):
    dataset: DatasetRef = Field("mmlu", description="Name of a multiple-choice dataset in the recipe's [datasets] "
                                                    "(examples with 'choices', such as the 'mmlu' plugin's).")
    shots: int = Field(0, ge=0, description="Solved examples before each question (k-shot; 0: zero-shot).")
    shots_dataset: DatasetRef | None = Field(None, description="Recipe dataset holding the solved examples, taken "
                                                               "per subject in id order (an 'mmlu' dataset with "
                                                               "subset = 'dev'); required when shots > 0.")
    chat: bool = Field(True, description="Put the prompt in the chat template under system_prompt (the paper's "
                                         "setup); false: the raw text, as in the original MMLU harness.")
    system_prompt: str = Field(SYSTEM_PROMPT, description="System message when chat is on (the paper's Figure 8).")

    @model_validator(mode="after")
    def _shots_need_examples(self):
        if self.shots and self.shots_dataset is None:
            raise ValueError(f"shots = {self.shots} needs shots_dataset naming a dataset in [datasets]")
        return self


def format_question(example) -> str:
    options = "".join(f"\n{label}. {choice}" for label, choice in zip(LABELS, example.choices))
    return f"{example.question}{options}\nAnswer:"


def mmlu_prompt(example, shots=()) -> str:
    """The standard MMLU prompt text of one example, after ``shots`` solved examples."""
    about = f" about {example.category.replace('_', ' ')}" if example.category else ""
    solved = "".join(f"{format_question(s)} {LABELS[s.answer]}\n\n" for s in shots)
    return f"The following are multiple choice questions (with answers){about}.\n\n{solved}{format_question(example)}"


def raw_label_token(model, label: str) -> int:
    """The token carrying " {label}" after raw text: the last token of its encoding (BPE: one token " A";
    byte-level or sentencepiece tokenizers may put a bare space first)."""
    return model.tokenize([f" {label}"], special=False)[0][-1]


def natural_key(text: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


class MMLUScorer(Scorer):
    name = "mmlu"
    description = "Multiple-choice accuracy with the standard MMLU prompt, zero- or k-shot (argmax over labels)."
    Config = MMLUScorerConfig
    metrics = ("accuracy",)
    higher_is_better = {"accuracy": True}

    def score(self, context, interventions) -> Scores:
        examples = context.dataset(self.config.dataset)
        for e in examples:
            if not 2 <= len(e.choices) <= len(LABELS) or not 0 <= e.answer < len(e.choices):
                raise UserError(f"mmlu scorer: dataset {self.config.dataset!r}, example {e.id!r} has no options with "
                                "an answer index: use a multiple-choice dataset such as 'mmlu'")
        model = context.model
        chat = self.config.chat and model.uses_chat_template
        shots = self.solved_examples(context, {e.category for e in examples})
        prompts = [mmlu_prompt(e, shots.get(e.category, ())) for e in examples]
        if chat:
            prompts = [model.chat_prompt(p, self.config.system_prompt or None) for p in prompts]
        width = max(len(e.choices) for e in examples)
        labels = LABELS[:width]
        ids = [model.answer_token_ids(l) if chat else raw_label_token(model, l) for l in labels]
        if len(set(ids)) < width:
            raise UserError(f"mmlu scorer: the labels {', '.join(labels)} do not start with distinct tokens for this tokenizer")
        with context.progress.task(f"{context.arm}: MMLU", total=len(prompts)) as advance:
            probs = model.next_token_logprobs(prompts, interventions, token_ids=ids, progress=advance).exp()
        n_choices = torch.tensor([len(e.choices) for e in examples])
        probs = probs.masked_fill(torch.arange(width)[None, :] >= n_choices[:, None], 0.0)
        chosen = probs.argmax(-1)
        right = chosen == torch.tensor([e.answer for e in examples])
        shares = torch.bincount(chosen, minlength=width).float() / len(examples)
        return Scores(
            values={"accuracy": [float(right.float().mean())]},
            details={"id": [e.id for e in examples], "category": [e.category for e in examples],
                     "prompt": shared(prompts), "answer": [e.answer for e in examples], "chosen": chosen.tolist(),
                     "accuracy": right.int().tolist(), "label_probs": probs.tolist()},
            note="chose " + ", ".join(f"{l} {s:.0%}" for l, s in zip(labels, shares.tolist())),
        )

    def solved_examples(self, context, subjects: set[str]) -> dict[str, list]:
        """The first ``shots`` examples of each subject of the shots dataset (in id order)."""
        if self.config.shots == 0:
            return {}
        name = self.config.shots_dataset
        pool: dict[str, list] = {}
        for e in sorted(context.dataset(name), key=lambda e: natural_key(e.id)):
            pool.setdefault(e.category, []).append(e)
        for subject in sorted(subjects):
            if len(pool.get(subject, [])) < self.config.shots:
                raise UserError(f"mmlu scorer: shots_dataset {name!r} has {len(pool.get(subject, []))} examples of "
                                f"{subject!r}, shots = {self.config.shots} needs that many (is a 'limit' cutting it?)")
        return {subject: pool[subject][: self.config.shots] for subject in subjects}

    def compare(self, baseline: Scores, treatment: Scores) -> dict:
        """Exact McNemar tests (:func:`loctest.stats.mcnemar`) of the per-question outcomes, paired by id: two-sided
        (``accuracy``) and one-sided, the baseline right more often (``accuracy_baseline_greater``)."""
        if baseline.details["id"] != treatment.details["id"]:
            raise UserError("mmlu scorer: compared arms were scored on different questions")
        answer = baseline.details["answer"]
        right = [[c == a for c, a in zip(s.details["chosen"], answer)] for s in (baseline, treatment)]
        return {"accuracy": mcnemar(*right), "accuracy_baseline_greater": mcnemar(*right, alternative="greater")}
