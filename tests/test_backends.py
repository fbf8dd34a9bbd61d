"""Both backends: padding, parity, interventions, gradients, hook cleanup, generation."""
from __future__ import annotations

import re

import pytest
import torch

from loctest import ComponentSet, interventions
from loctest.backend import Batch

from conftest import BACKENDS, TINY_MODELS, cached_model, make_model

PROMPTS = ["The capital of France is", "Q: 2+2?", "A much longer prompt, with many more tokens in it than the others"]
ATOL = 1e-5  # float32 on CPU


def test_padded_batch_equals_examples_alone(tiny_model):
    batch = tiny_model.encode(PROMPTS)
    assert (batch.attention_mask == 0).any(), "the prompts should need padding"
    together = tiny_model.next_token_logprobs(PROMPTS)
    alone = torch.cat([tiny_model.next_token_logprobs([p]) for p in PROMPTS])
    torch.testing.assert_close(together, alone, atol=ATOL, rtol=0)


@pytest.mark.parametrize("model", TINY_MODELS)
def test_backends_agree_on_every_architecture(model):
    """Same logits, activations and edited logits on TransformerLens and nnsight (tolerance 1e-5)."""
    tl, ns = (cached_model(b, model) for b in BACKENDS)
    comps = ComponentSet(["mlp:0:3", "head:1:2", "attn:0:1:5"])
    edits = interventions.zero(comps, tl.shape, "prompt") + interventions.scale(ComponentSet(["resid:0"]), tl.shape, 0.5, "prompt")
    sites = [("mlp", 0), ("attn", 1), ("resid", 0), ("resid", 1)]
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


def _by_transformer_lens_name(model, name: str, batch: Batch) -> torch.Tensor:
    """The activation TransformerLens itself caches under ``name``, flattened to [B, P, width]."""
    _, cache = model.backend.bridge.run_with_cache(batch.input_ids, attention_mask=batch.attention_mask,
                                                   position_ids=batch.position_ids, names_filter=[name])
    return cache[name].reshape(*batch.input_ids.shape, -1)


def _by_nnsight_path(model, path: str, batch: Batch) -> torch.Tensor:
    """The value nnsight itself saves at ``path`` (``a.b[3].c.input``), read from the language model's root."""
    envoy = model.backend.lm
    parts = re.findall(r"\w+|\[\d+\]", path)
    with model.backend.lm.trace({"input_ids": batch.input_ids, "attention_mask": batch.attention_mask},
                                position_ids=batch.position_ids):
        for part in parts[:-1]:
            envoy = envoy[int(part[1:-1])] if part.startswith("[") else getattr(envoy, part)
        saved = getattr(envoy, parts[-1]).save()
    return saved.reshape(*batch.input_ids.shape, -1)


@pytest.mark.parametrize("model", TINY_MODELS)
def test_site_names_resolve_to_the_same_activation_through_each_backend(model):
    """components/ARM.json names: each backend's name of a site, read back with that backend's own library,
    is the activation the backend captures, and both backends' names point at the same tensor."""
    tl, ns = (cached_model(b, model) for b in BACKENDS)
    batch = tl.encode(PROMPTS)
    mask = batch.attention_mask.bool()
    for site in [("mlp", 0), ("attn", 1), ("resid", 0)]:
        captured = tl.run(batch, capture=[site]).activations[site]
        by_tl = _by_transformer_lens_name(tl, tl.site_name(site), batch)
        by_ns = _by_nnsight_path(ns, ns.site_name(site), batch)
        torch.testing.assert_close(by_tl[mask], captured[mask], atol=ATOL, rtol=0)
        torch.testing.assert_close(by_ns[mask], captured[mask], atol=ATOL, rtol=0)
    assert tl.site_name(("attn", 1)) == "blocks.1.attn.hook_z"
    assert ns.site_name(("mlp", 0)).endswith(".input") and "[0]" in ns.site_name(("mlp", 0))


def test_interventions_change_output_only_where_asked(tiny_model):
    comps = ComponentSet([f"mlp:0:{i}" for i in range(20)])
    base = tiny_model.next_token_logprobs(PROMPTS)
    last = tiny_model.next_token_logprobs(PROMPTS, interventions.zero(comps, tiny_model.shape, "last"))
    cont = tiny_model.next_token_logprobs(PROMPTS, interventions.zero(comps, tiny_model.shape, "continuation"))
    assert (last - base).abs().max() > 1e-4
    torch.testing.assert_close(cont, base)  # no continuation tokens: nothing to edit


def test_scale_add_replace(tiny_model):
    shape = tiny_model.shape
    comps = ComponentSet(["mlp:1:7", "mlp:1:9"])
    batch = tiny_model.encode(PROMPTS)
    site = ("mlp", 1)
    base = tiny_model.run(batch, capture=[site]).activations[site]
    scaled = tiny_model.run(batch, interventions.scale(comps, shape, 2.0, "all"), capture=[site]).activations[site]
    real = batch.attention_mask.bool()
    torch.testing.assert_close(scaled[real][:, [7, 9]], 2 * base[real][:, [7, 9]])
    torch.testing.assert_close(scaled[..., :7], base[..., :7])
    vec = torch.zeros(shape.d_mlp)
    vec[7] = 1.5
    added = tiny_model.run(batch, [interventions.add(site, vec, "last")], capture=[site]).activations[site]
    rows = torch.arange(len(PROMPTS))
    torch.testing.assert_close(added[rows, -1, 7], base[rows, -1, 7] + 1.5)
    values = {site: torch.full((shape.d_mlp,), 3.0)}
    replaced = tiny_model.run(batch, interventions.replace(comps, shape, values, "last"), capture=[site]).activations[site]
    assert torch.all(replaced[rows, -1][:, [7, 9]] == 3.0)


def test_gradients_match_finite_differences(tiny_model):
    batch = tiny_model.encode(PROMPTS[:2])
    site = ("mlp", 0)
    target = 42

    def objective(logits, b):
        return torch.log_softmax(logits[torch.arange(logits.shape[0]), b.last_prompt_index], -1)[:, target]

    acts, grads, value = tiny_model.gradients(batch, [site], objective)
    assert grads[site].shape == acts[site].shape
    assert all(not p.requires_grad for p in tiny_model.backend.loaded_module().parameters())
    eps = 1e-3
    column = 5
    bump = torch.zeros(tiny_model.shape.d_mlp)
    bump[column] = eps
    bumped = tiny_model.run(batch, [interventions.add(site, bump, "last")]).logits
    numeric = (objective(bumped, batch) - value) / eps
    analytic = grads[site][torch.arange(2), batch.last_prompt_index, column]
    torch.testing.assert_close(numeric, analytic, atol=2e-3, rtol=2e-2)


def test_hooks_removed_when_an_intervention_raises(tiny_model):
    def broken(x):
        raise RuntimeError("plugin bug")

    bad = interventions.Intervention(("mlp", 0), "last", broken, "broken")
    before = tiny_model.next_token_logprobs(PROMPTS[:1])
    with pytest.raises(Exception):
        tiny_model.next_token_logprobs(PROMPTS[:1], [bad])
    after = tiny_model.next_token_logprobs(PROMPTS[:1])
    torch.testing.assert_close(before, after)


def test_generation_with_interventions_and_prefix_cache(tiny_model):
    plain = tiny_model.generate(PROMPTS[:2], max_new_tokens=5)
    assert len(plain) == 2
    comps = ComponentSet([f"mlp:{l}:{i}" for l in range(2) for i in range(tiny_model.shape.d_mlp)])
    edited = tiny_model.generate(PROMPTS[:2], max_new_tokens=5,
                                   interventions=interventions.zero(comps, tiny_model.shape, "all"))
    assert edited != plain
    # the KV-cache path gives the same next-token logits as the full prompt
    ids = torch.tensor([tiny_model.tokenize(PROMPTS[:1], special=True)[0]])
    cache = tiny_model.prefill(ids[:, :-1])
    n = ids.shape[1]
    step = Batch(ids[:, -1:], torch.ones(1, n, dtype=torch.long), torch.tensor([[n - 1]]),
                 torch.ones(1, 1, dtype=torch.bool), torch.zeros(1, 1, dtype=torch.bool), cache)
    full = tiny_model.run(tiny_model.encode(PROMPTS[:1])).logits[0, -1]
    torch.testing.assert_close(tiny_model.run(step).logits[0, -1], full, atol=ATOL, rtol=0)


def test_cached_generation_equals_uncached_greedy(tiny_model):
    """Generation with a KV cache gives the tokens a full re-run of the growing sequence would pick."""
    comps = ComponentSet([f"mlp:0:{i}" for i in range(30)])
    for policy in ("last", "continuation", "all"):
        edits = interventions.zero(comps, tiny_model.shape, policy)
        texts = tiny_model.generate(PROMPTS, max_new_tokens=6, interventions=edits)
        for prompt, text in zip(PROMPTS, texts):
            ids = tiny_model.tokenize([prompt], special=False)[0]
            new: list[int] = []
            for _ in range(6):
                batch = Batch.from_ids([ids], [new], tiny_model.pad_id)
                token = int(tiny_model.run(batch, edits).logits[0, -1].argmax())
                if token == tiny_model.tokenizer.eos_token_id:
                    break
                new.append(token)
            assert text == tiny_model.tokenizer.decode(new, skip_special_tokens=True).strip()


def test_cache_identity_covers_backend_versions_and_weights():
    tl, ns = (cached_model(b) for b in BACKENDS)
    assert tl.identity()["backend"] != ns.identity()["backend"]
    assert tl.identity()["top_logprobs"] == ns.identity()["top_logprobs"]  # same weights, same fingerprint
    assert {"torch", "transformers", "transformer-lens", "nnsight", "peft"} <= set(tl.identity()["versions"])
    reseeded = make_model("nnsight", tiny_seed=1)
    assert reseeded.identity()["top_ids"] != ns.identity()["top_ids"] or reseeded.identity()["top_logprobs"] != ns.identity()["top_logprobs"]


def test_capture_at_positions_matches_each_text_alone_and_capture_last(tiny_model):
    sites = [("mlp", 1), ("resid", 0)]
    answers = [" Paris", " 4", " yes"]
    together = tiny_model.capture(PROMPTS, sites, "all", answers)
    lengths = [len(tiny_model.encode([p], [a]).input_ids[0]) for p, a in zip(PROMPTS, answers)]
    for text, prompt, answer, length in zip(together, PROMPTS, answers, lengths):
        (alone,) = tiny_model.capture([prompt], sites, "all", [answer])
        for s in sites:
            assert text[s].shape == (length, tiny_model.shape.site_width(s[0]))
            torch.testing.assert_close(text[s], alone[s], atol=ATOL, rtol=0)
    last = tiny_model.capture(PROMPTS, sites, "last")
    by_capture_last = tiny_model.capture_last(PROMPTS, sites)
    for s in sites:
        torch.testing.assert_close(torch.cat([t[s] for t in last]), by_capture_last[s], atol=ATOL, rtol=0)
    answer_tokens = tiny_model.capture(PROMPTS, sites, "continuation", answers)
    assert [t[sites[0]].shape[0] for t in answer_tokens] == [len(tiny_model.tokenize([a], special=False)[0]) for a in answers]
