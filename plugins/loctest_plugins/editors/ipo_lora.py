"""``ipo-lora``: the optimal localized edit of Wang & Veitch, a rank-1 LoRA restricted to the chosen components
and trained with IPO on (question, truthful, untruthful) pairs.

The edit is ``o <- o + <a, o> b`` at each site with a chosen component (one (a, b) pair per site; ``a`` reads the
whole site, ``b`` is zero outside the chosen coordinates): the input of a layer's attention output projection
for heads and attention neurons, of its MLP down projection for MLP neurons, and the residual stream after the
layer for ``resid:L`` (there ``b`` is the whole stream: a rank-1 edit of the stream, not of a weight); see
``loctest_plugins.ipo``. With ``full_model = true`` it trains peft's unrestricted rank-1 LoRA on those whole
projections instead (with every head chosen: the paper's full-model baseline) and applies it as the equivalent
edit; a residual stream is no projection's input, so ``full_model`` refuses ``resid:L``. Trained edits are saved
in the run directory (``edits/ARM.safetensors`` + ``.json``) and in the cache, keyed by model, components,
config, seed and training pairs, so a re-run loads them instead of training.
"""
from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from loctest import ComponentSet, DatasetRef, Editor, PluginConfig
from loctest.cache import JsonCache, cache_key, file_digest
from loctest.errors import UserError

from ..ipo import full_model
from ..ipo.edit import RankOneEdit
from ..ipo.pairs import PreferencePair, pairs_digest, preference_pairs
from ..ipo.store import edit_paths, load_edit, save_edit
from ..ipo.training import Schedule, reference_logprobs, steps, train
from ..common.qa import QA_PROMPT, check_prompt, qa_prompt

PAPER_LR = {"one": 2e-3, "some": 5e-4, "all": 1e-4}  # appendix A: single head, 16 heads, all heads


class IpoLoraConfig(PluginConfig):
    dataset: DatasetRef = Field("truthfulqa", description="Recipe dataset whose questions train the edit, as every correct x "
                                                   "incorrect answer pair (the paper: split = 'train', split_fraction = 0.6).")
    tau: float = Field(0.1, gt=0, description="IPO's tau: the loss pulls each pair's log-ratio margin towards 1/(2 tau) "
                                              "(the paper sweeps 0.1-0.5).")
    lr: float | None = Field(None, gt=0, description="Peak AdamW learning rate; None: the paper's by size, 2e-3 for one "
                                                     "component (a resid:L, a whole layer, counts as several), 1e-4 "
                                                     "for all heads or full_model, else 5e-4.")
    epochs: int = Field(2, ge=1, description="Passes over the pairs (the paper: 2).")
    batch_size: int = Field(4, ge=1, description="Pairs per optimiser step (the paper: 4).")
    max_pairs: int | None = Field(None, ge=1, description="Train on a seeded random subset of at most this many pairs "
                                                          "(None: all).")
    positions: Literal["last", "prompt", "continuation", "all"] = Field(
        "all", description="Where the edit acts, in training and scoring: 'all' tokens, as a LoRA weight update does "
                           "(the paper), or only the last prompt token, the prompt or the continuation.")
    prompt: str = Field(QA_PROMPT, description="Question prompt with {question}; the answer follows after one space "
                                                "(TruthfulQA's QA format, as the probes and MC scoring use).")
    chat: bool = Field(False, description="Wrap the prompt as the user turn of the chat template (the answer then "
                                          "follows the assistant header, without the space).")
    system_prompt: str | None = Field(None, description="System message when chat = true.")
    full_model: bool = Field(False, description="Train peft's unrestricted rank-1 LoRA on the whole projection fed by "
                                                "each site with a chosen component (all heads chosen: the full-model "
                                                "baseline) instead of the restricted edit; not for resid:L.")
    load: str | None = Field(None, description="Path of an edit saved by an earlier run (edits/ARM.json or "
                                               ".safetensors): apply it instead of training.")

    _prompt = field_validator("prompt")(check_prompt)

    @model_validator(mode="after")
    def _system_needs_chat(self):
        if self.system_prompt is not None and not self.chat:
            raise ValueError("system_prompt needs chat = true")
        return self

    @model_validator(mode="after")
    def _full_model_acts_everywhere(self):
        if self.full_model and self.positions != "all":
            raise ValueError("full_model trains a weight update, which acts at every token: use positions = 'all' "
                             f"(got {self.positions!r})")
        return self


class IpoLora(Editor):
    name = "ipo-lora"
    description = "IPO-trained rank-1 LoRA edit restricted to the chosen components (Wang & Veitch); full_model: peft's unrestricted LoRA."
    Config = IpoLoraConfig

    @classmethod
    def fingerprint(cls, config, plugins) -> list:
        """The files of an edit given by `load` decide the results."""
        if not config.load:
            return []
        return [file_digest(*edit_paths(Path(config.load).expanduser()))]

    @classmethod
    def refusal(cls, config: IpoLoraConfig, kinds: set[str]) -> str | None:
        """Why this config cannot edit components of these kinds, or None."""
        if config.full_model and not config.load and "resid" in kinds:
            return ("full_model trains a LoRA on the projection a site feeds, and a residual stream (resid:L) feeds "
                    "none: use the restricted edit (full_model = false) or other components")
        return None

    def interventions(self, context, components):
        if not len(components):
            raise UserError("ipo-lora needs at least one component; the arm has none")
        if reason := self.refusal(self.config, {c.kind for c in components}):
            raise UserError(f"ipo-lora: {reason}")
        if self.config.load:
            edit, spec = self.saved_edit(context, components)
            source = f"load: {self.config.load}"
        else:
            edit, spec, source = self.trained(context, components)
        save_edit(edit, spec | {"source": source, "arm": context.arm}, f"edits/{context.arm}", context.write_output)
        return edit.interventions(self.config.positions)

    def saved_edit(self, context, components: ComponentSet) -> tuple[RankOneEdit, dict]:
        edit, spec = load_edit(self.config.load, context.model.device)
        problems = {
            "model shape": (spec["model"]["shape"], vars(context.shape)),
            "components": (sorted(spec["components"]), sorted(components.names())),
            "positions": (spec["config"]["positions"], self.config.positions),
        }
        for what, (saved, wanted) in problems.items():
            if saved != wanted:
                raise UserError(f"load: the edit in {self.config.load} was trained for "
                                f"{what} {_short(saved)}, this arm has {_short(wanted)}")
        return edit, spec

    def trained(self, context, components: ComponentSet) -> tuple[RankOneEdit, dict, str]:
        pairs = self.pairs(context)
        model = context.model.identity()
        data = {"dataset": self.config.dataset, "n_pairs": len(pairs), "digest": pairs_digest(pairs)}
        settings = self.config.model_dump(mode="json", exclude={"load"})
        stored = context.cache_dir / "ipo-lora" / cache_key(model, components.names(), settings, data, context.seed)
        if edit_paths(stored)[1].exists():
            edit, spec = load_edit(stored, context.model.device)
            return edit, spec, f"cache: {stored}"
        reference = reference_logprobs(context.model, pairs, JsonCache(context.cache_dir), cache_key(model, data),
                                       context.progress)
        schedule = Schedule(self.config.tau, self.learning_rate(components, context.shape), self.config.epochs,
                            self.config.batch_size)
        seed = int(context.rng("ipo-lora", "init").integers(2 ** 31))
        started = time.perf_counter()
        with context.progress.task(f"{context.arm}: IPO training", total=steps(len(pairs), schedule)) as advance:
            run = self.train_full_model if self.config.full_model else self.train_restricted
            edit, history, extra = run(context, components, pairs, reference, schedule, seed, advance)
        spec = {"model": model, "components": components.names(), "config": settings, "seed": context.seed,
                "training_data": data, "lr": schedule.lr, "steps": len(history), "loss_history": history,
                "train_seconds": round(time.perf_counter() - started, 3), **extra}
        save_edit(edit, spec, stored)
        return edit, spec, "trained"

    def pairs(self, context) -> list[PreferencePair]:
        pairs = preference_pairs(context.dataset(self.config.dataset), self.question_prompt(context.model),
                                 answer_prefix="" if self.config.chat and context.model.uses_chat_template else " ")
        if not pairs:
            raise UserError(f"dataset: dataset {self.config.dataset!r} has no question with "
                            "both a correct and an incorrect answer")
        if self.config.max_pairs is not None and len(pairs) > self.config.max_pairs:
            keep = context.rng("ipo-lora", "subset").choice(len(pairs), size=self.config.max_pairs, replace=False)
            pairs = [pairs[i] for i in sorted(keep)]
        return pairs

    def question_prompt(self, model):
        if self.config.chat:
            return lambda q: model.chat_prompt(qa_prompt(self.config.prompt, q), self.config.system_prompt)
        return lambda q: qa_prompt(self.config.prompt, q)

    def learning_rate(self, components: ComponentSet, shape) -> float:
        if self.config.lr is not None:
            return self.config.lr
        attention = sum(len(cols) for site, cols in components.site_indices(shape).items() if site[0] == "attn")
        if self.config.full_model or attention == shape.n_layers * shape.site_width("attn"):
            return PAPER_LR["all"]
        single = len(components) == 1 and next(iter(components)).kind != "resid"  # a residual stream: a whole layer
        return PAPER_LR["one"] if single else PAPER_LR["some"]

    def train_restricted(self, context, components, pairs, reference, schedule, seed, advance):
        import torch

        generator = torch.Generator().manual_seed(seed)
        edit = RankOneEdit.initial(RankOneEdit.masks(components, context.shape), generator, context.model.device)
        positioned = edit.interventions(self.config.positions)
        history = train(lambda batch: context.model.run(batch, positioned, grad=True).logits, edit.parameters(),
                        context.model, pairs, reference, schedule, context.rng("ipo-lora", "order"), advance,
                        f"{context.arm}: IPO")
        return edit, history, {}

    def train_full_model(self, context, components, pairs, reference, schedule, seed, advance):
        module, targets = context.model.separate_copy(list(components.site_indices(context.shape)))
        model = full_model.lora_model(module, targets, seed)
        history = train(full_model.logits_of(model), full_model.lora_parameters(model), context.model, pairs,
                        reference, schedule, context.rng("ipo-lora", "order"), advance, f"{context.arm}: IPO (peft)")
        edit, residual = full_model.to_edit(model, targets)
        if residual > 1e-4:
            warnings.warn(f"ipo-lora full_model: the output projection is not full row rank; the converted edit loses "
                          f"{residual:.1%} of the LoRA's output direction (see spec conversion_residual)", stacklevel=2)
        return edit, history, {"conversion_residual": residual}


def _short(value) -> str:
    text = repr(value)
    return text if len(text) < 120 else text[:117] + "..."
