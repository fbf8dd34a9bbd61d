"""Cross-backend parity: the same computation on TransformerLens and nnsight gives the same numbers on every tiny
architecture (Llama, GPT-2, GPT-NeoX, Qwen2, Gemma-2): scores within 1e-4, integrated gradients within 1e-4 of the
largest attribution, the same located components, the same generated text, and no failed self-check on either.

test_backends.py already compares logits, activations and edited logits of single forward passes, and
test_runner.py one binary-choice recipe on tiny-llama; this file covers what is built on them: one small recipe
per architecture run on both backends (ig-truth-neurons with its attributions and t-tests, probe-heads with the
iti-shift edit, an ipo-lora edit trained on each backend; binary choice, MC1/MC2 and KL on every arm), the IG
engine directly on both layers, and cached greedy generation under edits at each position policy.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import loctest
from loctest import ComponentSet, Example, interventions
from loctest_plugins.common.binary_prompts import BinaryPromptConfig, binary_prompts
from loctest_plugins.datasets.truthfulqa import TruthfulQABinary
from loctest_plugins.truth_neurons.ig import integrated_gradients, label_objective

from conftest import BACKENDS, TINY_MODELS, cached_model


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from a second thread, and on a 2-core CPU shared with other test runs two spinning
    OpenMP threads made this file ten times slower (7 min instead of 45 s, measured); restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


SCORE_ATOL = 1e-4  # per-repetition scorer values, float32 on CPU
IG_RTOL = 1e-4  # max |attr_tl - attr_ns| / max |attr_tl|, per site and target
SHORT_PROMPT = "{question} A: {answer_a} B: {answer_b}"  # byte tokens: keep prompts under gemma2's 256-token window

RECIPE = """[run]
seed = 0
out = "{out}/runs"
cache = "{out}/cache"

[model]
name = "{model}"
device = "cpu"

[datasets.tqa]
plugin = "truthfulqa-binary"
limit = 4

[datasets.short]
plugin = "table"
path = "{out}/short.jsonl"
id = "id"

[datasets.mc]
plugin = "truthfulqa-mc"
limit = 5

[scorers.choice]
plugin = "binary-choice"
dataset = "tqa"
repetitions = 2
system_prompt = ""
user_prompt = "{prompt}"

[scorers.mc]
plugin = "mc"
dataset = "mc"

[scorers.kl]
plugin = "kl"
dataset = "mc"
count = 3

[arms.baseline]

[arms.truth]
locator = {{ plugin = "ig-truth-neurons", dataset = "short", adaptive_threshold = 30, share_threshold = 50, alpha = 0.5, steps = 4, layers = [1], save_attributions = true, system_prompt = "", user_prompt = "{prompt}" }}
editor = "zero-ablation"

[arms.iti]
locator = {{ plugin = "probe-heads", dataset = "mc", top_k = 3, val_fraction = 0.5, c = 100.0 }}
editor = {{ plugin = "iti-shift", dataset = "mc", alpha = 15.0, positions = "all" }}

[arms.ipo]
locator = {{ plugin = "probe-heads", dataset = "mc", top_k = 2, val_fraction = 0.5, c = 100.0 }}
editor = {{ plugin = "ipo-lora", dataset = "mc", tau = 0.5, lr = 0.05, epochs = 1, batch_size = 4, max_pairs = 8 }}
"""


def assert_no_failed_checks(summary: list[dict], where: str) -> None:
    failed = {c["name"]: c["max_difference"] for c in summary if c["failures"]}
    assert not failed, f"{where}: self-checks failed: {failed}"


def short_questions(n: int = 12, chars: int = 100) -> list[dict]:
    """The first shipped binary TruthfulQA questions whose prompt stays within gemma2's 256-token sliding window
    (byte tokens; a longer prompt switches the IG engine's token copies off by design, see test_ig.py)."""
    short = [e for e in TruthfulQABinary().load() if len(e.question) + len(e.correct[0]) + len(e.incorrect[0]) <= chars]
    return [{"id": e.id, "question": e.question, "correct": [e.correct[0]], "incorrect": [e.incorrect[0]]} for e in short[:n]]


def run_on(backend: str, model: str, folder) -> loctest.RunResults:
    folder.mkdir()
    (folder / "short.jsonl").write_text("\n".join(json.dumps(row) for row in short_questions()))
    recipe = folder / "parity.toml"
    recipe.write_text(RECIPE.format(out=folder, model=model, prompt=SHORT_PROMPT))
    return loctest.run(recipe, backend=backend, progress=False)


def relative_gap(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def assert_same_details(a: dict, b: dict, where: str) -> None:
    """A scorer's per-example details: the same ids and orders, numbers within SCORE_ATOL (log-probabilities, sums
    over up to ~100 byte tokens, within 1e-6 relative)."""
    assert a.keys() == b.keys(), where
    for key, value in a.items():
        if key == "per_repetition":
            assert_same_details(value, b[key], f"{where} per_repetition")
        elif key in ("true_logprobs", "false_logprobs"):
            for x, y in zip(value, b[key], strict=True):
                np.testing.assert_allclose(x, y, rtol=1e-6, atol=SCORE_ATOL, err_msg=f"{where} {key}")
        elif key in ("p_correct", "p_incorrect", "correct_prob", "mc2", "kl"):  # per-example probabilities, KL
            np.testing.assert_allclose(value, b[key], rtol=0, atol=SCORE_ATOL, err_msg=f"{where} {key}")
        else:
            assert value == b[key], f"{where} {key}"


@pytest.mark.parametrize("model", TINY_MODELS)
def test_a_recipe_gives_the_same_results_on_both_backends(tmp_path, model):
    tl, ns = (run_on(b, model, tmp_path / b) for b in BACKENDS)
    for results, name in ((tl, "transformer-lens"), (ns, "nnsight")):
        assert results.data["resolved"]["backend"]["plugin"] == name
        assert_no_failed_checks(results.data["self_checks"], f"{model} on {name}")
        assert {c["name"] for c in results.data["self_checks"]} >= {"padded-batch", "prefill", "token-copies", "ig-reference"}
    # located components: IG truth neurons, probe heads
    assert {a: c.names() for a, c in tl.components.items()} == {a: c.names() for a, c in ns.components.items()}
    assert len(tl.components["iti"]) == 3 and len(tl.components["ipo"]) == 2
    # every scorer metric, per repetition (binary choice) or per question (mc, kl), every arm
    for arm, by_scorer in tl.scores.items():
        for scorer, scores in by_scorer.items():
            other = ns.scores[arm][scorer]
            assert scores.values.keys() == other.values.keys()
            for metric, values in scores.values.items():
                np.testing.assert_allclose(values, other.values[metric], rtol=0, atol=SCORE_ATOL,
                                           err_msg=f"{model} {arm} {scorer}.{metric}")
            assert_same_details(scores.details, other.details, f"{model} {arm} {scorer}")
    # the edits act, so the scores above compare edited models too
    for arm in ("iti", "ipo"):
        assert np.abs(np.subtract(tl.values(arm, "mc.mc2"), tl.values("baseline", "mc.mc2"))).max() > 1e-4, arm
        assert min(tl.values(arm, "kl.kl")) > 0, arm
    # ipo-lora: the trained rank-1 edit itself (measured: b within 2e-5 of its largest entry, a within 1e-7)
    edits = [load_file(r.run_dir / "edits" / "ipo.safetensors") for r in (tl, ns)]
    assert edits[0].keys() == edits[1].keys()
    for key, tensor in edits[0].items():
        assert tensor.abs().max() > 0 and relative_gap(edits[1][key], tensor) < 1e-4, f"{model} ipo edit {key}"
    # probe heads: every head's validation accuracy, not only the chosen ones
    probes = [json.loads((r.run_dir / "probe_heads" / "iti.json").read_text()) for r in (tl, ns)]
    assert probes[0] == probes[1]
    assert len(set(probes[0]["validation_accuracy"].values())) > 1  # the probes differ: the ranking means something
    # IG truth neurons: the same questions kept, candidates and survivors, and their statistics
    tables = [json.loads((r.run_dir / "truth_neurons-truth.json").read_text()) for r in (tl, ns)]
    assert tables[0]["counts"] == tables[1]["counts"] and tables[0]["counts"]["candidates"] > 0
    assert [q["half"] for q in tables[0]["questions"]] == [q["half"] for q in tables[1]["questions"]]
    rows = list(zip(tables[0]["neurons"], tables[1]["neurons"], strict=True))
    assert all(a["name"] == b["name"] and a["truth_neuron"] == b["truth_neuron"] for a, b in rows)
    scale = max(abs(a["mean_d"]) for a, _ in rows)
    assert max(abs(a["mean_d"] - b["mean_d"]) for a, b in rows) < IG_RTOL * scale
    assert max(abs(a["p_bonferroni"] - b["p_bonferroni"]) for a, b in rows) < 1e-4
    # ... and the attributions behind them, question by question
    files = sorted((tl.run_dir / "attributions-truth").glob("*.safetensors"))
    assert [f.name for f in files] == sorted(f.name for f in (ns.run_dir / "attributions-truth").glob("*"))
    assert len(files) == tables[0]["counts"]["used"]
    for f in files:
        a, b = load_file(f), load_file(ns.run_dir / "attributions-truth" / f.name)
        assert a.keys() == b.keys()
        for key in a:
            for t in range(len(a[key])):  # attr.*: per target; value, zeroed.*: f per target
                assert relative_gap(b[key][t], a[key][t]) < IG_RTOL, f"{model} {f.name} {key} target {t}"


QUESTION = Example("q", "Swallowed gum?", ("Passes",), ("Stays 7 years",))


@pytest.mark.parametrize("model", TINY_MODELS)
def test_integrated_gradients_agree(model):
    """The engine on both backends, MLP and attention sites of both layers: within IG_RTOL of the largest attribution."""
    found = {}
    for name in BACKENDS:
        backend = cached_model(name, model)
        prompt = binary_prompts(backend, BinaryPromptConfig(system_prompt="", user_prompt=SHORT_PROMPT), [QUESTION])[1]
        labels = [[backend.answer_token_ids(t) for t in pair] for pair in (("B", "b"), ("A", "a"))]
        sites = [("mlp", 0), ("attn", 0), ("mlp", 1), ("attn", 1)]
        found[name], info = integrated_gradients(backend, prompt, label_objective(labels), sites, steps=5)
        assert info.layout == "token-copies", f"{model} on {name}"
        assert_no_failed_checks(backend.checks.summary(), f"{model} on {name}")
    tl, ns = found.values()
    for site, attr in tl.attributions.items():
        for t in range(2):
            assert relative_gap(ns.attributions[site][t], attr[t]) < IG_RTOL, f"{model} {site} target {t}"
        torch.testing.assert_close(ns.zeroed[site], tl.zeroed[site], atol=1e-5, rtol=0)
    torch.testing.assert_close(ns.value, tl.value, atol=1e-5, rtol=0)


PROMPTS = ["Q: What is the capital of France?\nA:", "Q: 2+2?\nA:", "The quick brown fox jumps over"]


@pytest.mark.parametrize("model", TINY_MODELS)
def test_cached_generation_agrees(model):
    """Greedy generation over the key/value cache, plain and under edits at each position policy: the same text."""
    texts = {}
    for name in BACKENDS:
        backend = cached_model(name, model)
        shape = backend.shape
        shift = torch.randn(shape.site_width("attn"), generator=torch.Generator().manual_seed(0)) * 2
        zeroed = ComponentSet([f"mlp:1:{i}" for i in range(0, shape.d_mlp, 3)])
        edits = {"none": [], "last": interventions.zero(zeroed, shape, "last"),
                 "continuation": [interventions.add(("attn", 0), shift, "continuation")],
                 "all": [interventions.add(("attn", 1), shift, "all"), *interventions.zero(zeroed, shape, "all")]}
        texts[name] = {k: backend.generate(PROMPTS, max_new_tokens=12, interventions=v) for k, v in edits.items()}
        assert_no_failed_checks(backend.checks.summary(), f"{model} on {name}")
        assert backend.checks.ran("cached-generation")
    tl, ns = texts.values()
    assert tl == ns
    assert len({tuple(v) for v in tl.values()}) > 1  # the edits change the text
