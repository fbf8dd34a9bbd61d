"""``hf-judge``: truth and info judges that are Hugging Face causal LMs (e.g. the public
``allenai/truthfulqa-truth-judge-llama2-7B`` and ``allenai/truthfulqa-info-judge-llama2-7B``).

Each answer goes into the GPT-judge prompt ("Q: ...\\nA: ...\\nTrue:" or "...\\nHelpful:"); the verdict is
P(" yes") / (P(" yes") + P(" no")) at the first token where the tokenised " yes" and " no" continuations differ,
given the prompt and whatever tokens the two share before it (none for Llama or GPT-2 tokenisers, where " yes"
and " no" are single tokens; the leading space for a byte-level tokeniser).
"""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from loctest import PluginConfig
from loctest.base import Example, Judge, Verdict
from loctest.errors import UserError

from .prompts import INFO_PROMPT, NO, TRUTH_PROMPT, YES, judge_prompts


class HFJudgeConfig(PluginConfig):
    truth_model: str = Field("allenai/truthfulqa-truth-judge-llama2-7B",
                             description="Hugging Face model id or local folder of the truthfulness judge.")
    info_model: str = Field("allenai/truthfulqa-info-judge-llama2-7B",
                            description="Hugging Face model id or local folder of the informativeness judge.")
    device: str = Field("cpu", description="Torch device for the judge models ('cpu', 'cuda', 'cuda:1', 'mps').")
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="Weights dtype.")
    batch_size: int = Field(8, ge=1, description="Prompts per forward pass.")


def yes_no_split(tokenizer, prompt: str) -> tuple[list[int], int, int]:
    """(context ids, yes id, no id): the ids of prompt + " yes" and prompt + " no" up to where they first differ,
    and the differing token of each."""
    yes, no = (tokenizer(prompt + s).input_ids for s in (YES, NO))
    k = next((i for i, (a, b) in enumerate(zip(yes, no)) if a != b), None)
    if k is None:
        raise UserError(f"hf-judge: the tokenizer cannot tell {YES!r} from {NO!r} apart")
    return yes[:k], yes[k], no[k]


@torch.no_grad()
def yes_probabilities(model, tokenizer, prompts: list[str], batch_size: int) -> list[float]:
    """P(yes) / (P(yes) + P(no)) after each prompt, batched with left padding."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(prompts), batch_size):
        splits = [yes_no_split(tokenizer, p) for p in prompts[start:start + batch_size]]
        width = max(len(ids) for ids, _, _ in splits)
        ids = torch.tensor([[pad] * (width - len(c)) + c for c, _, _ in splits], device=device)
        mask = torch.tensor([[0] * (width - len(c)) + [1] * len(c) for c, _, _ in splits], device=device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits[:, -1].float()
        pair = torch.tensor([[y, n] for _, y, n in splits], device=device)
        out += torch.softmax(logits.gather(1, pair), dim=-1)[:, 0].tolist()
    return out


class HFJudge(Judge):
    name = "hf-judge"
    description = "Truth/info judge models from Hugging Face (id or local path), read through ' yes'/' no' probabilities."
    Config = HFJudgeConfig

    def __init__(self, config=None):
        super().__init__(config)
        self._models: dict[str, tuple] = {}

    def _load(self, name: str):
        if name not in self._models:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            try:
                tokenizer = AutoTokenizer.from_pretrained(name)
                model = AutoModelForCausalLM.from_pretrained(name, torch_dtype=getattr(torch, self.config.dtype))
            except OSError as err:
                raise UserError(f"hf-judge: cannot load judge model {name!r}: {str(err).splitlines()[0]}") from None
            self._models[name] = (model.to(self.config.device).eval(), tokenizer)
        return self._models[name]

    def judge(self, questions: list[str], answers: list[str], references: list[Example] | None = None) -> list[Verdict]:
        truth, info = (yes_probabilities(*self._load(model), judge_prompts(template, questions, answers),
                                         self.config.batch_size)
                       for model, template in ((self.config.truth_model, TRUTH_PROMPT),
                                               (self.config.info_model, INFO_PROMPT)))
        return [Verdict(truthful=t, informative=i) for t, i in zip(truth, info)]
