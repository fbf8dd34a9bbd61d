"""Fast paths broken on purpose (an empty prefill cache, an ignored 4D mask, ignored padding, a cache dropped in
generation, wrong gradients): every one ends in a fallback with the straightforward numbers, or a clear stop."""
from __future__ import annotations

import json

import pytest
import torch
from transformers import DynamicCache

import loctest
from loctest.backend import Batch
from loctest.errors import LoctestWarning
from loctest.selfcheck import SelfCheckError, SelfChecks, difference
from loctest_plugins.backends.nnsight import NNsightBackend
from loctest_plugins.backends.transformer_lens import TransformerLensBackend
from loctest_plugins.truth_neurons.ig import integrated_gradients, reference_integrated_gradients

from conftest import BACKENDS, binary_prompt, make_model, tiny_recipe

PROMPTS = ["The capital of France is", "Q: 2+2?", "A much longer prompt, with many more tokens in it than the others"]
CLASSES = {"transformer-lens": TransformerLensBackend, "nnsight": NNsightBackend}


def sabotaged(backend_name: str, sabotage: str):
    """A fresh tiny-llama model whose backend's fast path ``sabotage`` is broken the way an upstream change could
    break it."""
    model = make_model(backend_name)
    backend = model.backend
    honest_run, honest_prefill = backend.run, backend.prefill

    def run(batch: Batch, interventions=(), capture=(), grad=False):
        if sabotage == "ignored-4d-mask" and batch.attention_mask.dim() == 4:
            width = batch.attention_mask.shape[-1]
            batch = Batch(batch.input_ids, torch.ones(1, width, dtype=torch.long), batch.position_ids,
                          batch.prompt_mask, batch.continuation_mask, batch.past_key_values)
        if sabotage == "ignored-padding" and batch.attention_mask.dim() == 2 and batch.past_key_values is None:
            batch = Batch(batch.input_ids, torch.ones_like(batch.attention_mask), batch.position_ids,
                          batch.prompt_mask, batch.continuation_mask)
        if sabotage == "dropped-generation-cache" and batch.past_key_values is not None and batch.input_ids.shape[1] == 1:
            batch = Batch(batch.input_ids, batch.attention_mask[:, -1:], batch.position_ids, batch.prompt_mask,
                          batch.continuation_mask, DynamicCache())
        out = honest_run(batch, interventions, capture, grad)
        if sabotage == "wrong-gradients" and grad and (batch.attention_mask.dim() == 4 or batch.input_ids.shape[0] > 1):
            out.logits = out.logits * 1.5  # every multi-copy pass (both IG layouts) computes something else
        return out

    def prefill(input_ids, attention_mask=None):
        honest_prefill(input_ids, attention_mask)
        return DynamicCache()  # the transformers 5.24 / TransformerLens 4.3 failure: an empty cache

    backend.run = run
    if sabotage == "empty-prefill":
        backend.prefill = prefill
    return model


def check_outcomes(backend) -> dict[str, tuple[int, str]]:
    return {c["name"]: (c["failures"], c["outcome"]) for c in backend.checks.summary()}


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("sabotage, check", [("empty-prefill", "prefill"), ("ignored-4d-mask", "token-copies")])
def test_broken_ig_fast_path_falls_back_to_the_reference_numbers(backend_name, sabotage, check):
    honest = make_model(backend_name)
    prompt, objective = binary_prompt(honest)
    sites = [("mlp", 0), ("attn", 1)]
    reference = reference_integrated_gradients(honest, prompt, objective, sites, steps=3)
    backend = sabotaged(backend_name, sabotage)
    with pytest.warns(LoctestWarning, match=f"self-check '{check}' failed"):
        result, info = integrated_gradients(backend, prompt, objective, sites, steps=3)
    assert info.layout == "prompt-copies"
    for s in sites:
        assert difference(result.attributions[s], reference.attributions[s]) < 1e-6
    assert check_outcomes(backend)[check] == (1, "fell back to the exact path")
    again, info = integrated_gradients(backend, prompt, objective, sites, steps=3)  # stays on the exact path
    assert info.layout == "prompt-copies" and check_outcomes(backend)[check][0] == 1


def test_wrong_numbers_on_every_ig_layout_stop_the_run():
    backend = sabotaged("nnsight", "wrong-gradients")
    prompt, objective = binary_prompt(backend)
    with pytest.raises(SelfCheckError, match="self-check 'ig-reference' failed.*the run stops"), \
            pytest.warns(LoctestWarning, match="using the exact path"):
        integrated_gradients(backend, prompt, objective, [("mlp", 0)], steps=2)
    assert check_outcomes(backend)["ig-reference"] == (2, "stopped")


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_ignored_padding_falls_back_to_one_prompt_at_a_time(backend_name):
    honest = make_model(backend_name)
    alone = torch.cat([honest.next_token_logprobs([p]) for p in PROMPTS])
    backend = sabotaged(backend_name, "ignored-padding")
    with pytest.warns(LoctestWarning, match="self-check 'padded-batch' failed"):
        together = backend.next_token_logprobs(PROMPTS)
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(backend.next_token_logprobs(PROMPTS[::-1]), alone.flip(0), atol=1e-5, rtol=0)
    assert check_outcomes(backend)["padded-batch"] == (1, "fell back to the exact path")


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_dropped_generation_cache_falls_back_to_uncached_generation(backend_name):
    honest = make_model(backend_name)
    expected = honest.generate(PROMPTS, max_new_tokens=6)
    assert check_outcomes(honest)["cached-generation"] == (0, "verified")
    backend = sabotaged(backend_name, "dropped-generation-cache")
    with pytest.warns(LoctestWarning, match="self-check 'cached-generation' failed"):
        assert backend.generate(PROMPTS, max_new_tokens=6) == expected


def test_a_check_within_tolerance_passes_and_nan_fails():
    checks = SelfChecks()
    assert checks.record("prefill", 1e-6, 1e-3)
    with pytest.warns(LoctestWarning):
        assert not checks.record("padded-batch", float("nan"), 1e-3)
    assert checks.usable("prefill") and not checks.usable("padded-batch")
    assert [c["max_difference"] for c in checks.summary()] == [1e-6, "inf"]


SABOTAGE_PLUGIN = '''
import torch
from loctest import Batch, hookimpl
from loctest_plugins.backends.nnsight import NNsightBackend


class IgnoresPadding(NNsightBackend):
    name = "ignores-padding"

    def run(self, batch, interventions=(), capture=(), grad=False):
        if batch.attention_mask.dim() == 2 and batch.past_key_values is None:
            batch = Batch(batch.input_ids, torch.ones_like(batch.attention_mask), batch.position_ids,
                          batch.prompt_mask, batch.continuation_mask)
        return super().run(batch, interventions, capture, grad)


@hookimpl
def register_backends(register):
    register(IgnoresPadding)
'''

BODY = """
[datasets.tqa]
plugin = "truthfulqa-binary"
limit = 6

[scorers.tqa]
plugin = "binary-choice"
dataset = "tqa"
repetitions = 2

[arms.baseline]
"""


def test_a_run_reports_its_self_checks_and_survives_a_sabotaging_plugin(tmp_path):
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "sabotage.py").write_text(SABOTAGE_PLUGIN)
    recipe = tiny_recipe(tmp_path, BODY)
    honest = loctest.run(recipe, progress=False)
    assert [c["failures"] for c in honest.data["self_checks"]] == [0]
    with pytest.warns(LoctestWarning, match="padded-batch"):
        broken = loctest.run(recipe, backend="ignores-padding", plugins_dirs=[tmp_path / "plugins"], progress=False)
    for metric in ("accuracy", "correct_prob"):
        assert broken.values("baseline", f"tqa.{metric}") == pytest.approx(honest.values("baseline", f"tqa.{metric}"), abs=1e-5)
    checks = json.loads((broken.run_dir / "results.json").read_text())["self_checks"]
    assert [(c["name"], c["failures"], c["outcome"]) for c in checks] == [("padded-batch", 1, "fell back to the exact path")]
    report = (broken.run_dir / "report.md").read_text()
    assert "## Self-checks" in report and "**Warning:** padded-batch" in report
