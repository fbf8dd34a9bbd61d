"""Judges and the info-truth scorer: the offline judge agrees with held-out human labels and trains
reproducibly, hf-judge matches a direct computation on a local tiny model, openai-judge talks to a local stub
server, and info-truth generates with the arm's interventions and judges every answer."""
from __future__ import annotations

import http.server
import json
import threading

import numpy as np
import pytest
import torch
from pydantic import ValidationError

import loctest
from loctest import Example, RunContext, Scores, interventions
from loctest.errors import UserError
from loctest.models import tiny_config, tiny_tokenizer
from loctest.progress import Progress
from loctest.runner import prepare
from loctest.stats import mcnemar
from loctest_plugins.judges.hf import HFJudge, yes_no_split
from loctest_plugins.judges.judge_data import labelled_answers, question_split
from loctest_plugins.judges.offline import WEIGHTS, OfflineJudge, featurize, read_metadata
from loctest_plugins.judges.openai_compatible import OpenAIJudge
from loctest_plugins.judges.train_offline import TrainConfig, agreement, fit, reference_sets, split_pairs
from loctest_plugins.scorers.info_truth import InfoTruth, product_permutation

from conftest import cached_model, plugin_host, tiny_recipe

PARIS = Example("paris", "What is the capital of France?", ("Paris is the capital of France",),
                ("Lyon is the capital of France",))


def test_judges_and_scorer_are_registered():
    host = plugin_host()
    assert {"offline", "hf-judge", "openai-judge"} <= set(host.registry("judge").names())
    assert host.registry("scorer").get("info-truth") is InfoTruth


# -- offline judge ----------------------------------------------------------------------------------------
def test_offline_judge_agrees_with_held_out_human_labels():
    """On answers to 40 questions the shipped judge never saw (its training split is recorded in the file)."""
    config = TrainConfig(**read_metadata(WEIGHTS)["config"])
    train, test = split_pairs(config)
    assert not {p.question for p in train} & {p.question for p in test}
    chosen = set(sorted({p.question for p in test})[:40])
    pairs = [p for p in test if p.question in chosen]
    verdicts = OfflineJudge().judge([p.question for p in pairs], [p.answer for p in pairs])
    result = agreement(np.array([[v.truthful, v.informative] for v in verdicts]), pairs)
    truth, info = result["truthful"], result["informative"]  # measured: 91.5% and 95.3% (baselines 55%, 84%)
    assert truth["agreement"] >= 0.85 and truth["agreement"] > truth["majority_baseline"] + 0.2
    assert info["agreement"] >= 0.90 and info["agreement"] > info["majority_baseline"] + 0.05


def test_offline_judge_reads_the_references_it_is_given():
    judge = OfflineJudge()
    swapped = Example("swapped", PARIS.question, PARIS.incorrect, PARIS.correct)
    answer = ["Paris is the capital of France."]
    assert judge.judge([PARIS.question], answer, references=[PARIS])[0].truthful > 0.5
    assert judge.judge([PARIS.question], answer, references=[swapped])[0].truthful < 0.5
    uninformative = judge.judge([PARIS.question], ["I have no comment."], references=[PARIS])[0]
    assert uninformative.informative < 0.5 < uninformative.truthful
    assert judge.judge([], []) == []


def test_offline_judge_needs_references_for_unknown_questions(tmp_path):
    with pytest.raises(UserError, match="no reference answers"):
        OfflineJudge().judge([PARIS.question], ["Paris."])
    with pytest.raises(UserError, match="weights: file not found"):
        OfflineJudge({"weights": str(tmp_path / "none.safetensors")}).judge([PARIS.question], ["Paris."], [PARIS])


def test_offline_training_is_deterministic_and_generalises_to_new_questions():
    pairs = labelled_answers()
    train_q, test_q = question_split([p.question for p in pairs], test_fraction=0.2, seed=1)
    train = [p for p in pairs if p.question in sorted(train_q)[:30]]
    config = TrainConfig(steps=15)
    first, idf = fit(train, config)
    second, _ = fit(train, config)
    assert torch.equal(first.wide, second.wide) and torch.equal(first.deep[0].weight, second.deep[0].weight)
    test = [p for p in pairs if p.question in sorted(test_q)[:20]]
    with torch.no_grad():
        probs = torch.sigmoid(first(featurize(reference_sets(test, idf), [p.answer for p in test]))).numpy()
    truth = agreement(probs, test)["truthful"]  # measured: 94% (baseline 54%)
    assert truth["agreement"] > truth["majority_baseline"] + 0.2


# -- hf-judge ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_judge_dir(tmp_path_factory):
    from transformers import AutoModelForCausalLM

    folder = tmp_path_factory.mktemp("tiny-judge")
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(tiny_config("llama", 2)).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


def test_hf_judge_matches_a_direct_unpadded_computation(tiny_judge_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    questions = ["What is the capital of France?", "Why?", "Is the Earth flat?"]
    answers = ["Paris.", "Because of a long and winding chain of reasons.", "No"]
    verdicts = HFJudge({"truth_model": str(tiny_judge_dir), "info_model": str(tiny_judge_dir),
                        "batch_size": 2}).judge(questions, answers)
    model = AutoModelForCausalLM.from_pretrained(tiny_judge_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_judge_dir)
    for q, a, verdict in zip(questions, answers, verdicts):
        for suffix, got in (("True:", verdict.truthful), ("Helpful:", verdict.informative)):
            prompt = f"Q: {q}\nA: {a}\n{suffix}"
            context, yes, no = yes_no_split(tokenizer, prompt)
            # byte-level tokens: " yes" and " no" share the space, so the comparison is "y" vs "n" after it
            assert context == tokenizer(prompt + " ").input_ids
            assert tokenizer.decode([yes]) == "y" and tokenizer.decode([no]) == "n"
            with torch.no_grad():
                logits = model(torch.tensor([context])).logits[0, -1]
            assert got == pytest.approx(torch.softmax(logits[[yes, no]], -1)[0].item(), abs=1e-5)


def test_hf_judge_names_a_missing_model(tmp_path):
    judge = HFJudge({"truth_model": str(tmp_path / "missing"), "info_model": str(tmp_path / "missing")})
    with pytest.raises(UserError, match="cannot load judge model"):
        judge.judge(["q"], ["a"])


# -- openai-judge -----------------------------------------------------------------------------------------
class StubEndpoint(http.server.BaseHTTPRequestHandler):
    """Says " yes" to truth prompts whose answer mentions Paris and to every info prompt; fails the first
    ``fail_first`` requests with HTTP 503; redirects POSTs to ``redirect_to`` when it is set."""

    requests: list = []
    fail_first = 0
    redirect_to = ""

    def do_GET(self):  # only a followed redirect would get here
        type(self).requests.append((self.path, None, self.headers.get("Authorization")))
        self.send_error(404)

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append((self.path, body, self.headers.get("Authorization")))
        if self.redirect_to:
            self.send_response(302)
            self.send_header("Location", self.redirect_to)
            self.end_headers()
            return
        if len(self.requests) <= self.fail_first:
            self.send_error(503)
            return
        prompt = body["prompt"] if "prompt" in body else body["messages"][0]["content"]
        yes = "Paris" in prompt or prompt.endswith("Helpful:")
        top = {" yes": -0.1, " no": -2.4} if yes else {" no": -0.2, " yes": -1.7}
        if "prompt" in body:
            reply = {"choices": [{"text": " yes", "logprobs": {"top_logprobs": [top]}}]}
        else:
            reply = {"choices": [{"logprobs": {"content": [{"top_logprobs": [{"token": t.strip(), "logprob": lp}
                                                                          for t, lp in top.items()]}]}}]}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def stub_server():
    StubEndpoint.requests = []
    StubEndpoint.fail_first = 0
    StubEndpoint.redirect_to = ""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), StubEndpoint)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("api", ["completions", "chat"])
def test_openai_judge_against_a_local_stub(stub_server, api, monkeypatch, capsys):
    monkeypatch.setenv("LOCTEST_JUDGE_API_KEY", "secret")
    judge = OpenAIJudge({"base_url": stub_server, "truth_model": "judge-t", "info_model": "judge-i", "api": api})
    verdicts = judge.judge(["Capital of France?", "Capital of France?"], ["Paris", "Lyon"])
    host = stub_server.split("/")[2]
    assert capsys.readouterr().err == f"openai-judge: sending answers to {host} with the key from " \
                                      "LOCTEST_JUDGE_API_KEY\n"
    yes = np.exp(-0.1) / (np.exp(-0.1) + np.exp(-2.4))
    no = np.exp(-1.7) / (np.exp(-1.7) + np.exp(-0.2))
    assert [v.truthful for v in verdicts] == pytest.approx([yes, no])
    assert [v.informative for v in verdicts] == pytest.approx([yes, yes])
    assert len(StubEndpoint.requests) == 4
    path = "/v1/completions" if api == "completions" else "/v1/chat/completions"
    assert {(p, b["model"], auth) for p, b, auth in StubEndpoint.requests} == {(path, "judge-t", "Bearer secret"),
                                                                               (path, "judge-i", "Bearer secret")}
    assert StubEndpoint.requests[0][1]["max_tokens"] == 1


def test_openai_judge_retries_then_gives_up_with_a_clear_error(stub_server, monkeypatch):
    monkeypatch.setattr("loctest_plugins.judges.openai_compatible.time.sleep", lambda s: None)
    StubEndpoint.fail_first = 2
    judge = OpenAIJudge({"base_url": stub_server, "truth_model": "t", "info_model": "i", "max_retries": 2})
    assert len(judge.judge(["Capital of France?"], ["Paris"])) == 1
    assert len(StubEndpoint.requests) == 4  # 2 failures, then one truth and one info request
    StubEndpoint.requests, StubEndpoint.fail_first = [], 10
    with pytest.raises(UserError, match="HTTP 503"):
        OpenAIJudge({"base_url": stub_server, "truth_model": "t", "info_model": "i", "max_retries": 1}).judge(["q"], ["a"])
    assert len(StubEndpoint.requests) == 2


def test_openai_judge_sends_no_key_without_the_fixed_variable(stub_server, monkeypatch):
    monkeypatch.delenv("LOCTEST_JUDGE_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "not-for-the-judge")
    OpenAIJudge({"base_url": stub_server, "truth_model": "t", "info_model": "i"}).judge(["q"], ["a"])
    assert [auth for _, _, auth in StubEndpoint.requests] == [None, None]


def test_openai_judge_keeps_the_key_off_plain_http_and_redirects(stub_server, monkeypatch):
    monkeypatch.setenv("LOCTEST_JUDGE_API_KEY", "secret")
    settings = {"truth_model": "t", "info_model": "i"}
    with pytest.raises(UserError, match="base_url 'http://judge.example.org/v1' is plain http"):
        OpenAIJudge({**settings, "base_url": "http://judge.example.org/v1"})
    for url in ("https://judge.example.org/v1", "http://localhost:8000/v1", "http://[::1]:8000/v1"):
        OpenAIJudge({**settings, "base_url": url})  # https, or this machine: accepted
    StubEndpoint.redirect_to = stub_server + "/elsewhere"
    with pytest.raises(UserError, match="HTTP 302"):
        OpenAIJudge({**settings, "base_url": stub_server}).judge(["q"], ["a"])
    assert [path for path, _, _ in StubEndpoint.requests] == ["/v1/completions"]  # the redirect was not followed


JUDGED_RECIPE = """[datasets.tqa]
plugin = "truthfulqa-binary"
[scorers.gen]
plugin = "info-truth"
dataset = "tqa"
judge = "openai-judge"
judge_config = {{ truth_model = "t", info_model = "i", {setting} }}
[arms.baseline]
"""


@pytest.mark.parametrize("setting, problem", [
    ('api_key_env = "AWS_SECRET_ACCESS_KEY"', "scorers.gen.judge_config: api_key_env is no longer a setting: the API "
                                              "key comes only from the environment variable LOCTEST_JUDGE_API_KEY"),
    ('base_url = "file:///etc/passwd"', "scorers.gen.judge_config.base_url: expected an http:// or https:// URL"),
])
def test_recipe_validation_checks_the_judge_settings(tmp_path, setting, problem):
    """``judge`` is a PluginRef whose settings field is ``judge_config``: validation checks both, no weights load."""
    path = tiny_recipe(tmp_path, JUDGED_RECIPE.format(setting=setting))
    with pytest.raises(UserError) as err:
        prepare(path)
    assert len(err.value.problems) == 1 and err.value.problems[0].startswith(f"{path}: {problem}")
    with pytest.raises(UserError) as err:
        prepare(path, {"scorers.gen.judge": "ofline"})
    assert err.value.problems[0].startswith(f"{path}: scorers.gen.judge: unknown judge 'ofline': did you mean 'offline'?")


# -- info-truth -------------------------------------------------------------------------------------------
QA = [PARIS, Example("sky", "What colour is the sky?", ("The sky is blue",), ("The sky is green",)),
      Example("moon", "Is the Moon made of cheese?", ("No, the Moon is made of rock",), ("Yes, it is cheese",))]


def context(arm="a"):
    return RunContext(cached_model("transformer-lens"), 0, None, None, Progress(enabled=False),
                      datasets={"qa": lambda: QA}, arm=arm, plugins=plugin_host())


def test_info_truth_generates_with_the_interventions_and_judges_every_answer():
    scorer = InfoTruth({"dataset": "qa", "max_new_tokens": 4, "prompt": "Q: {question}\nA:"})
    plain = scorer.score(context(), [])
    backend = context().model
    prompts = [f"Q: {ex.question}\nA:" for ex in QA]
    assert plain.details["answer"] == [t.split("\n")[0].strip() for t in backend.generate(prompts, 4)]
    verdicts = OfflineJudge().judge([ex.question for ex in QA], plain.details["answer"], QA)
    assert plain.details["truthful"] == pytest.approx([v.truthful for v in verdicts])
    truth = np.mean([v.truthful >= 0.5 for v in verdicts])
    info = np.mean([v.informative >= 0.5 for v in verdicts])
    assert plain.values == {"truth": [truth], "info": [info], "truth_info": [pytest.approx(truth * info)]}

    width = backend.shape.d_mlp
    push = interventions.add(("mlp", 1), torch.full((width,), 50.0), positions="continuation")
    edited = scorer.score(context("b"), [push])
    assert edited.details["answer"] == [t.split("\n")[0].strip() for t in backend.generate(prompts, 4, [push])]
    assert edited.details["answer"] != plain.details["answer"]


def test_info_truth_rejects_a_bad_judge_before_generating():
    with pytest.raises(UserError, match="unknown judge 'ofline'.*'offline'"):
        InfoTruth({"dataset": "qa", "judge": "ofline"}).score(context(), [])
    with pytest.raises(ValidationError, match="api"):
        InfoTruth({"dataset": "qa", "judge": "openai-judge",
                   "judge_config": {"truth_model": "t", "info_model": "i", "api": "fax"}}).score(context(), [])


def test_info_truth_comparison_statistics():
    rng = np.random.default_rng(0)
    a = rng.random((60, 2)) < 0.3
    b = a.copy()
    assert product_permutation(a, b)["p"] == 1.0 and mcnemar(a[:, 0], b[:, 0])["p"] == 1.0
    b[:, 0] = True
    assert product_permutation(a, b)["p"] < 0.01
    from scipy.stats import binomtest

    only_b = int((~a[:, 0]).sum())
    assert mcnemar(a[:, 0], b[:, 0])["p"] == pytest.approx(binomtest(only_b, only_b, 0.5).pvalue)
    assert mcnemar(a[:, 0], b[:, 0])["min_p"] == 2 * 0.5 ** only_b and mcnemar(a[:, 0], a[:, 0])["min_p"] == 1.0
    assert product_permutation(a, b)["min_p"] == 1 / 10_001

    def scores(x):
        return Scores({}, {"id": list(range(60)), "truthful": x[:, 0].astype(float).tolist(),
                           "informative": x[:, 1].astype(float).tolist()})

    compared = InfoTruth({"dataset": "qa"}).compare(scores(a), scores(b))
    assert compared["truth"]["treatment_only"] == only_b and compared["info"]["p"] == 1.0


def test_info_truth_in_a_recipe(tmp_path):
    recipe = tiny_recipe(tmp_path, f"""[datasets.tqa]
plugin = "truthfulqa-binary"
limit = 3
[scorers.gen]
plugin = "info-truth"
dataset = "tqa"
max_new_tokens = 2
prompt = "Q: {{question}}\\nA:"
[arms.baseline]
[arms.ablated]
components = ["mlp:0:1", "mlp:1:2"]
editor = {{ plugin = "zero-ablation", positions = "all" }}
[[comparisons]]
baseline = "baseline"
treatment = "ablated"
metric = "gen.truth_info"
""")
    results = loctest.run(str(recipe), progress=False)
    for arm in ("baseline", "ablated"):
        assert len(results.scores[arm]["gen"].details["answer"]) == 3
    extra = results.comparisons[0]["extra"]
    assert set(extra) == {"truth", "info", "truth_info"} and 0 < extra["truth_info"]["p"] <= 1


def test_a_new_judge_weights_file_invalidates_cached_scores(tmp_path):
    """The info-truth scorer's cache identity follows the judge's weights, not only its settings."""
    from loctest.plugin_manager import create_host
    from loctest.recipe import PluginSpec

    weights = tmp_path / "judge.safetensors"
    weights.write_bytes(WEIGHTS.read_bytes())
    host = create_host()
    config = InfoTruth.Config(dataset="tqa", judge_config={"weights": str(weights)})
    spec = PluginSpec("info-truth", InfoTruth, config, host)
    before = spec.identity
    assert spec.identity == before  # stable while nothing changes
    weights.write_bytes(WEIGHTS.read_bytes() + b" ")  # a retrained judge: same path, new content
    assert spec.identity != before

