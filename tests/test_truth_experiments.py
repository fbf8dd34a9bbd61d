"""The Truth Neurons experiments: Eq. 11 / Figure 4 statistics, MMLU and TriviaQA, the report's tables and figures."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from conftest import SHARED_DATA, cached_model
from loctest import Example, RunContext, Scores
from loctest.errors import UserError
from loctest.progress import Progress
from loctest.figures import counts_by_kind
from loctest_plugins.datasets.mmlu import MMLU
from loctest_plugins.datasets.triviaqa import TriviaQAITI, most_mentioned
from loctest_plugins.scorers.binary_choice import BinaryChoice
from loctest_plugins.scorers.mmlu import MMLUScorer, mmlu_prompt

TRIVIAQA = SHARED_DATA / "triviaqa_iti" / "TriviaQA_false_not_in_gold.csv"


def binary_scores(p_correct, orders, categories) -> Scores:
    n = len(p_correct)
    return Scores(values={"accuracy": [0.5] * len(orders)},
                  details={"id": [f"q{i}" for i in range(n)], "category": categories, "p_correct": p_correct,
                           "p_incorrect": [[0.1, 0.1]] * n, "per_repetition": {"order": orders}})


# -- Eq. 11 and Figure 4 -------------------------------------------------------------------------------------
def test_compare_matches_a_hand_computation():
    pre = [[0.5, 0.4], [0.2, 0.8], [0.6, 0.3], [0.9, 0.1]]
    post = [[0.25, 0.4], [0.3, 0.4], [0.6, 0.0], [0.45, 0.2]]
    orders = [[0, 1, 0, 1], [1, 0, 1, 0]]
    categories = ["x", "x", "y", "x"]
    out = BinaryChoice({"min_category_size": 3}).compare(binary_scores(pre, orders, categories),
                                                         binary_scores(post, orders, categories))
    # repetition 0 reads pre 0.5, 0.8, 0.6, 0.1 -> post 0.25, 0.4, 0.6, 0.2: drops 0.5, 0.5, 0, -1
    # repetition 1 reads pre 0.4, 0.2, 0.3, 0.9 -> post 0.4, 0.3, 0.0, 0.45: drops 0, -0.5, 1, 0.5
    assert out["relative_drop_per_repetition"] == pytest.approx([0.0, 0.25])
    assert out["relative_drop"] == pytest.approx(0.125)
    assert out["fell_share_per_repetition"] == pytest.approx([0.5, 0.5])
    # category x = questions 0, 1, 3: fell in repetition 0 for 0, 1 (2/3), in repetition 1 for 3 (1/3)
    assert out["categories"] == {"x": {"n": 3, "fell_share": pytest.approx(0.5),
                                       "per_repetition": pytest.approx([2 / 3, 1 / 3])}}
    assert out["categories_left_out"] == 1


def test_figure4_keeps_categories_with_at_least_15_questions():
    categories = ["big"] * 15 + ["small"] * 14 + [""] * 20
    n = len(categories)
    pre = [[0.5, 0.5]] * n
    post = [[0.4, 0.4]] * 10 + [[0.6, 0.6]] * (n - 10)
    out = BinaryChoice().compare(binary_scores(pre, [[0] * n], categories), binary_scores(post, [[0] * n], categories))
    assert list(out["categories"]) == ["big"]
    assert out["categories"]["big"]["fell_share"] == pytest.approx(10 / 15)
    assert out["categories_left_out"] == 1  # "small"; unnamed questions are no category
    assert out["fell_share"] == pytest.approx(10 / n)


def test_compare_refuses_different_answer_orders():
    a = binary_scores([[0.5, 0.5]], [[0]], ["x"])
    b = binary_scores([[0.5, 0.5]], [[1]], ["x"])
    with pytest.raises(UserError, match="answer orders"):
        BinaryChoice().compare(a, b)


# -- MMLU ----------------------------------------------------------------------------------------------------
def test_mmlu_dataset_subjects_and_subsets():
    examples = MMLU({"subjects": ["astronomy", "virology"]}).load()
    assert {e.category for e in examples} == {"astronomy", "virology"}
    assert len(examples) == 152 + 166  # rows of the two test files
    for e in examples:
        assert len(e.choices) == 4 and e.correct == (e.choices[e.answer],)
        assert set(e.incorrect) | set(e.correct) == set(e.choices)
    first = examples[0]
    assert first.question.startswith("What is true for a type-Ia") and first.answer == 0
    dev = MMLU({"subset": "dev"}).load()
    assert len(dev) == 285 and len({e.category for e in dev}) == 57


def test_mmlu_unknown_subject_is_a_user_error_with_a_suggestion():
    with pytest.raises(UserError, match=r"subjects: unknown subject 'astronmy'; did you mean 'astronomy'"):
        MMLU({"subjects": ["astronmy"]}).load()


def test_mmlu_prompt_is_the_standard_one():
    shot = Example("s", "1 + 1?", ("2",), ("1", "3", "4"), "elementary_mathematics", ("1", "2", "3", "4"), 1)
    question = Example("q", "2 + 2?", ("4",), ("1", "2", "3"), "elementary_mathematics", ("4", "1", "2", "3"), 0)
    assert mmlu_prompt(question, [shot]) == (
        "The following are multiple choice questions (with answers) about elementary mathematics.\n\n"
        "1 + 1?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer: B\n\n"
        "2 + 2?\nA. 4\nB. 1\nC. 2\nD. 3\nAnswer:")


def context_for(backend, tmp_path, **datasets) -> RunContext:
    return RunContext(model=backend, seed=0, run_dir=tmp_path, cache_dir=tmp_path / "cache",
                      progress=Progress(None, enabled=False), datasets={k: (lambda v=v: v) for k, v in datasets.items()},
                      arm="baseline")


@pytest.mark.parametrize("chat", [True, False])
def test_mmlu_scorer_takes_the_argmax_over_label_tokens(tmp_path, chat):
    backend = cached_model("transformer-lens", "tiny-llama")
    examples = MMLU({"subjects": ["virology"]}).load()[:6]
    scorer = MMLUScorer({"chat": chat})
    scores = scorer.score(context_for(backend, tmp_path, mmlu=examples), [])
    prompts = [mmlu_prompt(e) for e in examples]
    if chat:
        prompts = [backend.chat_prompt(p, scorer.config.system_prompt) for p in prompts]
        labels = [backend.answer_token_ids(l) for l in "ABCD"]
    else:
        labels = [backend.tokenizer.encode(f" {l}", add_special_tokens=False)[-1] for l in "ABCD"]
    logprobs = backend.next_token_logprobs(prompts)
    expected = logprobs[:, labels].argmax(-1)
    assert scores.details["chosen"] == expected.tolist()
    accuracy = scores.values["accuracy"]
    assert len(accuracy) == 1 and 0.0 <= accuracy[0] <= 1.0
    assert accuracy[0] == pytest.approx(float((expected == torch.tensor([e.answer for e in examples])).float().mean()))
    assert np.allclose(scores.details["label_probs"], logprobs[:, labels].exp().numpy(), atol=1e-6)


def test_mmlu_shots_need_a_shots_dataset(tmp_path):
    backend = cached_model("transformer-lens", "tiny-llama")
    examples = MMLU({"subjects": ["virology"]}).load()[:2]
    with pytest.raises(ValidationError, match="shots = 2 needs shots_dataset"):  # recipe validation reports it
        MMLUScorer({"shots": 2})
    dev = MMLU({"subjects": ["virology"], "subset": "dev"}).load()
    scorer = MMLUScorer({"shots": 5, "shots_dataset": "dev"})
    solved = scorer.solved_examples(context_for(backend, tmp_path, mmlu=examples, dev=dev[::-1]), {"virology"})
    assert [e.id for e in solved["virology"]] == [e.id for e in dev]  # file order, whatever the dataset order
    with pytest.raises(UserError, match="has 3 examples of 'virology'"):
        scorer.solved_examples(context_for(backend, tmp_path, dev=dev[:3]), {"virology"})


def test_mmlu_compare_is_an_exact_mcnemar_test():
    def scores(chosen):
        return Scores(values={"accuracy": [0.0]}, details={"id": list("abcde"), "answer": [0] * 5, "chosen": chosen})

    out = MMLUScorer().compare(scores([0, 0, 0, 1, 0]), scores([1, 1, 1, 1, 0]))
    two_sided, greater = out["accuracy"], out["accuracy_baseline_greater"]
    assert (two_sided["baseline_only"], two_sided["treatment_only"], two_sided["n"]) == (3, 0, 5)
    assert (two_sided["test"], two_sided["alternative"], greater["alternative"]) == ("exact McNemar", "two-sided", "greater")
    assert greater["p"] == pytest.approx(0.125)  # 0.5 ** 3
    assert two_sided["p"] == pytest.approx(0.25)
    assert (greater["min_p"], two_sided["min_p"]) == (0.125, 0.25)  # 3 discordant: no lower p possible


# -- TriviaQA ------------------------------------------------------------------------------------------------
def test_best_alias_is_the_most_mentioned_one():
    assert most_mentioned(("Red (comics)", "Red (song)", "Red")) == "Red"
    assert most_mentioned(("Giglio (disambiguation)", "GIGLIO", "Giglio")) == "Giglio"
    assert most_mentioned(("Yukon Optics", "PULSAR", "Beltex Optics")) == "PULSAR"  # the quiz's own answer
    assert most_mentioned(("FCOJ", "Orange juice")) == "Orange juice"  # an acronym is no quiz answer


@pytest.mark.skipif(not TRIVIAQA.exists(), reason="ITI's TriviaQA file is not in ../shared/data")
def test_triviaqa_loader_reads_the_filtered_file():
    with pytest.raises(UserError, match=r"line \d+: column 'question': duplicate of line \d+"):
        TriviaQAITI({"path": str(TRIVIAQA)}).load()  # ITI's file repeats 143 questions
    examples = TriviaQAITI({"path": str(TRIVIAQA), "allow_duplicates": True}).load()
    assert len(examples) == 2226
    first = examples[0]
    assert first.question.startswith("What general name is given to a rotating star")
    assert first.correct[0] == "PULSAR" and set(first.correct) == {"Yukon Optics", "PULSAR", "Beltex Optics"}
    assert first.incorrect == ("Pulsating Quasar",)
    first = TriviaQAITI({"path": str(TRIVIAQA), "best_answer": "first", "allow_duplicates": True}).load()[0]
    assert first.correct[0] == "Yukon Optics"


def test_triviaqa_loader_names_a_missing_column(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("question,answer\nQ?,A\n")
    with pytest.raises(UserError, match="no column 'false_answer'"):
        TriviaQAITI({"path": str(path)}).load()


# -- report ----------------------------------------------------------------------------------------------------
def test_heatmap_rows_are_the_kinds_present():
    assert counts_by_kind({"attn:2": 3, "mlp:0": 1}) == {"mlp": {0: 1}, "attn": {2: 3}}
    assert counts_by_kind({"head:1": 2}) == {"head": {1: 2}}


RECIPE = """
[run]
seed = 0
out = "{out}"
cache = "{cache}"

[model]
name = "tiny-llama"
tiny_layers = 2

[datasets.truthfulqa]
plugin = "truthfulqa-binary"
limit = 8

[datasets.mmlu]
plugin = "mmlu"
subjects = ["virology"]
limit = 4

[scorers.truthfulqa]
plugin = "binary-choice"
repetitions = 2
min_category_size = 2

[scorers.mmlu]
plugin = "mmlu"

[arms.baseline]

[arms.fixed]
components = ["mlp:0:3", "mlp:1:7", "attn:1:0:5", "attn:1:2:9"]
editor = "zero-ablation"

[arms.random]
locator = {{ plugin = "random", match = "fixed" }}
editor = "zero-ablation"

[[comparisons]]
baseline = "baseline"
treatment = "fixed"
metric = "truthfulqa.accuracy"

[[comparisons]]
baseline = "baseline"
treatment = "random"
metric = "truthfulqa.accuracy"

[[comparisons]]
baseline = "baseline"
treatment = "fixed"
metric = "mmlu.accuracy"

[[comparisons]]
baseline = "fixed"
treatment = "random"
metric = "truthfulqa.accuracy"
"""


def test_report_has_the_papers_tables_and_figures(tmp_path):
    import loctest

    recipe = tmp_path / "r.toml"
    recipe.write_text(RECIPE.format(out=tmp_path / "runs", cache=tmp_path / "cache"))
    results = loctest.run(recipe, progress=False)
    run = results.run_dir
    drop = results.comparisons[0]["extra"]["relative_drop"]
    assert isinstance(drop, float) and results.comparisons[2]["extra"]["accuracy"]["test"] == "exact McNemar"
    figures = {p.name for p in (run / "figures").iterdir()}
    assert {"layers_fixed.png", "layers_random.png", "fell_by_category_truthfulqa_baseline_vs_fixed.png",
            "mmlu.accuracy.png"} <= figures
    report = (run / "report.md").read_text()
    assert f"| fixed | 4 (mlp 2, attn 2) |" in report
    assert f"{100 * drop:.1f}%" in report and "Eq. 11" in report
    eq11 = report.split("Eq. 11:", 1)[1].split("\n## ", 1)[0]  # P_pre is the unedited model's: edited pairs stay out
    assert "| truthfulqa | baseline | fixed |" in eq11 and "| truthfulqa | fixed | random |" not in eq11
    assert "| baseline | fixed | mmlu.accuracy_baseline_greater | exact McNemar, greater; right only under baseline" in report
    assert "## Accuracy by arm and scorer" in report
    saved = json.loads((run / "results.json").read_text())
    assert saved["comparisons"][1]["extra"]["categories"] == results.comparisons[1]["extra"]["categories"]


def test_truth_neurons_recipe_scores_questions_the_locator_never_saw():
    from conftest import ROOT
    from loctest.runner import prepare

    recipe, _ = prepare(ROOT / "recipes" / "truth_neurons.toml")
    assert set(recipe.arms) == {"baseline", "truth", "random"}
    located_on = recipe.arms["truth"].locator.config.dataset
    scored_on = recipe.scorers["truthfulqa"].config.dataset
    (_, locate), (_, score) = recipe.datasets[located_on], recipe.datasets[scored_on]
    assert (locate.split, score.split, locate.split_seed) == ("train", "test", score.split_seed)
