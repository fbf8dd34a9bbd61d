"""``kl``: how far an edit moves the model's next-token distributions, as ITI reports it.

Over a fixed, seeded sample of ``count`` held-out questions, each text is the prompt "Q: {question}\\nA:" with
the best correct answer " {answer}" as its continuation (teacher-forced). At every position that predicts an
answer token (the last prompt token through the second-to-last answer token),

    KL(P_orig || P_edit) = sum_v P_orig(v) (log P_orig(v) - log P_edit(v)),

averaged over the text's positions; the metric ``kl`` has one value per text (mean = the reported KL, in nats).
Measuring at the answer positions makes every position policy of an edit count ("last" moves them through
attention, "continuation" and "all" directly). ITI averages the same KL over 128-token web texts with the edit
at every position; TruthfulQA questions stand in for them here.

The unedited distributions are computed once per model and sample and kept in memory
(count x answer tokens x vocabulary floats) for every arm. Details hold each text's prompt, its teacher-forced
``continuation`` and its KL.
"""
from __future__ import annotations

import numpy as np
from pydantic import Field, field_validator

from loctest import DatasetRef, PluginConfig, Scorer, Scores

from ..common.memo import ModelMemo
from ..common.paired import paired_comparison
from ..common.qa import PROMPT_HELP, QA_PROMPT, check_prompt, dataset_examples, qa_prompt
from ..common.texts import shared

_unedited = ModelMemo()


class KLConfig(PluginConfig):
    dataset: DatasetRef = Field(..., description="Dataset (in [datasets]) of held-out questions (e.g. truthfulqa-mc, test split).")
    count: int = Field(100, ge=1, description="How many questions to draw (seeded, the same for every arm); all of them if fewer.")
    prompt: str = Field(QA_PROMPT, description=PROMPT_HELP)

    _prompt = field_validator("prompt")(check_prompt)


class KLDivergence(Scorer):
    name = "kl"
    description = "KL(original || edited) of next-token distributions over answer positions of held-out questions."
    Config = KLConfig
    metrics = ("kl",)
    higher_is_better = {"kl": False}
    cost_metrics = ("kl",)

    def score(self, context, interventions) -> Scores:
        examples = [ex for ex in dataset_examples(context, self.config.dataset, self.name) if ex.correct]
        rng = context.rng("kl-prompts", self.config.dataset)
        chosen = np.sort(rng.choice(len(examples), size=min(self.config.count, len(examples)), replace=False))
        examples = [examples[i] for i in chosen]
        prompts = [qa_prompt(self.config.prompt, ex.question) for ex in examples]
        answers = [f" {ex.correct[0]}" for ex in examples]
        model = context.model
        passes = (not _unedited.has(model, prompts + answers)) + bool(interventions)
        with context.progress.task(f"{context.arm}: kl", total=len(prompts) * passes) as advance:
            unedited = _unedited.get(model, prompts + answers,
                                     lambda: model.continuation_token_logprobs(prompts, answers, (), advance))
            edited = model.continuation_token_logprobs(prompts, answers, interventions, advance) if interventions else unedited
        kl = [float((orig.exp() * (orig - new)).sum(-1).mean()) for orig, new in zip(unedited, edited)]
        return Scores(values={"kl": kl}, details={"id": [ex.id for ex in examples], "prompt": shared(prompts),
                                                  "continuation": shared(answers), "kl": kl},
                      note=f"{len(examples)} held-out questions, {sum(len(o) for o in unedited)} answer positions")

    def compare(self, baseline, treatment) -> dict:
        return paired_comparison(baseline, treatment, self.metrics)
