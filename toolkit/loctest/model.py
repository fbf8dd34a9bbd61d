"""The model as plugins see it (``context.model``): prompts and tokens, log-probabilities, activations,
gradients and generation, with the model's name, shape, dtype and fingerprint.

Every operation is built on one backend's primitives (:meth:`Backend.run`, :meth:`Backend.prefill`,
:meth:`Backend.gradients`), identically for all backends. Batched shortcuts that lean on upstream internals
(padded batches, cached generation) are checked at run time against the straightforward computation on the run's
own model and input (``checks``), and fall back to it on a mismatch.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import torch

from .backend import Backend, Batch, RunOutput, continuation_logprob_sums
from .cache import package_versions
from .components import ModelShape
from .errors import UserError, did_you_mean
from .interventions import POSITION_POLICIES, Intervention, Site
from .selfcheck import SelfChecks, difference, logprob_difference, tolerance

IDENTITY_PROBE = "The quick brown fox jumps over the lazy dog. Question: is the sky green? Answer:"


class Model:
    """One loaded model reached through one backend."""

    def __init__(self, backend: Backend):
        self.backend = backend
        self.name: str = backend.loaded.name
        self.tokenizer = backend.loaded.tokenizer
        self.device: torch.device = backend.loaded.device
        self.dtype: torch.dtype = backend.loaded.dtype
        self._identity: dict | None = None

    @property
    def shape(self) -> ModelShape:
        return self.backend.shape

    @property
    def checks(self) -> SelfChecks:
        """The run-time comparisons of fast paths with the straightforward computation (see ``selfcheck``)."""
        return self.backend.checks

    def site_name(self, site: Site) -> str:
        """The backend's own name of a site for this architecture (a TransformerLens hook, an nnsight path)."""
        return self.backend.site_name(site)

    def separate_copy(self, sites: Sequence[Site]) -> tuple[torch.nn.Module, dict[Site, str]]:
        """A Hugging Face model object of its own and the projection path of each site (for peft training)."""
        return self.backend.separate_copy(sites)

    def identity(self) -> dict:
        """What decides this backend's numbers, for cache keys: the backend and its settings, the versions of the
        numeric packages, the model's name, shape and dtype, and a fingerprint of its weights (the rounded top
        next-token log-probabilities of a fixed probe prompt, so edited or re-seeded weights never share entries)."""
        if self._identity is None:
            logprobs = self.next_token_logprobs([IDENTITY_PROBE])[0]
            top = logprobs.topk(16)
            self._identity = {"backend": self.backend.name, "config": self.backend.config.model_dump(mode="json"),
                              "versions": package_versions(), "model": self.name, "shape": vars(self.shape),
                              "dtype": str(self.dtype), "top_ids": top.indices.tolist(),
                              "top_logprobs": [round(v, 3) for v in top.values.tolist()]}
        return self._identity

    # -- the backend's primitives --------------------------------------------------------------------
    def run(self, batch: Batch, interventions: Sequence[Intervention] = (), capture: Sequence[Site] = (),
            grad: bool = False) -> RunOutput:
        """One forward pass (:meth:`Backend.run`)."""
        return self.backend.run(batch, interventions, capture, grad)

    def prefill(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None):
        """The key/value cache of an unedited pass over ``input_ids`` (:meth:`Backend.prefill`); check what you
        compute over it against a whole-prompt pass (check "prefill")."""
        return self.backend.prefill(input_ids, attention_mask)

    def gradients(self, batch: Batch, sites: Sequence[Site], objective: Callable[[torch.Tensor, Batch], torch.Tensor],
                  interventions: Sequence[Intervention] = ()):
        """Activations, gradients of ``objective`` at ``sites`` and its value (:meth:`Backend.gradients`)."""
        return self.backend.gradients(batch, sites, objective, interventions)

    # -- prompts and tokens --------------------------------------------------------------------------
    def chat_prompt(self, user: str, system: str | None = None) -> str:
        """The prompt text for a chat turn: the tokenizer's chat template with the generation prompt when it
        has one, else a plain "system\\n\\nuser\\nAnswer:" layout."""
        if getattr(self.tokenizer, "chat_template", None):
            messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return (f"{system}\n\n" if system else "") + f"{user}\nAnswer:"

    @property
    def uses_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def answer_token_ids(self, text: str) -> int:
        """The token that starts ``text`` as the next token after a :meth:`chat_prompt`."""
        prefix = "" if self.uses_chat_template else " "
        ids = self.tokenizer.encode(prefix + text, add_special_tokens=False)
        return ids[0]

    def tokenize(self, texts: Sequence[str], special: bool) -> list[list[int]]:
        return [self.tokenizer.encode(t, add_special_tokens=special) for t in texts]

    def encode(self, prompts: Sequence[str], continuations: Sequence[str] | None = None) -> Batch:
        """Tokenize and left-pad. Prompts get the tokenizer's special tokens unless they came from a chat
        template (which has its own); continuations never do."""
        prompt_ids = self.tokenize(prompts, special=not self.uses_chat_template)
        cont_ids = self.tokenize(continuations, special=False) if continuations is not None else None
        return Batch.from_ids(prompt_ids, cont_ids, self.pad_id, self.device)

    @property
    def pad_id(self) -> int:
        tok = self.tokenizer
        return tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)

    def _by_length(self, texts: Sequence[str], compute: Callable[[list[int]], Sequence],
                   progress: Callable[[int], None] | None, check_padding: bool = True) -> list:
        """``compute(indices)`` over batches of texts of similar length (less padding); results in input order.
        The first padded batch is checked against its rows computed alone (check "padded-batch"); on a mismatch
        every later batch holds one row."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        results: list = [None] * len(texts)
        start = 0
        while start < len(order):
            size = self.backend.config.batch_size if self.checks.usable("padded-batch") else 1
            indices = order[start:start + size]
            batch_results = compute(indices)
            if check_padding and len(indices) > 1 and not self.checks.ran("padded-batch") and self._padded(indices, texts):
                alone = [compute([i])[0] for i in indices]
                if not self.checks.record("padded-batch", difference(list(batch_results), alone), tolerance(self.dtype)):
                    batch_results = alone
            for i, result in zip(indices, batch_results):
                results[i] = result
            start += len(indices)
            if progress:
                progress(len(indices))
        return results

    def _padded(self, indices: list[int], texts: Sequence[str]) -> bool:
        lengths = {len(self.tokenize([texts[i]], special=not self.uses_chat_template)[0]) for i in indices}
        return len(lengths) > 1

    # -- derived operations --------------------------------------------------------------------------
    @torch.no_grad()
    def next_token_logprobs(self, prompts: Sequence[str], interventions: Sequence[Intervention] = (),
                            token_ids: Sequence[int] | None = None, progress: Callable[[int], None] | None = None) -> torch.Tensor:
        """[N, vocab] (or [N, len(token_ids)]) log-probabilities of the token after each prompt."""
        def compute(indices):
            batch = self.encode([prompts[i] for i in indices])
            logits = self.run(batch, interventions).logits
            last = logits[torch.arange(logits.shape[0], device=logits.device), batch.last_prompt_index]
            logprobs = torch.log_softmax(last.float(), dim=-1)
            return (logprobs[:, list(token_ids)] if token_ids is not None else logprobs).cpu()
        return torch.stack(self._by_length(prompts, compute, progress))

    @torch.no_grad()
    def continuation_logprobs(self, prompts: Sequence[str], continuations: Sequence[str],
                              interventions: Sequence[Intervention] = (), progress: Callable[[int], None] | None = None) -> torch.Tensor:
        """[N] sum of log-probabilities of each continuation's tokens given its prompt."""
        def compute(indices):
            batch = self.encode([prompts[i] for i in indices], [continuations[i] for i in indices])
            return continuation_logprob_sums(self.run(batch, interventions).logits, batch).cpu()
        texts = [p + c for p, c in zip(prompts, continuations)]
        return torch.stack(self._by_length(texts, compute, progress))

    @torch.no_grad()
    def continuation_token_logprobs(self, prompts: Sequence[str], continuations: Sequence[str],
                                    interventions: Sequence[Intervention] = (),
                                    progress: Callable[[int], None] | None = None) -> list[torch.Tensor]:
        """Per text, [continuation tokens, vocab] log-probabilities at the positions that predict them."""
        def compute(indices):
            batch = self.encode([prompts[i] for i in indices], [continuations[i] for i in indices])
            logits = self.run(batch, interventions).logits[:, :-1]
            predicts = batch.continuation_mask[:, 1:]
            return [torch.log_softmax(logits[row, predicts[row]].float(), dim=-1).cpu() for row in range(len(indices))]
        return self._by_length([p + c for p, c in zip(prompts, continuations)], compute, progress)

    @torch.no_grad()
    def capture_last(self, prompts: Sequence[str], sites: Sequence[Site], interventions: Sequence[Intervention] = (),
                     progress: Callable[[int], None] | None = None) -> dict[Site, torch.Tensor]:
        """Site activations at each prompt's last token: {site: [N, width]}."""
        def compute(indices):
            batch = self.encode([prompts[i] for i in indices])
            acts = self.run(batch, interventions, capture=sites).activations
            rows = torch.arange(batch.input_ids.shape[0], device=batch.input_ids.device)
            last = {s: acts[s][rows, batch.last_prompt_index].float().cpu() for s in sites}
            return [{s: last[s][row] for s in sites} for row in range(len(indices))]
        per_prompt = self._by_length(prompts, compute, progress)
        return {s: torch.stack([p[s] for p in per_prompt]) for s in sites}

    @torch.no_grad()
    def capture(self, prompts: Sequence[str], sites: Sequence[Site], positions: str = "prompt",
                continuations: Sequence[str] | None = None, interventions: Sequence[Intervention] = (),
                progress: Callable[[int], None] | None = None) -> list[dict[Site, torch.Tensor]]:
        """Per text, site activations at the positions a policy selects: "last" (the last prompt token), "prompt"
        (every prompt token), "continuation" (every token of ``continuations[i]``, the answer after prompt i) or
        "all" (both; the prompt alone without continuations), as :class:`~loctest.interventions.Intervention`
        positions: ``[{site: [positions, width]}]``, in token order, padding never included; :meth:`tokens_at`
        gives the tokens at those positions."""
        self._check_positions(prompts, positions, continuations)

        def compute(indices):
            conts = [continuations[i] for i in indices] if continuations is not None else None
            batch = self.encode([prompts[i] for i in indices], conts)
            acts = self.run(batch, interventions, capture=sites).activations
            mask = batch.position_mask(positions)
            return [{s: acts[s][row, mask[row]].float().cpu() for s in sites} for row in range(len(indices))]
        texts = [p + (continuations[i] if continuations is not None else "") for i, p in enumerate(prompts)]
        return self._by_length(texts, compute, progress)

    def tokens_at(self, prompts: Sequence[str], positions: str = "prompt",
                  continuations: Sequence[str] | None = None) -> list[list[int]]:
        """Per text, the token ids at the positions :meth:`capture` returns for the same arguments, in order."""
        self._check_positions(prompts, positions, continuations)
        batch = self.encode(prompts, continuations)
        mask = batch.position_mask(positions)
        return [batch.input_ids[row, mask[row]].tolist() for row in range(len(prompts))]

    @staticmethod
    def _check_positions(prompts: Sequence[str], positions: str, continuations: Sequence[str] | None) -> None:
        """A known position policy; "continuation" with continuations; one continuation per prompt."""
        if positions not in POSITION_POLICIES:
            raise UserError(f"unknown position policy {positions!r}; {did_you_mean(positions, POSITION_POLICIES)}")
        if continuations is None and positions == "continuation":
            raise UserError(f"positions = {positions!r} needs continuations (the answer text after each prompt)")
        if continuations is not None and len(continuations) != len(prompts):
            raise UserError(f"{len(prompts)} prompts but {len(continuations)} continuations: give one per prompt")

    # -- generation ----------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, prompts: Sequence[str], max_new_tokens: int, interventions: Sequence[Intervention] = (),
                 progress: Callable[[int], None] | None = None) -> list[str]:
        """Greedy generation with interventions in place, one cached token at a time: policies "last" and
        "prompt" edit the prompt, "continuation" edits every generated token, "all" both. Stops at end-of-sequence.
        The first batch is checked against uncached passes (check "cached-generation"); on a mismatch every
        token is computed without a cache."""
        eos = self.tokenizer.eos_token_id

        def compute(indices):
            batch = self.encode([prompts[i] for i in indices])
            if not self.checks.usable("cached-generation"):
                return self._decode(self._greedy(batch, max_new_tokens, interventions, cached=False)[0], eos)
            tokens, logprobs = self._greedy(batch, max_new_tokens, interventions, cached=True)
            if not self.checks.ran("cached-generation"):
                rows = [ids[mask.bool()].tolist() for ids, mask in zip(batch.input_ids, batch.attention_mask)]
                exact = [self._continuation_logprobs_alone(p, g, interventions) for p, g in zip(rows, self._until_eos(tokens, eos))]
                fast = [lp[: len(e)] for lp, e in zip(logprobs, exact)]
                if not self.checks.record("cached-generation", max(map(logprob_difference, fast, exact)), tolerance(self.dtype)):
                    tokens = self._greedy(batch, max_new_tokens, interventions, cached=False)[0]
            return self._decode(tokens, eos)
        return self._by_length(prompts, compute, progress, check_padding=False)

    def _greedy(self, batch: Batch, max_new_tokens: int, interventions: Sequence[Intervention], cached: bool):
        """Greedy tokens [B, T] and the log-probabilities they were chosen from [B, T, vocab]; with ``cached``,
        each step runs only the new token over a key/value cache, else the whole sequence again."""
        from transformers import DynamicCache

        eos = self.tokenizer.eos_token_id
        rows = batch.input_ids.shape[0]
        prompt = batch
        if cached:
            batch = dataclasses.replace(prompt, past_key_values=DynamicCache())  # filled in place by each forward pass
        generated = torch.empty((rows, 0), dtype=torch.long, device=self.device)
        steps, done = [], torch.zeros(rows, dtype=torch.bool, device=self.device)
        for _ in range(max_new_tokens):
            logits = self.run(batch, interventions).logits[:, -1]
            steps.append(torch.log_softmax(logits.float(), dim=-1).cpu())
            token = torch.where(done, torch.full_like(logits[:, 0], eos if eos is not None else self.pad_id, dtype=torch.long),
                                logits.argmax(-1))
            generated = torch.cat([generated, token[:, None]], dim=1)
            done |= token == eos
            if bool(done.all()):
                break
            batch = self._next_step(batch, generated) if cached else self._whole(prompt, generated)
        return generated.tolist(), torch.stack(steps, dim=1)

    def _next_step(self, batch: Batch, generated: torch.Tensor) -> Batch:
        """The last generated token over the cache of everything before it."""
        ones = torch.ones((generated.shape[0], 1), dtype=torch.bool, device=self.device)
        return Batch(generated[:, -1:], torch.cat([batch.attention_mask, ones.long()], dim=1),
                     batch.position_ids[:, -1:] + 1, ~ones, ones, batch.past_key_values)

    def _whole(self, prompt: Batch, generated: torch.Tensor) -> Batch:
        """The prompt batch with the generated tokens appended as continuation tokens."""
        zeros = torch.zeros_like(generated, dtype=torch.bool)
        width = generated.shape[1]
        return Batch(torch.cat([prompt.input_ids, generated], dim=1),
                     torch.cat([prompt.attention_mask, torch.ones_like(generated)], dim=1),
                     torch.cat([prompt.position_ids, prompt.position_ids[:, -1:] + torch.arange(1, width + 1, device=self.device)], dim=1),
                     torch.cat([prompt.prompt_mask, zeros], dim=1), torch.cat([prompt.continuation_mask, ~zeros], dim=1))

    def _continuation_logprobs_alone(self, prompt_ids: list[int], continuation: list[int],
                                     interventions: Sequence[Intervention]) -> torch.Tensor:
        """[len(continuation), vocab] log-probabilities predicting each continuation token, one unpadded,
        uncached pass."""
        batch = Batch.from_ids([prompt_ids], [continuation], self.pad_id, self.device)
        logits = self.run(batch, interventions).logits[0]
        start = len(prompt_ids) - 1
        return torch.log_softmax(logits[start:start + len(continuation)].float(), dim=-1).cpu()

    @staticmethod
    def _until_eos(tokens: list[list[int]], eos: int | None) -> list[list[int]]:
        """Each row up to and including its first end-of-sequence token."""
        return [row[: row.index(eos) + 1] if eos in row else row for row in tokens]

    def _decode(self, tokens: list[list[int]], eos: int | None) -> list[str]:
        return [self.tokenizer.decode(row[:-1] if row and row[-1] == eos else row, skip_special_tokens=True).strip()
                for row in self._until_eos(tokens, eos)]
