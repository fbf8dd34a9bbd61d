"""Both backends: padding, parity, interventions, gradients, hook cleanup, generation."""
from __future__ import annotations

import pytest
import torch

from loctest import ComponentSet, interventions
from loctest.backend import Batch

from conftest import BACKENDS, TINY_MODELS, cached_backend, make_backend

PROMPTS = ["The capital of France is", "Q: 2+2?", "A much longer prompt, with many more tokens in it than the others"]
ATOL = 1e-5  # float32 on CPU


def test_padded_batch_equals_examples_alone(tiny_backend):
    batch = tiny_backend.encode(PROMPTS)
    assert (batch.attention_mask == 0).any(), "the prompts should need padding"
    together = tiny_backend.next_token_logprobs(PROMPTS)
    alone = torch.cat([tiny_backend.next_token_logprobs([p]) for p in PROMPTS])
    torch.testing.assert_close(together, alone, atol=ATOL, rtol=0)


@pytest.mark.parametrize("model", TINY_MODELS)
def test_backends_agree_on_every_architecture(model):
    """Same logits, activations and edited logits on TransformerLens and nnsight (tolerance 1e-5)."""
    tl, ns = (cached_backend(b, model) for b in BACKENDS)
    comps = ComponentSet(["mlp:0:3", "head:1:2", "attn:0:1:5"])
    edits = interventions.zero(comps, tl.shape, "prompt")
    sites = [("mlp", 0), ("attn", 1)]
    for b in (tl, ns):
        assert b.shape == tl.shape
    batch = tl.encode(PROMPTS)
    out_tl, out_ns = (b.run(batch, edits, capture=sites) for b in (tl, ns))
    mask = batch.attention_mask.bool()
    torch.testing.assert_close(out_tl.logits[mask], out_ns.logits[mask], atol=ATOL, rtol=0)
    for s in sites:
        torch.testing.assert_close(out_tl.activations[s][mask], out_ns.activations[s][mask], atol=ATOL, rtol=0)
    # the edit happened where it should: zeroed columns at prompt positions
    assert out_tl.activations[("mlp", 0)][mask][:, 3].abs().max() == 0
    assert out_tl.activations[("attn", 1)][mask][:, 2 * tl.shape.d_head:3 * tl.shape.d_head].abs().max() == 0


def test_interventions_change_output_only_where_asked(tiny_backend):
    comps = ComponentSet([f"mlp:0:{i}" for i in range(20)])
    base = tiny_backend.next_token_logprobs(PROMPTS)
    last = tiny_backend.next_token_logprobs(PROMPTS, interventions.zero(comps, tiny_backend.shape, "last"))
    cont = tiny_backend.next_token_logprobs(PROMPTS, interventions.zero(comps, tiny_backend.shape, "continuation"))
    assert (last - base).abs().max() > 1e-4
    torch.testing.assert_close(cont, base)  # no continuation tokens: nothing to edit


def test_scale_add_replace(tiny_backend):
    shape = tiny_backend.shape
    comps = ComponentSet(["mlp:1:7", "mlp:1:9"])
    batch = tiny_backend.encode(PROMPTS)
    site = ("mlp", 1)
    base = tiny_backend.run(batch, capture=[site]).activations[site]
    scaled = tiny_backend.run(batch, interventions.scale(comps, shape, 2.0, "all"), capture=[site]).activations[site]
    real = batch.attention_mask.bool()
    torch.testing.assert_close(scaled[real][:, [7, 9]], 2 * base[real][:, [7, 9]])
    torch.testing.assert_close(scaled[..., :7], base[..., :7])
    vec = torch.zeros(shape.d_mlp)
    vec[7] = 1.5
    added = tiny_backend.run(batch, [interventions.add(site, vec, "last")], capture=[site]).activations[site]
    rows = torch.arange(len(PROMPTS))
    torch.testing.assert_close(added[rows, -1, 7], base[rows, -1, 7] + 1.5)
    values = {site: torch.full((shape.d_mlp,), 3.0)}
    replaced = tiny_backend.run(batch, interventions.replace(comps, shape, values, "last"), capture=[site]).activations[site]
    assert torch.all(replaced[rows, -1][:, [7, 9]] == 3.0)


def test_gradients_match_finite_differences(tiny_backend):
    batch = tiny_backend.encode(PROMPTS[:2])
    site = ("mlp", 0)
    target = 42

    def objective(logits, b):
        return torch.log_softmax(logits[torch.arange(logits.shape[0]), b.last_prompt_index], -1)[:, target]

    acts, grads, value = tiny_backend.gradients(batch, [site], objective)
    assert grads[site].shape == acts[site].shape
    assert all(not p.requires_grad for p in tiny_backend.loaded_module().parameters())
    eps = 1e-3
    column = 5
    bump = torch.zeros(tiny_backend.shape.d_mlp)
    bump[column] = eps
    bumped = tiny_backend.run(batch, [interventions.add(site, bump, "last")]).logits
    numeric = (objective(bumped, batch) - value) / eps
    analytic = grads[site][torch.arange(2), batch.last_prompt_index, column]
    torch.testing.assert_close(numeric, analytic, atol=2e-3, rtol=2e-2)


def test_hooks_removed_when_an_intervention_raises(tiny_backend):
    def broken(x):
        raise RuntimeError("plugin bug")

    bad = interventions.Intervention(("mlp", 0), "last", broken, "broken")
    before = tiny_backend.next_token_logprobs(PROMPTS[:1])
    with pytest.raises(Exception):
        tiny_backend.next_token_logprobs(PROMPTS[:1], [bad])
    after = tiny_backend.next_token_logprobs(PROMPTS[:1])
    torch.testing.assert_close(before, after)


def test_generation_with_interventions_and_prefix_cache(tiny_backend):
    plain = tiny_backend.generate(PROMPTS[:2], max_new_tokens=5)
    assert len(plain) == 2
    comps = ComponentSet([f"mlp:{l}:{i}" for l in range(2) for i in range(tiny_backend.shape.d_mlp)])
    edited = tiny_backend.generate(PROMPTS[:2], max_new_tokens=5,
                                   interventions=interventions.zero(comps, tiny_backend.shape, "all"))
    assert edited != plain
    # the KV-cache path gives the same next-token logits as the full prompt
    ids = torch.tensor([tiny_backend.tokenize(PROMPTS[:1], special=True)[0]])
    cache = tiny_backend.prefill(ids[:, :-1])
    n = ids.shape[1]
    step = Batch(ids[:, -1:], torch.ones(1, n, dtype=torch.long), torch.tensor([[n - 1]]),
                 torch.ones(1, 1, dtype=torch.bool), torch.zeros(1, 1, dtype=torch.bool), cache)
    full = tiny_backend.run(tiny_backend.encode(PROMPTS[:1])).logits[0, -1]
    torch.testing.assert_close(tiny_backend.run(step).logits[0, -1], full, atol=ATOL, rtol=0)


def test_cached_generation_equals_uncached_greedy(tiny_backend):
    """Generation with a KV cache gives the tokens a full re-run of the growing sequence would pick."""
    comps = ComponentSet([f"mlp:0:{i}" for i in range(30)])
    for policy in ("last", "continuation", "all"):
        edits = interventions.zero(comps, tiny_backend.shape, policy)
        texts = tiny_backend.generate(PROMPTS, max_new_tokens=6, interventions=edits)
        for prompt, text in zip(PROMPTS, texts):
            ids = tiny_backend.tokenize([prompt], special=False)[0]
            new: list[int] = []
            for _ in range(6):
                batch = Batch.from_ids([ids], [new], tiny_backend.pad_id)
                token = int(tiny_backend.run(batch, edits).logits[0, -1].argmax())
                if token == tiny_backend.tokenizer.eos_token_id:
                    break
                new.append(token)
            assert text == tiny_backend.tokenizer.decode(new, skip_special_tokens=True).strip()


def test_cache_identity_covers_backend_versions_and_weights():
    tl, ns = (cached_backend(b) for b in BACKENDS)
    assert tl.identity()["backend"] != ns.identity()["backend"]
    assert tl.identity()["top_logprobs"] == ns.identity()["top_logprobs"]  # same weights, same fingerprint
    assert {"torch", "transformers", "transformer-lens", "nnsight", "peft"} <= set(tl.identity()["versions"])
    reseeded = make_backend("nnsight", tiny_seed=1)
    assert reseeded.identity()["top_ids"] != ns.identity()["top_ids"] or reseeded.identity()["top_logprobs"] != ns.identity()["top_logprobs"]
