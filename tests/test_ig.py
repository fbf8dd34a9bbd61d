"""The integrated-gradients engine: equal to the straightforward reference on both backends and several
architectures (and on the embedded model), the whole-prompt fallback, completeness, out-of-memory backoff."""
from __future__ import annotations

import warnings

import pytest
import torch

from loctest import Example
from loctest.errors import LoctestWarning, UserError
from loctest_plugins.common.binary_prompts import BinaryPromptConfig, binary_prompts
from loctest_plugins.truth_neurons.ig import integrated_gradients, label_objective, reference_integrated_gradients

from conftest import (BACKENDS, QUESTION, binary_prompt, cached_model, embedded_model, make_model, planted_model,
                      requires_embedded)

TOLERANCE = 1e-4  # max |engine - reference| / max |reference|, per site and target
def assert_same(engine, reference, sites):
    for s in sites:
        for t in range(2):
            error = (engine.attributions[s][t] - reference.attributions[s][t]).abs().max() / reference.attributions[s][t].abs().max()
            assert error < TOLERANCE, f"{s} target {t}: relative error {error:.2e}"
        torch.testing.assert_close(engine.zeroed[s], reference.zeroed[s], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(engine.value, reference.value, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("model", ["tiny-llama", "tiny-gpt2"])
def test_engine_equals_reference(backend_name, model):
    backend = cached_model(backend_name, model)
    prompt, objective = binary_prompt(backend, correct_is_b=True)
    sites = [(kind, layer) for kind in ("mlp", "attn") for layer in range(2)]
    engine, info = integrated_gradients(backend, prompt, objective, sites, steps=4, batch_tokens=5)
    assert info.layout == "token-copies"
    assert_same(engine, reference_integrated_gradients(backend, prompt, objective, sites, steps=4), sites)


@pytest.mark.parametrize("model", ["tiny-gpt-neox", "tiny-qwen2"])
def test_engine_equals_reference_on_other_architectures(model):
    backend = cached_model("transformer-lens", model)
    prompt, objective = binary_prompt(backend)
    sites = [("attn", 0), ("mlp", 1)]
    engine, info = integrated_gradients(backend, prompt, objective, sites, steps=3)
    assert info.layout == "token-copies"
    assert_same(engine, reference_integrated_gradients(backend, prompt, objective, sites, steps=3), sites)


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_every_prompt_position_policy(backend_name):
    backend = cached_model(backend_name)
    prompt, objective = binary_prompt(backend)
    sites = [("mlp", 0), ("attn", 1)]
    engine, info = integrated_gradients(backend, prompt, objective, sites, steps=3, positions="prompt", batch_tokens=200)
    assert info.layout == "prompt-copies"
    assert_same(engine, reference_integrated_gradients(backend, prompt, objective, sites, steps=3, positions="prompt"), sites)
    last, _ = integrated_gradients(backend, prompt, objective, sites, steps=3)
    assert not torch.allclose(last.attributions[sites[0]], engine.attributions[sites[0]])


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_sliding_window_shorter_than_the_prompt_falls_back_to_whole_prompts(backend_name):
    """tiny-gemma2 attends within 256 tokens on alternate layers: copies of the last token over a longer cached
    prompt do not reproduce the model (one backend computes something else, the other refuses the shapes)."""
    backend = make_model(backend_name, "tiny-gemma2")  # its own: the failed self-check switches token copies off
    long_question = Example("q", "What happens if you swallow gum? " * 8, QUESTION.correct, QUESTION.incorrect)
    prompt, objective = binary_prompt(backend, long_question)
    assert len(backend.tokenize([prompt], special=False)[0]) > 256
    sites = [("attn", 1)]
    with pytest.warns(LoctestWarning, match="self-check 'token-copies' failed.*using the exact path"):
        engine, info = integrated_gradients(backend, prompt, objective, sites, steps=2)
    assert info.layout == "prompt-copies"
    assert_same(engine, reference_integrated_gradients(backend, prompt, objective, sites, steps=2), sites)


def test_completeness_error_shrinks_with_steps():
    """sum_n Attr(n) -> f(x) - f(site zeroed) as m grows (the right Riemann sum's error is O(1/m)), on a tiny
    model whose answer moves a lot along the path (the planted model of test_truth_neurons_selection)."""
    backend = planted_model()
    example = Example("q", "question number 3", ("T",), ("F",))
    prompt = binary_prompts(backend, BinaryPromptConfig(user_prompt="{question} {answer_a}", system_prompt=""), [example])[0]
    labels = [[backend.answer_token_ids(t) for t in pair] for pair in (("A", "a"), ("B", "b"))]
    sites = [("attn", 0), ("mlp", 1)]
    coarse, fine = (integrated_gradients(backend, prompt, label_objective(labels), sites, steps=m)[0] for m in (20, 200))
    for s in sites:
        gap = float(coarse.value[0] - coarse.zeroed[s][0])  # f(T|t): near 1 with the site, near chance without
        assert gap > 0.5
        error_20, error_200 = (abs(float(a.completeness_delta()[s][0])) for a in (coarse, fine))
        assert error_20 > 1e-3 * gap and error_200 < error_20 / 5 and error_200 < 1e-3 * gap


def test_out_of_memory_halves_the_batch(monkeypatch):
    backend = cached_model("nnsight")
    prompt, objective = binary_prompt(backend)
    sites = [("mlp", 0), ("attn", 0), ("mlp", 1)]
    expected, _ = integrated_gradients(backend, prompt, objective, sites, steps=5, batch_tokens=64)
    real = backend.gradients

    def small_memory(batch, *args, **kwargs):
        if batch.input_ids.numel() > 6:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(batch, *args, **kwargs)

    monkeypatch.setattr(backend, "gradients", small_memory)
    engine, info = integrated_gradients(backend, prompt, objective, sites, steps=5, batch_tokens=64)
    assert info.batch_tokens == 4
    for s in sites:
        torch.testing.assert_close(engine.attributions[s], expected.attributions[s], atol=1e-7, rtol=1e-4)


def test_several_objective_columns_from_one_forward_pass():
    backend = cached_model("transformer-lens")
    batch = backend.encode(["The capital of France is", "Q: 2+2?"])
    sites = [("mlp", 1), ("attn", 0)]

    def columns(logits, b):
        last = torch.log_softmax(logits[torch.arange(2), b.last_prompt_index], -1)
        return last[:, [40, 41]]

    _, grads, value = backend.gradients(batch, sites, columns)
    assert value.shape == (2, 2) and grads[sites[0]].shape[:2] == (2, 2)
    for t in range(2):
        _, single, _ = backend.gradients(batch, sites, lambda logits, b: columns(logits, b)[:, t])
        for s in sites:
            torch.testing.assert_close(grads[s][t], single[s])


def test_label_objective_and_its_written_out_gradient():
    torch.manual_seed(0)
    logits = torch.randn(5, 50, dtype=torch.float64, requires_grad=True)
    groups = [[3, 7], [9, 7, 11]]  # a token may sit in several groups
    objective = label_objective(groups)
    probs = logits.softmax(-1)
    plain = torch.stack([probs[:, g].sum(-1) for g in groups], dim=-1)
    torch.testing.assert_close(objective(logits), plain)
    assert torch.autograd.gradcheck(objective, (logits,))


def test_bad_arguments():
    backend = cached_model("transformer-lens")
    prompt, objective = binary_prompt(backend)
    with pytest.raises(UserError, match="site"):
        integrated_gradients(backend, prompt, objective, [("mlp", 2)])
    with pytest.raises(UserError, match="positions"):
        integrated_gradients(backend, prompt, objective, [("mlp", 0)], positions="all")
    with pytest.raises(UserError, match="steps"):
        reference_integrated_gradients(backend, prompt, objective, [("mlp", 0)], steps=0)


@requires_embedded
@pytest.mark.parametrize("backend_name", BACKENDS)
def test_engine_equals_reference_on_the_embedded_model(backend_name):
    """At the protocol's m = 20: MLP and attention sites in low, middle and top layers, both targets. (Float32
    rounding moves with the number of copies per pass: at m = 2 or 4 it reaches 1.3e-4 to 3e-4 relative on some
    layers, at m = 20 it stayed below 6e-6; in float64 the two agree, see test_engine_is_exact_in_float64.)"""
    backend = embedded_model(backend_name)
    prompt, objective = binary_prompt(backend, correct_is_b=True)
    sites = [("mlp", 0), ("attn", 14), ("mlp", 29)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback: the fast layout must hold on the real model
        engine, info = integrated_gradients(backend, prompt, objective, sites, steps=20)
    assert info.layout == "token-copies"
    assert_same(engine, reference_integrated_gradients(backend, prompt, objective, sites, steps=20), sites)
    assert {c["name"]: c["failures"] for c in backend.checks.summary()} == {"prefill": 0, "token-copies": 0, "ig-reference": 0}


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_engine_is_exact_in_float64(backend_name):
    """The engine's differences from the reference are float32 rounding: in float64 they shrink to the float32
    rounding of its stored result."""
    backend = make_model(backend_name, "tiny-llama", tiny_layers=3)
    backend.backend.loaded_module().double()
    backend.dtype = torch.float64
    prompt, objective = binary_prompt(backend)
    sites = [("mlp", 0), ("attn", 1), ("mlp", 2)]
    engine, info = integrated_gradients(backend, prompt, objective, sites, steps=2)
    reference = reference_integrated_gradients(backend, prompt, objective, sites, steps=2)
    assert info.layout == "token-copies"
    for s in sites:
        torch.testing.assert_close(engine.attributions[s].double(), reference.attributions[s].double(), rtol=1e-6, atol=1e-9)
