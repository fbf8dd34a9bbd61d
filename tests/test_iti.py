"""ITI on tiny models: batched probes against scikit-learn, the probe-heads and single-head locators, the
iti-shift edit (its exact vector, and that MC and KL move under it, unlike an edit of only the final token)."""
from __future__ import annotations

import gc
import json

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from loctest import ComponentSet, Example, Intervention
from loctest.context import RunContext
from loctest.errors import UserError
from loctest.progress import Progress
from loctest_plugins.common.head_activations import head_activations
from loctest_plugins.common.memo import ModelMemo
from loctest_plugins.common.qa import QA_PROMPT, labelled_texts
from loctest_plugins.editors.iti_shift import ITIShift
from loctest_plugins.locators.probe_heads import ProbeHeads, fit_logistic_probes, question_split
from loctest_plugins.locators.single_head import SingleHead
from loctest_plugins.scorers.kl import KLDivergence
from loctest_plugins.scorers.mc import MultipleChoice

from conftest import cached_model

WORDS = "sky cat dog sun ice elk owl ant bee yak fox hen".split()  # answers of equal length: MC2 is not ~0
QA = [Example(f"q{i}", f"Is the {WORDS[i % 12]} {WORDS[(5 * i + 1) % 12]}?",
              (f"No, {WORDS[(i + 2) % 12]}.", f"Ok, {WORDS[(i + 7) % 12]}."),
              (f"Ya, {WORDS[(i + 5) % 12]}.", f"Hm, {WORDS[(i + 3) % 12]}.", f"So, {WORDS[(i + 9) % 12]}."))
      for i in range(24)]


def make_context(tmp_path, backend="transformer-lens", model="tiny-llama", arm="arm", seed=0):
    return RunContext(cached_model(backend, model), seed, tmp_path, tmp_path / "cache", Progress(enabled=False),
                      datasets={"qa": lambda: QA}, arm=arm)


def sklearn_probes(x: np.ndarray, y: np.ndarray, c: float = 1.0):
    """The per-head reference: one scikit-learn LogisticRegression per head (ITI's loop), in float64."""
    return [LogisticRegression(C=c, max_iter=5000, tol=1e-10).fit(x[g].astype(np.float64), y) for g in range(x.shape[0])]


def planted_heads(seed=0, heads=24, n=800, d=16):
    """Features of ``heads`` probes with a truth signal of growing strength in some of them."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.normal(size=(heads, n, d)) * rng.uniform(0.2, 3.0, size=(heads, 1, d))
    x += (y[None, :, None] - 0.5) * np.linspace(0, 1.5, heads)[:, None, None] * rng.normal(size=(heads, 1, d))
    return x.astype(np.float32), y


def test_batched_probes_equal_sklearn_per_head():
    x, y = planted_heads()
    train, val = slice(0, 600), slice(600, None)
    w, b = fit_logistic_probes(torch.from_numpy(x[:, train]), torch.from_numpy(y[train]), c=0.5, tol=1e-7)
    reference = sklearn_probes(x[:, train], y[train], c=0.5)
    ref_w = np.stack([r.coef_[0] for r in reference])
    ref_b = np.array([r.intercept_[0] for r in reference])
    np.testing.assert_allclose(w.numpy(), ref_w, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(b.numpy(), ref_b, rtol=1e-3, atol=1e-3)
    ours = ((np.einsum("gnd,gd->gn", x[:, val], w.numpy()) + b.numpy()[:, None] > 0) == y[val]).mean(1)
    theirs = np.array([r.score(x[g, val], y[val]) for g, r in enumerate(reference)])
    assert np.abs(ours - theirs).max() <= 0.01
    assert theirs[-1] > 0.9 > 0.6 > theirs[0]  # the planted signal is there to find


def test_probes_converge_on_separable_heads():
    """Perfectly separable data: the penalty keeps the optimum finite and Newton must still reach it."""
    y = np.tile([0, 1], 50)
    x = np.stack([np.stack([y * 4.0 - 2.0, np.linspace(-1, 1, 100)], -1)]).astype(np.float32)
    w, b = fit_logistic_probes(torch.from_numpy(x), torch.from_numpy(y), tol=1e-7)
    ref = sklearn_probes(x, y)[0]
    np.testing.assert_allclose(w[0].numpy(), ref.coef_[0], rtol=1e-3, atol=1e-4)
    assert abs(float(b[0]) - ref.intercept_[0]) < 1e-3


def test_question_split_is_seeded_and_keeps_both_parts():
    a = question_split(10, 0.2, np.random.default_rng(3))
    assert int(a.sum()) == 2 and torch.equal(a, question_split(10, 0.2, np.random.default_rng(3)))
    assert int(question_split(2, 0.9, np.random.default_rng(0)).sum()) == 1


@pytest.mark.parametrize("model", ["tiny-llama", "tiny-gpt2"])
def test_probe_heads_ranks_heads_by_validation_accuracy_like_sklearn(tmp_path, model):
    context = make_context(tmp_path, model=model, arm="probe")
    shape = context.shape
    heads = ProbeHeads({"dataset": "qa", "top_k": 3}).locate(context)
    assert len(heads) == 3 and all(c.kind == "head" for c in heads)
    saved = json.loads((tmp_path / "probe_heads" / "probe.json").read_text())
    accuracy = saved["validation_accuracy"]
    assert len(accuracy) == shape.n_layers * shape.n_heads
    assert sorted(accuracy.values(), reverse=True)[:3] == [accuracy[c.name] for c in heads]
    # the same split and activations through scikit-learn give the same validation accuracies
    acts = head_activations(context, "qa", QA_PROMPT, "test")
    val = question_split(len(QA), 0.2, context.rng("probe-heads", "qa"))[acts.question].numpy()
    x = acts.values.flatten(1, 2).transpose(0, 1).numpy()
    y = acts.truthful.numpy()
    for g, probe in enumerate(sklearn_probes(x[:, ~val], y[~val])):
        name = f"head:{g // shape.n_heads}:{g % shape.n_heads}"
        assert abs(probe.score(x[g, val], y[val]) - accuracy[name]) <= 0.01, name


def test_activations_are_each_heads_output_at_the_last_token(tmp_path):
    context = make_context(tmp_path)
    acts = head_activations(context, "qa", QA_PROMPT, "test")
    texts, truthful, question = labelled_texts(QA, QA_PROMPT)
    assert acts.values.shape == (len(texts), context.shape.n_layers, context.shape.n_heads, context.shape.d_head)
    assert torch.equal(acts.truthful, truthful) and torch.equal(acts.question, question)
    assert texts[0] == f"Q: {QA[0].question}\nA: {QA[0].correct[0]}" and truthful[:2].all() and not truthful[2:5].any()
    batch = context.model.encode(texts[7:8])
    alone = context.model.run(batch, capture=[("attn", 1)]).activations[("attn", 1)][0, -1]
    torch.testing.assert_close(acts.values[7, 1].flatten(), alone, rtol=1e-4, atol=1e-5)


def test_model_memo_computes_once_per_model_and_texts_and_forgets_a_dropped_model():
    class Model:
        pass

    memo, calls, model = ModelMemo(), [], Model()
    value = memo.get(model, ["a", "b"], lambda: calls.append("ab") or len(calls))
    assert memo.get(model, ["a", "b"], lambda: calls.append("again")) == value and calls == ["ab"]
    assert memo.has(model, ["a", "b"]) and not memo.has(model, ["ab"]) and not memo.has(Model(), ["a", "b"])
    memo.get(model, ["ab"], lambda: calls.append("ab joined"))
    assert calls == ["ab", "ab joined"]
    del model
    gc.collect()
    assert not memo._values  # the model's values went with it


def test_single_head_permutation_sweeps_every_head_once(tmp_path):
    context = make_context(tmp_path, arm="a")
    total = context.shape.n_layers * context.shape.n_heads
    drawn = [SingleHead({"index": i}).locate(context).names()[0] for i in range(total)]
    assert len(set(drawn)) == total
    other_arm = make_context(tmp_path, arm="b")
    assert SingleHead({"index": 2}).locate(other_arm).names()[0] == drawn[2]  # arms of a sweep share the order
    assert [SingleHead({"index": i, "order_seed": 1}).locate(context).names()[0] for i in range(total)] != drawn
    assert SingleHead({"layer": 1, "head": 3}).locate(context).names() == ["head:1:3"]
    with pytest.raises(UserError, match=f"index {total} out of range"):
        SingleHead({"index": total}).locate(context)


@pytest.mark.parametrize("settings", [{}, {"layer": 1}, {"layer": 1, "head": 2, "index": 0}])
def test_single_head_needs_a_head_or_an_index(settings):
    with pytest.raises(ValueError):
        SingleHead(settings)


def test_iti_shift_adds_alpha_std_mass_mean_at_the_heads_slices(tmp_path):
    context = make_context(tmp_path, arm="edit")
    heads = ComponentSet(["head:0:1", "head:1:3", "head:1:0"])
    edits = ITIShift({"dataset": "qa", "alpha": 4.0, "positions": "all"}).interventions(context, heads)
    acts = head_activations(context, "qa", QA_PROMPT, "test")
    d = context.shape.d_head
    for layer, head in ((0, 1), (1, 3), (1, 0)):
        values = acts.values[:, layer, head].double()
        direction = values[acts.truthful].mean(0) - values[~acts.truthful].mean(0)
        direction /= direction.norm()
        sigma = np.std((values @ direction).numpy())
        edit = next(iv for iv in edits if iv.site == ("attn", layer))
        added = edit.transform(torch.zeros(1, 1, context.shape.n_heads * d))[0, 0].double()
        torch.testing.assert_close(added[head * d:(head + 1) * d], 4.0 * sigma * direction, rtol=1e-4, atol=1e-6)
    untouched = edits[0].transform(torch.zeros(1, 1, context.shape.n_heads * d))[0, 0]
    assert not untouched[:d].any() and not untouched[2 * d:].any()  # only head 1 of layer 0
    saved = json.loads((tmp_path / "iti_shift" / "edit.json").read_text())
    assert saved["positions"] == "all" and set(saved["heads"]) == {"head:0:1", "head:1:3", "head:1:0"}
    assert "alpha=4" in edits[0].description and "(all)" in edits[0].description


def test_iti_shift_needs_a_declared_dataset(tmp_path):
    with pytest.raises(UserError, match="no dataset 'nope'"):
        ITIShift({"dataset": "nope"}).interventions(make_context(tmp_path), ComponentSet(["head:0:0"]))


def final_token_port(edits: list[Intervention]) -> list[Intervention]:
    """The public ITI port's MC evaluation (honest_llama #47): the shift added only at the last token of the
    whole scored sequence (the last column: batches are left-padded)."""
    def last_column_only(transform):
        def apply(x):
            out = x.clone()
            out[:, -1:] = transform(x[:, -1:])
            return out
        return apply
    return [Intervention(iv.site, "all", last_column_only(iv.transform), "final token only") for iv in edits]


def test_mc_and_kl_move_under_the_shift_but_not_under_a_final_token_edit(tmp_path):
    context = make_context(tmp_path, arm="edit")
    heads = ProbeHeads({"dataset": "qa", "top_k": 4}).locate(context)
    mc, kl = MultipleChoice({"dataset": "qa"}), KLDivergence({"dataset": "qa", "count": 10})
    before = mc.score(context, [])
    assert np.mean(kl.score(context, []).values["kl"]) == 0.0
    for policy in ("last", "continuation", "last+continuation", "all"):
        edits = ITIShift({"dataset": "qa", "alpha": 15.0, "positions": policy}).interventions(context, heads)
        after = mc.score(context, edits)
        assert np.abs(np.subtract(after.values["mc2"], before.values["mc2"])).max() > 1e-4, policy
        assert np.mean(kl.score(context, edits).values["kl"]) > 1e-5, policy
    port = final_token_port(ITIShift({"dataset": "qa", "alpha": 15.0, "positions": "all"}).interventions(context, heads))
    assert mc.score(context, port).values == before.values
    assert np.mean(kl.score(context, port).values["kl"]) == 0.0
