"""Every editor on every component kind, on both backends: the edit changes the chosen coordinates and nothing else
at the edited site or upstream of it (bit for bit); ipo-lora's training leaves every model weight alone;
mean-ablation writes the plain mean; resample-ablation never pairs a text with its own example; combinations an
editor cannot support are refused with the reason."""
from __future__ import annotations

import pytest
import torch

from loctest import ComponentSet, Example
from loctest.context import RunContext
from loctest.errors import RecipeError, UserError
from loctest.progress import Progress
from loctest.runner import prepare, run_recipe
from loctest_plugins.common.binary_prompts import BinaryPromptConfig, binary_prompts
from loctest_plugins.common.qa import QA_PROMPT, qa_prompt
from loctest_plugins.editors.iti_shift import ITIShift
from loctest_plugins.editors.mean_ablation import MeanAblation, MeanAblationConfig
from loctest_plugins.editors.resample_ablation import ResampleAblation, ResampleAblationConfig

from conftest import cached_model, plugin_host, tiny_recipe

EXAMPLES = [Example(f"q{i}", f"Is {w} red?", (f"No, {w}.",), (f"Yes, {w}!",))
            for i, w in enumerate("sky cat sun ice elk owl".split())]
KINDS = {"mlp": ["mlp:1:5", "mlp:1:40"], "attn": ["attn:1:2:3", "attn:1:0:7"], "head": ["head:1:2"],
         "resid": ["resid:0"]}
EDITORS = {
    "zero-ablation": {"positions": "last"},
    "mean-ablation": {"dataset": "qa", "positions": "prompt"},
    "resample-ablation": {"dataset": "qa"},
    "iti-shift": {"dataset": "qa", "positions": "all", "alpha": 5.0},
    "ipo-lora": {"dataset": "qa", "epochs": 1, "max_pairs": 4, "batch_size": 4, "lr": 0.1, "tau": 0.5},
}
ORDER = [("attn", 0), ("mlp", 0), ("resid", 0), ("attn", 1), ("mlp", 1), ("resid", 1)]  # execution order


def context(model, tmp_path, arm="edit", examples=EXAMPLES) -> RunContext:
    return RunContext(model, 0, tmp_path / "run", tmp_path / "cache", Progress(enabled=False),
                      datasets={"qa": lambda: examples}, arm=arm)


def editor(name: str, settings: dict | None = None):
    return plugin_host().registry("editor").get(name)(EDITORS[name] if settings is None else settings)


def scored_batch(model):
    """QA prompts with answers: prompt, last and continuation positions all present, rows of different lengths."""
    prompts = [qa_prompt(QA_PROMPT, ex.question) for ex in EXAMPLES[:3]]
    return model.encode(prompts, [" No.", " Yes, it is.", " Hm"])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", EDITORS)
def test_edit_touches_only_the_chosen_coordinates(tiny_model, tmp_path, name, kind):
    components = ComponentSet(KINDS[kind])
    weights = tiny_model.backend.loaded_module().state_dict
    before = {k: v.clone() for k, v in weights().items()} if name == "ipo-lora" else None
    edits = editor(name).interventions(context(tiny_model, tmp_path), components)
    (site, cols), = components.site_indices(tiny_model.shape).items()
    assert {iv.site for iv in edits} == {site}
    batch = scored_batch(tiny_model)
    sites = ORDER[:ORDER.index(site) + 1]
    edited = tiny_model.run(batch, edits, capture=sites).activations
    plain = tiny_model.run(batch, capture=sites).activations
    for upstream in sites[:-1]:
        assert torch.equal(edited[upstream], plain[upstream]), upstream
    positions = torch.stack([batch.position_mask(iv.positions) for iv in edits]).any(0)
    chosen = positions[..., None] & torch.isin(torch.arange(edited[site].shape[-1]), torch.tensor(cols))
    assert torch.equal(edited[site][~chosen], plain[site][~chosen])
    assert (edited[site][chosen] != plain[site][chosen]).any()
    if before is not None:
        after = weights()
        assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_iti_shift_on_one_heads_attention_neurons_is_that_heads_shift(tmp_path):
    """One direction over a site's chosen coordinates: all dimensions of a head, as attention neurons, give ITI's
    per-head shift."""
    model = cached_model("transformer-lens")
    zeros = torch.zeros(1, 1, model.shape.site_width("attn"))

    def added(components: list[str]) -> torch.Tensor:
        edit, = ITIShift(EDITORS["iti-shift"]).interventions(context(model, tmp_path), ComponentSet(components))
        return edit.transform(zeros)

    neurons = [f"attn:1:2:{d}" for d in range(model.shape.d_head)]
    torch.testing.assert_close(added(neurons), added(["head:1:2"]), rtol=1e-6, atol=1e-7)


def plain_mean(model, prompts, continuations, site, positions) -> torch.Tensor:
    """Each text run alone, its activations at the policy's positions, averaged over every token of every text."""
    rows = []
    for i, prompt in enumerate(prompts):
        batch = model.encode([prompt], [continuations[i]] if continuations else None)
        rows.append(model.run(batch, capture=[site]).activations[site][0][batch.position_mask(positions)[0]])
    return torch.cat(rows).double().mean(0).float()


@pytest.mark.parametrize("positions", ["last", "all"])
def test_mean_ablation_writes_the_plain_mean(tiny_model, tmp_path, positions):
    examples, width = EXAMPLES[:3], tiny_model.shape.site_width("mlp")
    edit, = MeanAblation({"dataset": "qa", "positions": positions}).interventions(
        context(tiny_model, tmp_path, examples=examples), ComponentSet(["mlp:1:5", "mlp:1:40"]))
    written = edit.transform(torch.zeros(1, 1, width))[0, 0, [5, 40]]
    if positions == "last":
        prompts, answers = [qa_prompt(QA_PROMPT, ex.question) for ex in examples], None
    else:  # every answer after its question
        prompts = [qa_prompt(QA_PROMPT, ex.question) for ex in examples for _ in ex.correct + ex.incorrect]
        answers = [f" {a}" for ex in examples for a in ex.correct + ex.incorrect]
    expected = plain_mean(tiny_model, prompts, answers, ("mlp", 1), positions)[[5, 40]]
    torch.testing.assert_close(written, expected, rtol=1e-4, atol=1e-5)


def partners(model, edits, prompts, site, pool) -> list[int]:
    """The reference prompt whose activation each prompt's last token took, in one padded batch."""
    batch = model.encode(prompts)
    rows = model.run(batch, edits, capture=[site]).activations[site][torch.arange(len(prompts)), batch.last_prompt_index]
    found = torch.cdist(rows, pool).argmin(-1)
    torch.testing.assert_close(rows, pool[found], rtol=1e-4, atol=1e-5)
    return found.tolist()


@pytest.mark.parametrize("prompt", ["qa", "binary-choice"])
def test_resample_never_pairs_a_text_with_its_own_example(tiny_model, tmp_path, prompt):
    site, examples = ("resid", 0), EXAMPLES[:4]
    if prompt == "qa":
        prompts, example = [qa_prompt(QA_PROMPT, ex.question) for ex in examples], list(range(len(examples)))
    else:  # both answer orders of each question: the other order is the same example
        prompts = binary_prompts(tiny_model, BinaryPromptConfig(), examples)
        example = [i // 2 for i in range(len(prompts))]
    resample = ResampleAblation({"dataset": "qa", "prompt": prompt})
    edits = resample.interventions(context(tiny_model, tmp_path, examples=examples), ComponentSet(["resid:0"]))
    pool = torch.stack([tiny_model.run(tiny_model.encode([p]), capture=[site]).activations[site][0, -1] for p in prompts])
    paired = partners(tiny_model, edits, prompts, site, pool)
    assert all(example[j] != example[i] for i, j in enumerate(paired))
    assert partners(tiny_model, edits, prompts[::-1], site, pool) == paired[::-1]  # in any batch, the same partner
    other_arm = resample.interventions(context(tiny_model, tmp_path, "other", examples), ComponentSet(["resid:0"]))
    assert partners(tiny_model, other_arm, prompts, site, pool) == paired  # the same pairing in every arm of a run


def test_refused_combinations_say_why(tmp_path):
    with pytest.raises(ValueError, match="last prompt token"):
        ResampleAblationConfig(dataset="qa", positions="all")
    with pytest.raises(ValueError, match="binary-choice prompts have none"):
        MeanAblationConfig(dataset="qa", prompt="binary-choice", positions="continuation")
    ipo = editor("ipo-lora", EDITORS["ipo-lora"] | {"full_model": True})
    with pytest.raises(UserError, match=r"^ipo-lora: full_model .*residual stream"):
        ipo.interventions(context(cached_model("transformer-lens"), tmp_path), ComponentSet(["resid:1"]))
    scored = """[datasets.qa]
plugin = "truthfulqa-binary"
limit = 4
[scorers.choice]
plugin = "binary-choice"
dataset = "qa"
"""
    recipe = tiny_recipe(tmp_path, scored + """[arms.resample]
components = ["mlp:0:1"]
editor = { plugin = "resample-ablation", dataset = "qa", positions = "prompt" }
[arms.full]
components = ["resid:1", "mlp:0:1"]
editor = { plugin = "ipo-lora", dataset = "qa", full_model = true }
""")
    with pytest.raises(RecipeError) as refused:
        prepare(recipe)
    problems = "\n".join(refused.value.problems)
    assert "arms.resample.editor.positions" in problems and "last prompt token" in problems
    assert "arms.full.editor" in problems and "residual stream" in problems
    located = tiny_recipe(tmp_path, scored + """[arms.full]
locator = { plugin = "random", kind = "resid", count = 1 }
editor = { plugin = "ipo-lora", dataset = "qa", full_model = true }
""", name="located.toml")
    with pytest.raises(RecipeError) as at_run_time:  # located components are known only when the run has them
        run_recipe(located, progress=False)
    (problem,) = at_run_time.value.problems
    assert problem.startswith(f"{located}: arms.full.editor: ipo-lora: full_model") and problem.count("arms.") == 1
