"""ipo-lora: the rank-1 head edit equals a LoRA weight update, IPO training moves only a and b, b stays zero
outside the chosen heads, training is deterministic, edits save / load / cache, and the peft full-model
baseline converts to an edit that reproduces the peft model."""
from __future__ import annotations

import json

import pytest
import torch

from loctest import ComponentSet, Example
from loctest.context import RunContext
from loctest.errors import UserError
from loctest.progress import Progress
from loctest_plugins.editors import ipo_lora
from loctest_plugins.editors.ipo_lora import IpoLora, IpoLoraConfig
from loctest_plugins.ipo import full_model
from loctest_plugins.ipo.edit import RankOneEdit
from loctest_plugins.ipo.pairs import preference_pairs
from loctest_plugins.ipo.store import load_edit
from loctest_plugins.ipo.training import ipo_loss, pair_logprobs

from conftest import ROOT, cached_model, tiny_recipe

EXAMPLES = [Example("q1", "Is the sky green?", ("No.", "It is blue."), ("Yes.", "Green, always.")),
            Example("q2", "Do cats bark?", ("No, cats meow.",), ("Yes.", "Cats bark loudly.")),
            Example("q3", "Is ice cold?", ("Yes.",), ("No, it is hot.",))]
HEADS = ComponentSet(["head:0:1", "head:1:3"])
FAST = {"dataset": "qa", "tau": 0.5, "lr": 0.1, "epochs": 2, "batch_size": 2}  # tiny random models need a large lr


def context(tmp_path, backend="transformer-lens", seed=0, arm="edit") -> RunContext:
    return RunContext(cached_model(backend), seed, tmp_path / "run", tmp_path / "cache", Progress(enabled=False),
                      datasets={"qa": lambda: EXAMPLES}, arm=arm)


def trained(tmp_path, components=HEADS, backend="transformer-lens", **config):
    ctx = context(tmp_path, backend)
    interventions = IpoLora(FAST | config).interventions(ctx, components)
    edit, spec = load_edit(ctx.run_dir / "edits" / ctx.arm)
    return interventions, edit, spec


def test_pairs_are_every_correct_incorrect_combination():
    pairs = preference_pairs(EXAMPLES, lambda q: f"Q: {q}", " ")
    assert len(pairs) == 2 * 2 + 1 * 2 + 1 * 1
    assert pairs[0].prompt == "Q: Is the sky green?" and pairs[0].chosen == " No." and pairs[0].rejected == " Yes."


def test_ipo_loss_is_the_paper_formula():
    chosen, rejected = torch.tensor([-3.0, -5.0]), torch.tensor([-4.0, -2.0])
    ref_c, ref_r = torch.tensor([-3.5, -5.0]), torch.tensor([-3.0, -2.5])
    tau = 0.25  # target margin 1 / (2 tau) = 2
    margins = [(-3.0 + 3.5) - (-4.0 + 3.0), (-5.0 + 5.0) - (-2.0 + 2.5)]
    expected = sum((m - 2.0) ** 2 for m in margins) / 2
    assert float(ipo_loss(chosen, rejected, ref_c, ref_r, tau)) == pytest.approx(expected)


def test_differentiable_logprobs_match_the_backend(tmp_path):
    backend = cached_model("transformer-lens")
    pairs = preference_pairs(EXAMPLES, backend.chat_prompt)
    chosen, rejected = pair_logprobs(lambda batch: backend.run(batch, grad=True).logits, backend, pairs)
    reference = backend.continuation_logprobs([p.prompt for p in pairs], [p.chosen for p in pairs])
    torch.testing.assert_close(chosen.detach(), reference, atol=1e-5, rtol=0)
    assert rejected.shape == chosen.shape


def test_head_edit_equals_a_lora_update_of_the_output_projection():
    """o + <a, o> (m b) before W is the weight update W + (W m b) a^T (Eq. 4.1-4.3), checked on a copy of the model."""
    backend = cached_model("transformer-lens")
    edit = RankOneEdit.initial(RankOneEdit.masks(HEADS, backend.shape), torch.Generator().manual_seed(1))
    for s in edit.sites:
        s.b.data.normal_(generator=torch.Generator().manual_seed(2))
    batch = backend.encode(["The capital of France is", "Q: 2+2?"], [" Paris", " 4"])
    edited = backend.run(batch, edit.interventions("all")).logits
    model, paths = backend.separate_copy([s.site for s in edit.sites])
    for s in edit.sites:
        proj = model.get_submodule(paths[s.site])
        proj.weight.data += torch.outer(proj.weight.data @ s.direction().detach(), s.a.detach())
    updated = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids).logits
    real = batch.attention_mask.bool()
    torch.testing.assert_close(edited[real], updated[real], atol=1e-4, rtol=0)
    assert (edited[real] - backend.run(batch).logits[real]).abs().max() > 1e-3  # the edit does something


def test_training_moves_only_a_and_b_and_b_stays_on_the_chosen_heads(tmp_path):
    backend = cached_model("transformer-lens")
    before = {k: v.clone() for k, v in backend.backend.loaded_module().state_dict().items()}
    _, edit, spec = trained(tmp_path)
    after = backend.backend.loaded_module().state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    d_head = backend.shape.d_head
    chosen = {0: 1, 1: 3}
    for s in edit.sites:
        head = chosen[s.site[1]]
        inside = torch.zeros_like(s.b, dtype=torch.bool)
        inside[head * d_head:(head + 1) * d_head] = True
        assert torch.all(s.b[~inside] == 0) and s.b[inside].abs().min() > 0
        assert torch.all(s.a != 0)  # a reads every head
    history = spec["loss_history"]
    assert spec["source"] == "trained" and spec["steps"] == len(history) == 4 * 2  # 7 pairs in batches of 2, 2 epochs
    assert spec["lr"] == 0.1 and spec["training_data"]["n_pairs"] == 7


def test_training_lowers_the_objective_on_its_pairs(tmp_path):
    """At initialisation (b = 0) every margin is 0 and the loss is (1/(2 tau))^2 = 1; training must lower it."""
    interventions, _, _ = trained(tmp_path, epochs=4)
    backend = cached_model("transformer-lens")
    pairs = preference_pairs(EXAMPLES, IpoLora(FAST).question_prompt(backend), " ")
    with torch.no_grad():
        chosen, rejected = pair_logprobs(lambda batch: backend.run(batch, interventions).logits, backend, pairs)
        ref_chosen, ref_rejected = pair_logprobs(lambda batch: backend.run(batch).logits, backend, pairs)
    assert float(ipo_loss(ref_chosen, ref_rejected, ref_chosen, ref_rejected, FAST["tau"])) == pytest.approx(1.0)
    assert float(ipo_loss(chosen, rejected, ref_chosen, ref_rejected, FAST["tau"])) < 0.8  # measured: 0.60


@pytest.mark.parametrize("backend", ["transformer-lens", "nnsight"])
def test_training_is_deterministic(tmp_path, backend):
    _, first, _ = trained(tmp_path / "one", backend=backend)
    _, second, _ = trained(tmp_path / "two", backend=backend)
    one, two = first.tensors(), second.tensors()
    assert one.keys() == two.keys() and all(torch.equal(one[k], two[k]) for k in one)


def test_second_run_loads_the_cached_edit_without_training(tmp_path, monkeypatch):
    ctx = context(tmp_path)
    first = IpoLora(FAST).interventions(ctx, HEADS)

    def no_training(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(ipo_lora, "train", no_training)
    second = IpoLora(FAST).interventions(ctx, HEADS)
    spec = json.loads((ctx.run_dir / "edits" / "edit.json").read_text())
    assert spec["source"].startswith("cache: ")
    batch = ctx.model.encode(["Is the sky green?"], [" No."])
    torch.testing.assert_close(ctx.model.run(batch, first).logits, ctx.model.run(batch, second).logits)


def test_load_reuses_a_saved_edit_and_checks_it_fits(tmp_path):
    ctx = context(tmp_path)
    trained_edit = IpoLora(FAST).interventions(ctx, HEADS)
    saved = ctx.run_dir / "edits" / "edit.safetensors"
    other = context(tmp_path / "other", arm="reuse")
    loaded = IpoLora({"load": str(saved)}).interventions(other, HEADS)
    assert json.loads((other.run_dir / "edits" / "reuse.json").read_text())["source"] == f"load: {saved}"
    batch = ctx.model.encode(["Do cats bark?"], [" Yes."])
    torch.testing.assert_close(ctx.model.run(batch, trained_edit).logits, ctx.model.run(batch, loaded).logits)
    with pytest.raises(UserError, match="components"):
        IpoLora({"load": str(saved)}).interventions(other, ComponentSet(["head:0:1"]))
    with pytest.raises(UserError, match="no saved edit"):
        IpoLora({"load": str(tmp_path / "missing.json")}).interventions(other, HEADS)


def test_learning_rate_defaults_follow_the_paper():
    shape = cached_model("transformer-lens").shape
    every_head = ComponentSet([f"head:{l}:{h}" for l in range(shape.n_layers) for h in range(shape.n_heads)])
    assert IpoLora().learning_rate(ComponentSet(["head:0:0"]), shape) == 2e-3
    assert IpoLora().learning_rate(HEADS, shape) == 5e-4
    assert IpoLora().learning_rate(every_head, shape) == 1e-4
    assert IpoLora({"full_model": True}).learning_rate(HEADS, shape) == 1e-4
    assert IpoLora({"lr": 0.3}).learning_rate(HEADS, shape) == 0.3


def test_bad_settings_are_user_errors(tmp_path):
    with pytest.raises(ValueError, match="question"):
        IpoLoraConfig(prompt="no placeholder")
    with pytest.raises(ValueError, match="chat"):
        IpoLoraConfig(system_prompt="Be truthful.")
    with pytest.raises(UserError, match="dataset"):
        IpoLora(FAST | {"dataset": "nope"}).interventions(context(tmp_path), HEADS)
    with pytest.raises(UserError, match="at least one component"):
        IpoLora(FAST).interventions(context(tmp_path), ComponentSet())


@pytest.mark.parametrize("model", ["tiny-llama", "tiny-gpt2"])
def test_peft_lora_converts_to_an_edit_that_reproduces_the_peft_model(model):
    backend = cached_model("transformer-lens", model)
    sites = [("attn", 0), ("attn", 1)]
    module, targets = backend.separate_copy(sites)
    peft_model = full_model.lora_model(module, targets, seed=0)
    generator = torch.Generator().manual_seed(3)
    for p in full_model.lora_parameters(peft_model):
        p.data = torch.randn(p.shape, generator=generator) * 0.5  # B is zero at initialisation: make it act
    batch = backend.encode(["The capital of France is", "Q: 2+2?"], [" Paris", " 4"])
    expected = full_model.logits_of(peft_model)(batch)
    edit, residual = full_model.to_edit(peft_model, targets)
    assert residual < 1e-6  # W is square and invertible in these models
    real = batch.attention_mask.bool()
    converted = backend.run(batch, edit.interventions("all")).logits
    torch.testing.assert_close(converted[real], expected[real], atol=1e-4, rtol=0)
    assert (expected[real] - backend.run(batch).logits[real]).abs().max() > 1e-2


def test_full_model_baseline_trains_peft_and_leaves_the_backend_alone(tmp_path):
    backend = cached_model("transformer-lens")
    before = {k: v.clone() for k, v in backend.backend.loaded_module().state_dict().items()}
    _, edit, spec = trained(tmp_path, full_model=True, epochs=1)
    assert all(torch.equal(before[k], v) for k, v in backend.backend.loaded_module().state_dict().items())
    assert spec["conversion_residual"] < 1e-6 and spec["steps"] == 4
    assert all(torch.all(s.mask == 1) and s.b.abs().sum() > 0 for s in edit.sites)
    with pytest.raises(ValueError, match="full_model trains a weight update, which acts at every token"):
        IpoLoraConfig(full_model=True, positions="last")


def test_recipe_rerun_skips_training(tmp_path):
    """Through the runner: the second run of a recipe loads the cached edit and scores the same."""
    import loctest

    data = tmp_path / "qa.jsonl"
    data.write_text("\n".join(json.dumps({"question": e.question, "correct": list(e.correct), "incorrect": list(e.incorrect)})
                              for e in EXAMPLES * 2))
    recipe = tiny_recipe(tmp_path, f"""[datasets.qa]
plugin = "table"
path = "{data}"
allow_duplicates = true
[scorers.choice]
plugin = "binary-choice"
dataset = "qa"
repetitions = 2
system_prompt = ""
user_prompt = "{{question}} A: {{answer_a}} B: {{answer_b}}"
[arms.edit]
components = ["head:1:0"]
editor = {{ plugin = "ipo-lora", dataset = "qa", epochs = 1, batch_size = 4, lr = 0.05 }}
""")
    first = loctest.run(recipe, progress=False)
    second = loctest.run(recipe, progress=False)
    specs = [json.loads((r.run_dir / "edits" / "edit.json").read_text()) for r in (first, second)]
    assert specs[0]["source"] == "trained" and specs[1]["source"].startswith("cache: ")
    assert first.values("edit", "choice.correct_prob") == second.values("edit", "choice.correct_prob")


def test_ipo_localization_recipe_validates():
    from loctest.runner import prepare

    recipe, _ = prepare(ROOT / "recipes" / "ipo_localization.toml")
    editors = {name: arm.editor.config for name, arm in recipe.arms.items() if arm.editor}
    assert set(editors) == {"probe", "random-0", "random-1", "random-2", "all-heads", "full-model", "single-0", "single-1"}
    assert editors["full-model"].full_model and all(e.dataset == "train" for e in editors.values())
    train, test = recipe.datasets["train"][1], recipe.datasets["test"][1]
    assert (train.split, test.split) == ("train", "test")
    assert train.split_fraction == test.split_fraction == 0.6 and train.split_seed == test.split_seed
