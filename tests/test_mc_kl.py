"""The mc and kl scorers against hand references computed one example at a time (no padding), and the
truthfulqa-mc dataset against its source file."""
from __future__ import annotations

import json

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import ttest_rel

from loctest import Example, Scores, interventions
from loctest.context import RunContext
from loctest.progress import Progress
from loctest_plugins.common.paired import paired_comparison
from loctest_plugins.datasets.truthfulqa import DATA
from loctest_plugins.datasets.truthfulqa_mc import TruthfulQAMC
from loctest_plugins.scorers.kl import KLDivergence
from loctest_plugins.scorers.mc import MultipleChoice

from conftest import cached_model, tiny_recipe

# answers of very different lengths, so a batch holds much padding
QA = [Example("a", "Where is the cat?", ("On the mat.", "Nowhere in particular, it moves around a lot."),
              ("In the sky.", "Under the sea, with fish.", "Moon.")),
      Example("b", "What colour is snow?", ("White.",), ("Green, always.", "Blue.")),
      Example("c", "Can pigs fly?", ("No.", "Not without help."), ("Yes, on Tuesdays they fly south.",)),
      Example("d", "Is ice cold?", ("Yes, it is cold.",), ("No.", "It is hot.", "Ice is a kind of fire."))]


def make_context(backend_name, seed=0, arm="arm"):
    return RunContext(cached_model(backend_name), seed, None, None, Progress(enabled=False),
                      datasets={"qa": lambda: QA}, arm=arm)


def answer_rows(backend, prompt: str, answer: str, edits=()) -> torch.Tensor:
    """One unpadded text: log-softmax rows at the positions that predict the answer's tokens."""
    batch = backend.encode([prompt], [answer])
    n_answer = int(batch.continuation_mask.sum())
    assert not (batch.attention_mask == 0).any()
    logits = backend.run(batch, edits).logits[0]
    return torch.log_softmax(logits[-n_answer - 1:-1].float(), -1), batch.input_ids[0, -n_answer:]


def test_mc_equals_a_hand_reference_computed_one_answer_at_a_time(backend_name):
    context = make_context(backend_name)
    edits = [interventions.add(("attn", 0), torch.randn(context.shape.site_width("attn"),
                                                       generator=torch.Generator().manual_seed(0)), "all")]
    for iv in ([], edits):
        scores = MultipleChoice({"dataset": "qa"}).score(context, iv)
        for i, ex in enumerate(QA):
            lp = []
            for answer in ex.correct + ex.incorrect:
                rows, tokens = answer_rows(context.model, f"Q: {ex.question}\nA:", f" {answer}", iv)
                lp.append(float(rows[torch.arange(len(tokens)), tokens].sum()))
            true, false = np.array(lp[:len(ex.correct)]), np.array(lp[len(ex.correct):])
            np.testing.assert_allclose(scores.details["true_logprobs"][i], true, rtol=1e-4, atol=1e-4)
            np.testing.assert_allclose(scores.details["false_logprobs"][i], false, rtol=1e-4, atol=1e-4)
            assert scores.values["mc1"][i] == float(true[0] > false.max())
            mass = np.exp(true).sum() / (np.exp(true).sum() + np.exp(false).sum())
            assert abs(scores.values["mc2"][i] - mass) < 1e-5
    assert scores.details["id"] == ["a", "b", "c", "d"]


def test_kl_equals_a_hand_reference_and_is_zero_without_an_edit(backend_name):
    context = make_context(backend_name)
    scorer = KLDivergence({"dataset": "qa", "count": 3})
    assert scorer.score(context, []).values["kl"] == [0.0, 0.0, 0.0]
    edits = [interventions.add(("attn", 1), torch.randn(context.shape.site_width("attn"),
                                                       generator=torch.Generator().manual_seed(1)), "continuation")]
    scores = scorer.score(context, edits)
    assert len(scores.details["id"]) == 3
    for id_, value in zip(scores.details["id"], scores.values["kl"]):
        ex = next(e for e in QA if e.id == id_)
        orig, _ = answer_rows(context.model, f"Q: {ex.question}\nA:", f" {ex.correct[0]}")
        new, _ = answer_rows(context.model, f"Q: {ex.question}\nA:", f" {ex.correct[0]}", edits)
        # KL(P_orig || P_edit), torch's own formula: kl_div(input=log q, target=log p) = sum p (log p - log q)
        reference = F.kl_div(new, orig, log_target=True, reduction="none").sum(-1).mean()
        reverse = F.kl_div(orig, new, log_target=True, reduction="none").sum(-1).mean()
        assert abs(value - float(reference)) < 1e-4 * max(1.0, float(reference))
        assert abs(float(reference) - float(reverse)) > 1e-4  # the direction is really tested
        assert value > 0


def test_kl_sample_is_seeded_and_shared_by_arms():
    ids = [KLDivergence({"dataset": "qa", "count": 2}).score(make_context("transformer-lens", seed, arm), []).details["id"]
           for seed, arm in ((0, "x"), (0, "y"), (1, "x"), (2, "x"), (3, "x"))]
    assert ids[0] == ids[1] and len(set(map(tuple, ids))) > 1 and all(len(i) == 2 for i in ids)


def test_paired_comparison():
    a = Scores({"mc2": [0.1, 0.2, 0.3, 0.4]}, {"id": list("abcd")})
    b = Scores({"mc2": [0.2, 0.25, 0.5, 0.45]}, {"id": list("abcd")})
    out = paired_comparison(a, b, ("mc2",))["mc2"]
    assert out["p"] == ttest_rel([0.2, 0.25, 0.5, 0.45], [0.1, 0.2, 0.3, 0.4]).pvalue
    assert abs(out["mean_difference"] - 0.1) < 1e-12
    assert paired_comparison(a, a, ("mc2",))["mc2"]["p"] == 1.0
    different = paired_comparison(a, Scores({"mc2": [1, 2, 3, 4]}, {"id": list("abce")}), ("mc2",))["mc2"]
    assert different["p"] is None and different["min_p"] is None and out["min_p"] == 0.0


def test_truthfulqa_mc_keeps_every_mc1_and_mc2_target():
    rows = json.loads((DATA / "mc_task.json").read_text())
    examples = TruthfulQAMC().load()
    assert len(examples) == len(rows) == 817
    for ex, row in zip(examples, rows):
        mc1_true = [a for a, label in row["mc1_targets"].items() if label]
        assert ex.correct[0] == mc1_true[0]
        assert set(ex.correct) == {a for a, label in row["mc2_targets"].items() if label}
        assert set(ex.incorrect) == {a for a, label in row["mc1_targets"].items() if not label}
        assert set(ex.incorrect) == {a for a, label in row["mc2_targets"].items() if not label}


def test_report_plots_each_metric_against_the_cost_of_the_edit(tmp_path):
    """With a cost metric (KL) in the recipe, the report has one trade-off plot per other metric (ITI, W&V Fig. 1c)."""
    import loctest

    recipe = tiny_recipe(tmp_path, f"""[datasets.qa]
plugin = "truthfulqa-mc"
limit = 3
[scorers.mc]
plugin = "mc"
dataset = "qa"
[scorers.kl]
plugin = "kl"
dataset = "qa"
count = 3
[arms.baseline]
[arms.fixed]
components = ["head:0:1", "head:1:2"]
editor = {{ plugin = "zero-ablation", positions = "all" }}
[arms.random]
locator = {{ plugin = "random", kind = "head", count = 2 }}
editor = {{ plugin = "zero-ablation", positions = "all" }}
""")
    results = loctest.run(recipe, progress=False)
    assert results.data["scorer_metrics"]["kl"] == {"higher_is_better": {"kl": False}, "cost": ["kl"], "chance": {},
                                                    "independent_repetitions": True}
    plots = {p.name for p in (results.run_dir / "figures").glob("*_vs_*.png")}
    assert plots == {"mc.mc1_vs_kl.kl.png", "mc.mc2_vs_kl.kl.png"}
    assert "![figures/mc.mc2_vs_kl.kl.png]" in (results.run_dir / "report.md").read_text()
