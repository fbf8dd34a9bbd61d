"""Results as data: ``loctest.load`` rebuilds a run from its directory, frames and CSV files hold the same numbers as
results.json, details carry each example's prompt and answer, and ``loctest compare`` lines runs up side by side."""
from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import loctest
from loctest.cli import main
from loctest.errors import UserError

from conftest import tiny_recipe

EVERY_SCORER = """[datasets.tqa]
plugin = "truthfulqa-binary"
limit = 3
[datasets.mmlu]
plugin = "mmlu"
subjects = ["virology"]
limit = 3
[scorers.bc]
plugin = "binary-choice"
dataset = "tqa"
repetitions = 3
[scorers.mc]
plugin = "mc"
dataset = "tqa"
[scorers.kl]
plugin = "kl"
dataset = "tqa"
count = 2
[scorers.mmlu]
plugin = "mmlu"
[scorers.gen]
plugin = "info-truth"
dataset = "tqa"
max_new_tokens = 2
prompt = "Q: {question}\\nA:"
[arms.baseline]
[arms.ablated]
components = ["mlp:0:1", "mlp:1:2"]
editor = { plugin = "zero-ablation", positions = "all" }
[[comparisons]]
baseline = "baseline"
treatment = "ablated"
metric = "bc.accuracy"
"""

SMALL = """[datasets.tqa]
plugin = "truthfulqa-binary"
limit = 4
[scorers.bc]
plugin = "binary-choice"
dataset = "tqa"
repetitions = 2
[arms.baseline]
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("every")
    return loctest.run(str(tiny_recipe(folder, EVERY_SCORER)), {"run.seed": 3}, progress=False)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("small")
    return loctest.run(str(tiny_recipe(folder, SMALL)), {"run.seed": 4}, progress=False)


def as_json(value):
    return json.loads(json.dumps(value, default=str))


# -- load ----------------------------------------------------------------------------------------------------
def test_load_gives_back_the_run(run):
    loaded = loctest.load(run.run_dir)
    assert loaded.data == as_json(run.data)
    assert {a: c.names() for a, c in loaded.components.items()} == {a: c.names() for a, c in run.components.items()}
    assert loaded.components["ablated"].names() == ["mlp:0:1", "mlp:1:2"]
    for arm, by_scorer in run.scores.items():
        assert loaded.scores[arm].keys() == by_scorer.keys()
        for scorer, scores in by_scorer.items():
            again = loaded.scores[arm][scorer]
            assert again.values == scores.values and again.note == scores.note, (arm, scorer)
            assert again.details == as_json(scores.details), (arm, scorer)
    assert loaded.values("ablated", "mc.mc2") == run.values("ablated", "mc.mc2")


def test_repr_is_short(run):
    loaded = loctest.load(str(run.run_dir))
    for results in (run, loaded):
        text = repr(results)
        assert text.startswith(f"RunResults({run.run_dir.name!r}")
        assert "model='tiny-llama'" in text and "arms=['baseline', 'ablated']" in text
        assert "scorers=['bc', 'mc', 'kl', 'mmlu', 'gen']" in text and str(run.run_dir) in text
        assert len(text) < 300 and "comparisons" not in text


def copy_run(run, tmp_path) -> Path:
    return Path(shutil.copytree(run.run_dir, tmp_path / run.run_dir.name))


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    path.write_text(json.dumps(change(data) or data))


BREAKS = {  # what to break in a copy of a run directory -> (the file the error must name, words of the error)
    "results.json missing": (lambda d: (d / "results.json").unlink(), "", "no results.json"),
    "results.json corrupt": (lambda d: (d / "results.json").write_text('{"arms": '), "results.json", "not valid JSON"),
    "results.json a list": (lambda d: (d / "results.json").write_text("[]"), "results.json", "not an object"),
    "results.json without arms": (lambda d: edit_json(d / "results.json", lambda r: r.pop("arms")), "results.json", "'arms'"),
    "values not a list": (lambda d: edit_json(d / "results.json", lambda r: r["arms"]["ablated"]["scores"]["mc"]["mc1"].update(values=3)),
                          "results.json", "arms.ablated.scores.mc.mc1"),
    "scores not an object": (lambda d: edit_json(d / "results.json", lambda r: r["arms"]["baseline"].update(scores=[])),
                             "results.json", "arms.baseline.scores"),
    "details missing": (lambda d: (d / "details" / "ablated.kl.json").unlink(), "details/ablated.kl.json", "missing"),
    "details corrupt": (lambda d: (d / "details" / "baseline.bc.json").write_text("{\"id\": [1,"), "details/baseline.bc.json", "not valid JSON"),
    "details a list": (lambda d: (d / "details" / "baseline.mc.json").write_text("[1]"), "details/baseline.mc.json", "instead of an object"),
    "repetitions ragged": (lambda d: edit_json(d / "details" / "ablated.bc.json",
                                               lambda x: x["per_repetition"]["order"][1].pop()),
                           "details/ablated.bc.json", "per_repetition"),
    "components missing": (lambda d: (d / "components" / "baseline.json").unlink(), "components/baseline.json", "missing"),
    "components corrupt": (lambda d: (d / "components" / "ablated.json").write_text('[{"name": "mlp:x"}]'),
                           "components/ablated.json", "bad component name"),
}


@pytest.mark.parametrize("damage", sorted(BREAKS))
def test_load_names_what_is_broken(run, tmp_path, damage, capsys):
    run_dir = copy_run(run, tmp_path)
    breaking, file, words = BREAKS[damage]
    breaking(run_dir)
    with pytest.raises(UserError, match=words) as caught:
        loctest.load(run_dir)
    assert str(run_dir / file) in str(caught.value)
    assert main(["compare", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(run_dir / file) in err and len(err.strip().splitlines()) == 1


def test_load_refuses_what_is_not_a_run_directory(run, tmp_path):
    with pytest.raises(UserError, match="no such run directory"):
        loctest.load(tmp_path / "nowhere")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(UserError, match="a file, not a run directory"):
        loctest.load(tmp_path / "file.txt")
    with pytest.raises(UserError, match=r"not a run directory \(no results.json\)$"):
        loctest.load(tmp_path)
    copy_run(run, tmp_path / "out")
    with pytest.raises(UserError, match=f"run directories in it: {run.run_dir.name}"):
        loctest.load(tmp_path / "out")
    failed = tmp_path / "quickstart-failed"
    failed.mkdir()
    (failed / "FAILED.txt").write_text("RecipeError: bad key\n\ntraceback")
    with pytest.raises(UserError, match=r"the run failed, no results.json \(RecipeError: bad key\)"):
        loctest.load(failed)


# -- frames --------------------------------------------------------------------------------------------------
def test_to_frame_holds_every_value_of_results_json(run):
    frame = loctest.load(run.run_dir).to_frame()
    assert list(frame.columns) == ["run", "arm", "locator", "editor", "n_components", "scorer", "metric", "repetition", "value"]
    arms = run.data["arms"]
    expected = [(arm, scorer, metric, r, v) for arm, a in arms.items() for scorer, ms in a["scores"].items()
                for metric, s in ms.items() if metric != "note" for r, v in enumerate(s["values"])]
    assert list(frame[["arm", "scorer", "metric", "repetition", "value"]].itertuples(index=False, name=None)) == expected
    assert set(frame["run"]) == {run.run_dir.name}
    by_arm = frame.groupby("arm")
    assert by_arm["editor"].first()["ablated"] == "zero-ablation" and frame[frame.arm == "baseline"]["editor"].isna().all()
    assert by_arm["n_components"].first().to_dict() == {"ablated": 2, "baseline": 0}
    means = frame.groupby(["arm", "scorer", "metric"])["value"].mean()
    for (arm, scorer, metric), mean in means.items():
        assert mean == pytest.approx(arms[arm]["scores"][scorer][metric]["mean"], abs=1e-12)
    pd.testing.assert_frame_equal(frame, run.to_frame())


def test_examples_frame_adds_up_to_the_metrics(run):
    frame = loctest.load(run.run_dir).examples_frame()
    assert set(frame["scorer"]) == {"bc", "mc", "kl", "mmlu", "gen"} and set(frame["arm"]) == {"baseline", "ablated"}
    checked = 0
    for (arm, scorer), rows in frame.groupby(["arm", "scorer"]):
        record = run.data["arms"][arm]["scores"][scorer]
        for metric in set(record) & set(rows.columns):
            values = record[metric]["values"]
            if rows["repetition"].notna().all():  # per repetition: the mean over examples is that repetition's value
                got = rows.groupby("repetition")[metric].mean().tolist()
                assert got == pytest.approx(values, abs=1e-6), (arm, scorer, metric)
            else:
                assert rows["repetition"].isna().all()
                assert rows[metric].mean() == pytest.approx(np.mean(values), abs=1e-6), (arm, scorer, metric)
            checked += 1
    assert checked == 2 * 8  # bc accuracy and correct_prob, mc1, mc2, kl, mmlu accuracy, truth, info, in both arms
    ids = run.data["datasets"]["tqa"]["ids"]
    bc = frame[(frame.scorer == "bc") & (frame.arm == "ablated")]
    assert bc["example"].tolist() == [i for i in ids for _ in range(3)] and bc["repetition"].tolist() == [0, 1, 2] * 3
    assert str(bc["repetition"].dtype) == "Int64"


def test_examples_frame_of_one_scorer(run):
    frame = run.examples_frame("gen")
    assert set(frame["scorer"]) == {"gen"} and "p_correct" not in frame and len(frame) == 2 * 3
    with pytest.raises(UserError, match="did you mean 'gen'"):
        run.examples_frame("gne")


def test_details_carry_prompts_and_answers(run):
    details = {scorer: json.loads((run.run_dir / "details" / f"ablated.{scorer}.json").read_text())
               for scorer in ("bc", "mc", "kl", "mmlu", "gen")}
    questions = {ex_id: None for ex_id in details["bc"]["id"]}
    bc = details["bc"]
    for prompts in bc["prompts"]:
        assert len(prompts) == 2 and prompts[0] != prompts[1]
    for r, (order, chosen, right) in enumerate(zip(*(bc["per_repetition"][k] for k in ("order", "chosen", "accuracy")))):
        assert right == [int(c == "AB"[o]) for c, o in zip(chosen, order)], r
        p_correct = [bc["p_correct"][i][o] for i, o in enumerate(order)]
        assert bc["per_repetition"]["correct_prob"][r] == pytest.approx(p_correct)
    gen = details["gen"]
    assert [p.replace("Q: ", "").replace("\nA:", "") for p in gen["prompt"]] == gen["question"]
    assert len(gen["answer"]) == 3 and gen["truth"] == [int(t >= 0.5) for t in gen["truthful"]]
    assert details["mc"]["id"] == list(questions) and all(p.startswith("Q: ") for p in details["mc"]["prompt"])
    assert all(isinstance(c, str) and c for c in details["mc"]["chosen"])
    assert len(details["kl"]["prompt"]) == len(details["kl"]["continuation"]) == len(details["kl"]["kl"]) == 2
    mmlu = details["mmlu"]
    assert all("Answer:" in p for p in mmlu["prompt"])
    assert mmlu["accuracy"] == [int(c == a) for c, a in zip(mmlu["chosen"], mmlu["answer"])]


def test_arms_share_one_copy_of_each_prompt(run):
    """Every arm lists the prompts; in memory they are one string per prompt, however many arms there are."""
    for scorer, key in (("bc", "prompts"), ("mc", "prompt"), ("mmlu", "prompt"), ("gen", "prompt"), ("kl", "prompt")):
        first, second = (run.scores[arm][scorer].details[key] for arm in ("baseline", "ablated"))
        flat = (lambda v: [p for pair in v for p in pair]) if scorer == "bc" else list
        assert all(a is b for a, b in zip(flat(first), flat(second), strict=True)), scorer


def test_frames_name_the_extra_without_pandas(run, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)
    for make in (run.to_frame, run.examples_frame):
        with pytest.raises(UserError, match=r"pip install 'loctest\[frames\]'"):
            make()
    assert [p.name for p in run.to_csv(tmp_path)][0] == "scores.csv"  # CSV needs no pandas


def read_csv_rows(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_to_csv_writes_the_frames(run, tmp_path):
    paths = run.to_csv(tmp_path / "csv")
    assert [p.name for p in paths] == ["scores.csv"] + [f"examples-{s}.csv" for s in ("bc", "mc", "kl", "mmlu", "gen")]
    scores = read_csv_rows(paths[0])
    frame = run.to_frame()
    assert [float(r["value"]) for r in scores] == frame["value"].tolist()
    assert [r["editor"] for r in scores] == frame["editor"].fillna("").tolist()
    bc = read_csv_rows(tmp_path / "csv" / "examples-bc.csv")
    expected = run.examples_frame("bc")
    assert [json.loads(r["prompts"]) for r in bc] == expected["prompts"].tolist()
    assert [int(r["repetition"]) for r in bc] == expected["repetition"].tolist()
    gen = read_csv_rows(tmp_path / "csv" / "examples-gen.csv")
    assert {r["repetition"] for r in gen} == {""} and [r["answer"] for r in gen] == run.examples_frame("gen")["answer"].tolist()


# -- compare -------------------------------------------------------------------------------------------------
def test_compare_lines_runs_up_side_by_side(run, small_run, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # the printed table at full width
    out_csv, out_md = tmp_path / "side.csv", tmp_path / "side.md"
    code = main(["compare", str(run.run_dir), str(small_run.run_dir), "--out", str(out_csv), "--out", str(out_md)])
    printed = capsys.readouterr().out
    assert code == 0
    a, b = run.run_dir.name, small_run.run_dir.name
    rows = {(r["arm"], r["metric"]): r for r in read_csv_rows(out_csv)}
    assert len(rows) == sum(1 for _ in run.to_frame().groupby(["arm", "scorer", "metric"]))
    for (arm, metric), row in rows.items():
        scorer, _, name = metric.partition(".")
        assert float(row[f"{a} mean"]) == pytest.approx(run.data["arms"][arm]["scores"][scorer][name]["mean"])
        in_b = small_run.data["arms"].get(arm, {}).get("scores", {}).get(scorer, {}).get(name)
        assert row[f"{b} mean"] == ("" if in_b is None else str(in_b["mean"]))
    assert ("baseline", "bc.accuracy") in rows and rows["ablated", "bc.accuracy"][f"{b} std"] == ""
    md = out_md.read_text()
    base = small_run.data["arms"]["baseline"]["scores"]["bc"]["accuracy"]
    assert "| baseline | bc.accuracy | " in md and f"{base['mean']:.3f} ± {base['std']:.3f} |" in md
    assert "recipe keys:" in md and "run.seed" in md and "datasets.tqa.limit" in md and "model" not in md.split("differ in:")[1]
    assert a in printed and "run.seed" in printed


def test_compare_says_when_models_and_versions_differ(run, tmp_path, capsys):
    other = copy_run(run, tmp_path / "other")
    edit_json(other / "results.json", lambda r: (r["model"].update(name="gpt2"), r["versions"].update(torch="0.0.1")) and None)
    out = tmp_path / "side.md"
    assert main(["compare", str(run.run_dir), str(other), "--out", str(out)]) == 0
    md = out.read_text()
    assert f"model name: tiny-llama ({run.run_dir}), gpt2 ({other})" in md  # same directory name: labelled by path
    assert f"versions: torch: {run.data['versions']['torch']} ({run.run_dir}), 0.0.1 ({other})" in md
    assert "recipe keys" not in md
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "other")]) == 0  # a folder of run directories: the runs in it
    assert run.run_dir.name in capsys.readouterr().out


def test_compare_refuses_bad_input(run, tmp_path, capsys):
    assert main(["compare", str(run.run_dir), "--out", str(tmp_path / "side.xlsx")]) == 2
    assert "give a file ending in .csv or .md" in capsys.readouterr().err
    assert not (tmp_path / "side.xlsx").exists()
    assert main(["compare", str(run.run_dir), str(tmp_path / "missing")]) == 2
    assert "no such run directory" in capsys.readouterr().err
