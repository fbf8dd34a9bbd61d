"""Recipe validation: every problem located as FILE: dotted.key: message, all reported together, no weights."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from loctest import ComponentSet
from loctest.cli import main
from loctest.errors import RecipeError, UserError
from loctest.recipe import apply_overrides, dependency_order, parse_value, read_recipe
from loctest.cache import cache_key
from loctest.runner import Run, load_dataset, prepare, question_key
from conftest import write_plugin

BASE = """
[run]
seed = 3

[model]
name = "tiny-llama"

[datasets.tqa]
plugin = "truthfulqa-binary"
limit = 8

[scorers.tqa]
plugin = "binary-choice"
dataset = "tqa"
repetitions = 3

[arms.baseline]

[arms.matched]
locator = { plugin = "random", match = "rand" }
editor = { plugin = "zero-ablation" }

[arms.rand]
locator = { plugin = "random", kind = "mlp", count = 20 }
editor = { plugin = "zero-ablation", positions = "last" }

[[comparisons]]
baseline = "baseline"
treatment = "rand"
metric = "tqa.accuracy"
"""


def write(tmp_path: Path, text: str, name: str = "recipe.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def problems(tmp_path: Path, text: str = BASE, overrides: dict | None = None) -> list[str]:
    """The located problems ``prepare`` reports for a recipe, with the file name stripped."""
    path = write(tmp_path, text)
    with pytest.raises(RecipeError) as err:
        prepare(path, overrides)
    for line in err.value.problems:
        assert line.startswith(f"{path}: ") and "\n" not in line
    return [line.removeprefix(f"{path}: ") for line in err.value.problems]


def test_valid_recipe(tmp_path):
    recipe, _ = prepare(write(tmp_path, BASE))
    assert list(recipe.arms) == ["baseline", "matched", "rand"]
    assert recipe.arm_order() == ["baseline", "rand", "matched"]  # a matched arm runs after the arm it copies
    assert recipe.run.seed == 3 and recipe.model.name == "tiny-llama"
    assert recipe.backend.plugin == "transformer-lens"
    assert recipe.scorers["tqa"].config.repetitions == 3
    spec, selection = recipe.datasets["tqa"]
    assert spec.plugin == "truthfulqa-binary" and selection.limit == 8
    assert recipe.arms["rand"].locator.config.count == 20
    assert recipe.comparisons[0].alternative == "greater"


def test_unknown_plugin_names_suggest_valid_ones(tmp_path):
    found = problems(tmp_path, BASE.replace('plugin = "random", kind', 'plugin = "randm", kind')
                     .replace('"zero-ablation" }', '"zero-ablaton" }'))
    assert found[0].startswith("arms.matched.editor.plugin: unknown editor 'zero-ablaton': did you mean 'zero-ablation'")
    assert found[1].startswith("arms.rand.locator.plugin: unknown locator 'randm': did you mean 'random'? valid: ")
    assert "random" in found[1].split("valid: ")[1].split(", ")
    assert len(found) == 2


def test_misspelled_plugin_config_key(tmp_path):
    (found,) = problems(tmp_path, BASE.replace("repetitions = 3", "repetitons = 3"))
    assert found.startswith("scorers.tqa.repetitons: unknown key; did you mean 'repetitions'? valid: ")
    assert {"dataset", "repetitions", "system_prompt", "user_prompt"} <= set(found.split("valid: ")[1].split(", "))


@pytest.mark.parametrize("override, message", [
    ({"arms.rand.locator.count": '"ten"'}, "Input should be a valid integer, unable to parse string as an integer (got 'ten')"),
    ({"arms.rand.locator.count": "0"}, "Input should be greater than or equal to 1 (got 0)"),
    ({"arms.rand.locator.kind": "neuron"}, "Input should be 'mlp', 'head', 'attn' or 'resid' (got 'neuron')"),
    ({"arms.rand.locator.layers": '[0, "x"]'}, "Input should be a valid integer, unable to parse string as an integer (got 'x')"),
])
def test_wrong_types_name_expected_and_got(tmp_path, override, message):
    key = next(iter(override)) + ("[1]" if "layers" in str(override) else "")
    assert problems(tmp_path, BASE, override) == [f"{key}: {message}"]


def test_wrong_types_in_host_sections(tmp_path):
    text = BASE.replace("seed = 3", 'seed = "three"\nout = 5').replace('name = "tiny-llama"', 'name = "tiny-llama"\ndevice = "gpu"')
    assert problems(tmp_path, text) == [
        "run.seed: Input should be a valid integer, unable to parse string as an integer (got 'three')",
        "run.out: Input should be a valid string (got 5)",
        "model.device: not a torch device; expected 'auto' or a torch device string such as 'cpu', 'cuda', 'cuda:1', 'mps' (got 'gpu')",
    ]


def test_missing_dataset_file_is_resolved_against_the_recipe(tmp_path, monkeypatch):
    text = BASE + '\n[datasets.mine]\nplugin = "table"\npath = "data/mine.csv"\n'
    assert problems(tmp_path, text) == [f"datasets.mine.path: file not found: {tmp_path / 'data' / 'mine.csv'}"]
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "mine.csv").write_text("question,correct,incorrect\nQ?,yes,no\n")
    monkeypatch.chdir(tmp_path.parent)
    recipe, _ = prepare(tmp_path / "recipe.toml")
    assert recipe.datasets["mine"][0].config.path == str(tmp_path / "data" / "mine.csv")
    assert [e.question for e in recipe.datasets["mine"][0].instance.load()] == ["Q?"]


def test_required_plugin_setting(tmp_path):
    text = BASE + '\n[datasets.mine]\nplugin = "table"\n'
    assert problems(tmp_path, text) == ["datasets.mine.path: required key is missing"]


def test_unknown_sections_and_keys(tmp_path):
    text = BASE.replace("[arms.baseline]", "[arms.baseline]\nlocatr = 'random'") + "\n[arm.extra]\n[scorer]\n"
    assert problems(tmp_path, text) == [
        "arm: unknown section; did you mean 'arms'? valid: arms, backend, comparisons, datasets, model, plugins, run, scorers",
        "scorer: unknown section; did you mean 'scorers'? valid: arms, backend, comparisons, datasets, model, plugins, run, scorers",
        "arms.baseline.locatr: unknown key; did you mean 'locator'? valid: components, draws, editor, locator, sweep",
    ]


def test_backend_name_and_settings(tmp_path):
    text = BASE.replace("seed = 3", 'seed = 3\nbackend = "nnsght"')
    assert problems(tmp_path, text)[0].startswith("run.backend: unknown backend 'nnsght': did you mean 'nnsight'? valid: ")
    text = BASE + '\n[backend]\nbatch_sise = 4\nplugin = "nnsight"\n'
    found = problems(tmp_path, text)
    assert found[0] == "backend.plugin: unknown key; the backend is chosen by run.backend"
    assert found[1].startswith("backend.batch_sise: unknown key; did you mean 'batch_size'?")
    recipe, _ = prepare(write(tmp_path, BASE + "\n[backend]\nbatch_size = 4\n"))
    assert recipe.backend.config.batch_size == 4


def test_comparisons_reference_arms_and_metrics(tmp_path):
    text = BASE + '\n[[comparisons]]\nbaseline = "basline"\ntreatment = "rnd"\nmetric = "tqa.acuracy"\n' \
                  '\n[[comparisons]]\nbaseline = "baseline"\ntreatment = "rand"\nmetric = "truthfulqa.accuracy"\n' \
                  '\n[[comparisons]]\nbaseline = "baseline"\ntreatment = "rand"\nmetric = "tqa.accuracy"\nalternative = "bigger"\n'
    found = problems(tmp_path, text)
    assert found[:3] == [
        "comparisons[1].baseline: no arm 'basline' in [arms]; did you mean 'baseline'? valid: baseline, matched, rand",
        "comparisons[1].treatment: no arm 'rnd' in [arms]; did you mean 'rand'? valid: baseline, matched, rand",
        "comparisons[1].metric: scorer 'tqa' has no metric 'acuracy'; did you mean 'accuracy'? valid: accuracy, correct_prob",
    ]
    assert found[3] == "comparisons[2].metric: expected 'SCORER.METRIC' with a scorer from [scorers]; valid: tqa"
    assert found[4].startswith("comparisons[3].alternative: Input should be 'greater', 'less' or 'two-sided' (got 'bigger')")
    assert len(found) == 5


def test_bad_component_names(tmp_path):
    text = BASE.replace("[arms.baseline]", '[arms.baseline]\ncomponents = ["mlp:1:2", "mlp:x", "head:1", "attn:0:1:2"]')
    assert problems(tmp_path, text) == [
        "arms.baseline.components[1]: bad component name 'mlp:x': expected 'mlp:LAYER:NEURON', 'head:LAYER:HEAD', 'attn:LAYER:HEAD:DIM' or 'resid:LAYER'",
        "arms.baseline.components[2]: bad component name 'head:1': expected 'mlp:LAYER:NEURON', 'head:LAYER:HEAD', 'attn:LAYER:HEAD:DIM' or 'resid:LAYER'",
    ]
    assert problems(tmp_path, BASE.replace("[arms.baseline]", "[arms.baseline]\ncomponents = []")) == [
        "arms.baseline.components: expected a non-empty list of component names like 'mlp:3:17', 'head:5:2', "
        "'attn:5:2:7', 'resid:4'"]


def test_components_from_a_json_file_of_an_earlier_run(tmp_path):
    ComponentSet(["mlp:1:2", "head:0:1"]).save(tmp_path / "found.json")
    text = BASE.replace("[arms.baseline]", '[arms.baseline]\ncomponents = "found.json"\neditor = "zero-ablation"')
    recipe, _ = prepare(write(tmp_path, text))
    assert recipe.arms["baseline"].components == ["mlp:1:2", "head:0:1"]
    text = BASE.replace("[arms.baseline]", '[arms.baseline]\ncomponents = "lost.json"')
    assert problems(tmp_path, text) == [f"arms.baseline.components: file not found: {tmp_path / 'lost.json'}"]


def test_arm_structure(tmp_path):
    text = BASE.replace("[arms.baseline]", '[arms.baseline]\neditor = "zero-ablation"') \
        .replace('editor = { plugin = "zero-ablation", positions = "last" }',
                 'editor = { plugin = "zero-ablation", positions = "last" }\ncomponents = ["mlp:0:1"]')
    assert problems(tmp_path, text) == [
        "arms.baseline.editor: an editor needs components: add a 'locator' or 'components'",
        "arms.rand: give either 'locator' or 'components', not both",
    ]


@pytest.mark.parametrize("arms, expected", [
    ('[arms.a]\nlocator = { plugin = "random", match = "b" }\n[arms.b]\nlocator = { plugin = "random", match = "a" }\n',
     ["arms.a.locator.match: arms depend on each other in a cycle: a -> b -> a"]),
    ('[arms.a]\nlocator = { plugin = "random", match = "a" }\n',
     ["arms.a.locator.match: arms depend on each other in a cycle: a -> a"]),
    ('[arms.a]\nlocator = { plugin = "random", match = "rnd" }\n',
     ["arms.a.locator.match: no arm 'rnd' in [arms]; did you mean 'rand'? valid: a, baseline, matched, rand"]),
])
def test_match_references(tmp_path, arms, expected):
    assert problems(tmp_path, BASE + arms) == expected


def test_dependency_order():
    assert dependency_order({"c": ["b"], "b": ["a"], "a": []}) == (["a", "b", "c"], [])
    assert dependency_order({"x": ["y"], "y": ["z"], "z": ["y"]})[1] == ["y", "z", "y"]


def test_dataset_references(tmp_path):
    found = problems(tmp_path, BASE.replace('dataset = "tqa"', 'dataset = "tq"'))
    assert found == ["scorers.tqa.dataset: no dataset 'tq' in [datasets]; did you mean 'tqa'? valid: tqa"]
    # a declared dataset with its own problem is not reported again where it is used
    found = problems(tmp_path, BASE.replace('plugin = "truthfulqa-binary"', 'plugin = "truthfulqa-binery"'))
    assert len(found) == 1 and found[0].startswith("datasets.tqa.plugin: unknown dataset 'truthfulqa-binery'")


EXCLUDING = """
[datasets.mc-train]
plugin = "truthfulqa-mc"
split = "train"
limit = 300

[datasets.binary-test]
plugin = "truthfulqa-binary"
split = "test"
exclude = ["mc-train"]
limit = 50
"""


def test_exclude_keeps_a_test_set_apart_from_another_datasets_questions(tmp_path):
    recipe, _ = prepare(write(tmp_path, BASE + EXCLUDING))
    trained = {question_key(e.question) for e in load_dataset(recipe, "mc-train")}
    kept = load_dataset(recipe, "binary-test")
    assert len(kept) == 50 and not trained & {question_key(e.question) for e in kept}
    unexcluded = EXCLUDING.replace('exclude = ["mc-train"]', "").replace("limit = 50", "")
    plain = load_dataset(prepare(write(tmp_path, BASE + unexcluded))[0], "binary-test")
    assert trained & {question_key(e.question) for e in plain}  # the two formats share questions: excluding matters
    assert [e.id for e in kept] == [e.id for e in plain if question_key(e.question) not in trained][:50]
    # an excluded dataset's own selection is part of the cache key of the datasets that exclude it
    keys = [Run(prepare(write(tmp_path, BASE + EXCLUDING.replace("limit = 300", f"limit = {n}")))[0], None, None)
            .dataset_keys["binary-test"] for n in (300, 301)]
    assert cache_key(keys[0]) != cache_key(keys[1])


@pytest.mark.parametrize(("exclude", "expected"), [
    ('["mc-trian"]', "datasets.binary-test.exclude[0]: no dataset 'mc-trian' in [datasets]; did you mean 'mc-train'?"),
    ('["binary-test"]', "datasets.binary-test.exclude: datasets exclude each other in a cycle: binary-test -> binary-test"),
    ('"mc-train"', "datasets.binary-test.exclude: Input should be a valid list"),
])
def test_exclude_mistakes(tmp_path, exclude, expected):
    found = problems(tmp_path, BASE + EXCLUDING.replace('["mc-train"]', exclude))
    assert any(line.startswith(expected) for line in found), found


def test_exclude_that_leaves_nothing_says_so(tmp_path):
    text = BASE + EXCLUDING.replace("limit = 300", "").replace('split = "train"', 'split = "all"').replace(
        '"truthfulqa-mc"', '"truthfulqa-binary"')
    with pytest.raises(RecipeError, match=r"datasets.binary-test: no examples selected.*dropping the questions of mc-train"):
        prepare(write(tmp_path, text))


REFERENCING = '''
from pydantic import Field

from loctest import ArmRef, ComponentSet, DatasetRef, Locator, PluginConfig, PluginRef, hookimpl


class Union(Locator):
    name = "union"
    description = "The components of other arms."

    class Config(PluginConfig):
        arms: list[ArmRef] = Field(..., description="Arms whose components to join.")
        dataset: DatasetRef | None = Field(None, description="A dataset, if any.")
        judge: PluginRef("judge", settings="judge_config") = Field("offline", description="A judge.")
        judge_config: dict = Field(default_factory=dict, description="The judge's settings.")

    def locate(self, context):
        return ComponentSet(name for arm in self.config.arms for name in context.components[arm].names())


@hookimpl
def register_locators(register):
    register(Union)
'''


def test_typed_references_are_found_by_type_and_checked(tmp_path):
    write_plugin(tmp_path / "plugins", "union", REFERENCING)
    text = '[plugins]\npaths = ["plugins"]\n' + BASE.replace("[arms.baseline]", """[arms.baseline]
[arms.joined]
locator = { plugin = "union", arms = ["rand", "rnd"], dataset = "tq", judge = "ofline" }""")
    found = problems(tmp_path, text)
    assert found[0] == "arms.joined.locator.arms[1]: no arm 'rnd' in [arms]; did you mean 'rand'? valid: baseline, joined, matched, rand"
    assert found[1] == "arms.joined.locator.dataset: no dataset 'tq' in [datasets]; did you mean 'tqa'? valid: tqa"
    assert found[2].startswith("arms.joined.locator.judge: unknown judge 'ofline': did you mean 'offline'? valid: ")
    assert len(found) == 3
    settings = 'judge = "offline", judge_config = { weights = 3 }'
    assert problems(tmp_path, text.replace('dataset = "tq", judge = "ofline"', settings).replace('"rnd"', '"matched"')) \
        == ["arms.joined.locator.judge_config.weights: Input should be a valid string (got 3)"]
    recipe, _ = prepare(write(tmp_path, text.replace(', dataset = "tq", judge = "ofline"', "").replace('"rnd"', '"matched"')))
    assert recipe.arm_order() == ["baseline", "rand", "matched", "joined"]  # after every arm it names
    assert recipe.arms["joined"].locator.instance is recipe.arms["joined"].locator.instance  # built once


def test_references_and_their_types():
    from pydantic import Field

    from loctest import ArmRef, DatasetRef, PluginConfig, PluginRef
    from loctest.references import Declared, Registered, references, type_text

    class Config(PluginConfig):
        dataset: DatasetRef = Field("a", description="")
        others: list[DatasetRef] | None = Field(None, description="")
        arm: ArmRef | None = Field(None, description="")
        judge: PluginRef("judge") = Field("offline", description="")
        text: str = Field("not a reference", description="")

    found = list(references(Config(others=["b", "c"], arm="x")))
    assert found == [("dataset", Declared("datasets"), "a"), ("others[0]", Declared("datasets"), "b"),
                     ("others[1]", Declared("datasets"), "c"), ("arm", Declared("arms"), "x"),
                     ("judge", Registered("judge"), "offline")]
    fields = Config.model_fields
    assert [type_text(f.annotation, f.metadata) for f in fields.values()] == [
        "DatasetRef", "list[DatasetRef] | None", "ArmRef | None", "PluginRef('judge')", "str"]


def test_missing_required_sections(tmp_path):
    assert problems(tmp_path, '[model]\nname = "tiny-llama"\n') == [
        "scorers: required: at least one [scorers.NAME] table",
        "arms: required: at least one [arms.NAME] table",
    ]
    assert problems(tmp_path, 'arms = 3\nbackend = "nnsight"\nscorers = []\n') == [
        "backend: expected a table of backend settings, got str",
        "scorers: expected a table of named entries ([scorers.NAME]), got list",
        "arms: expected a table of named entries ([arms.NAME]), got int",
    ]


def test_plugin_paths_must_exist(tmp_path):
    assert problems(tmp_path, '[plugins]\npaths = ["nowhere"]\n' + BASE) == [
        f"plugins.paths[0]: file or folder not found: {tmp_path / 'nowhere'}"]
    assert problems(tmp_path, '[plugins]\npaths = "nowhere.py"\n' + BASE) == [
        "plugins.paths: Input should be a valid list (got 'nowhere.py')"]


def test_all_errors_are_reported_together(tmp_path):
    text = (BASE.replace("seed = 3", 'seed = "x"')
            .replace('plugin = "random", kind', 'plugin = "randm", kind')
            .replace("repetitions = 3", "repetitons = 3")
            .replace('metric = "tqa.accuracy"', 'metric = "tqa.acc"')
            .replace("[arms.baseline]", '[arms.baseline]\ncomponents = ["mlp:1"]')) + "\n[extra]\n"
    found = problems(tmp_path, text)
    keys = [line.split(": ")[0] for line in found]
    assert keys == ["extra", "run.seed", "scorers.tqa.repetitons", "arms.baseline.components[0]",
                    "arms.rand.locator.plugin"]
    for line in found:
        assert re.fullmatch(r"[\w.\[\]-]+: \S.*", line)


def test_toml_syntax_error_and_missing_file(tmp_path):
    path = write(tmp_path, "[run]\nseed = \n")
    with pytest.raises(RecipeError) as err:
        read_recipe(path)
    assert err.value.problems == [f"{path}: TOML syntax error: Invalid value (at line 2, column 8)"]
    with pytest.raises(UserError, match=r"nope\.toml: recipe file not found"):
        read_recipe(tmp_path / "nope.toml")
    with pytest.raises(UserError, match="recipe file not found"):
        read_recipe(tmp_path)
    (tmp_path / "binary.toml").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(RecipeError, match="expected a UTF-8 TOML file"):
        read_recipe(tmp_path / "binary.toml")


@pytest.mark.parametrize("text, value", [
    ("3", 3), ("0.5", 0.5), ("true", True), ("false", False), ("[1, 2]", [1, 2]), ('"007"', "007"),
    ("tiny-llama", "tiny-llama"), ("07", "07"), ("some words", "some words"), ("{ a = 1 }", {"a": 1}),
])
def test_set_values_are_toml_with_a_string_fallback(text, value):
    assert parse_value(text) == value and type(parse_value(text)) is type(value)


def test_apply_overrides():
    raw = {"run": {"seed": 1}, "arms": {"a": {"locator": {"plugin": "random", "flag": True}}}}
    out = apply_overrides(raw, {"arms.a.locator.flag": "false", "run.seed": "2", "model.name": "tiny-gpt2",
                                "arms.a.locator.layers": [0, 1]})
    assert out == {"run": {"seed": 2}, "model": {"name": "tiny-gpt2"},
                   "arms": {"a": {"locator": {"plugin": "random", "flag": False, "layers": [0, 1]}}}}
    assert raw["arms"]["a"]["locator"]["flag"] is True and "model" not in raw  # the input is left alone
    with pytest.raises(UserError, match=r"--set run.seed.x: 'seed' is not a table"):
        apply_overrides(raw, {"run.seed.x": "1"})


FLAG_LOCATOR = '''
from pydantic import Field

from loctest import ComponentSet, Locator, PluginConfig, hookimpl


class Flagged(Locator):
    name = "flagged"
    description = "Layer 0's first neuron, or layer 1's when 'second' is set."

    class Config(PluginConfig):
        second: bool = Field(True, description="Use layer 1.")

    def locate(self, context):
        return ComponentSet([f"mlp:{int(self.config.second)}:0"])


@hookimpl
def register_locators(register):
    register(Flagged)
'''


def test_set_overrides_through_prepare(tmp_path):
    write_plugin(tmp_path / "plugins", "flagged", FLAG_LOCATOR)
    text = '[plugins]\npaths = ["plugins"]\n' + BASE + '\n[arms.flag]\nlocator = { plugin = "flagged", second = true }\n'
    path = write(tmp_path, text)
    recipe, _ = prepare(path, {"arms.flag.locator.second": "false", "run.seed": "11", "model.name": "tiny-qwen2",
                               "arms.rand.locator.count": "7", "datasets.tqa.split": "test"})
    assert recipe.arms["flag"].locator.config.second is False
    assert (recipe.run.seed, recipe.model.name) == (11, "tiny-qwen2")
    assert recipe.arms["rand"].locator.config.count == 7
    assert recipe.datasets["tqa"][1].split == "test"
    assert recipe.raw["arms"]["rand"]["locator"]["count"] == 7  # results.json records the recipe as resolved
    assert problems(tmp_path, text, {"arms.flag.locator.second": "maybe", "run.seed": "abc"}) == [
        "run.seed: Input should be a valid integer, unable to parse string as an integer (got 'abc')",
        "arms.flag.locator.second: Input should be a valid boolean, unable to interpret input (got 'maybe')",
    ]


def test_limit_device_backend_and_out_options(tmp_path):
    recipe, _ = prepare(write(tmp_path, BASE), limit=5, device="cpu", backend="nnsight", out=tmp_path / "o")
    assert recipe.datasets["tqa"][1].limit == 5
    assert recipe.model.device == "cpu" and recipe.backend.plugin == "nnsight" and recipe.run.out == str(tmp_path / "o")
    recipe, _ = prepare(write(tmp_path, BASE), limit=50)
    assert recipe.datasets["tqa"][1].limit == 8  # --limit never raises a recipe's own limit


@pytest.fixture
def no_weights(monkeypatch):
    """Any attempt to build or load model weights fails the test."""
    import transformers

    def refuse(*args, **kwargs):
        raise AssertionError("validate loaded model weights")

    for name in ("from_pretrained", "from_config"):
        monkeypatch.setattr(transformers.AutoModelForCausalLM, name, refuse)
    monkeypatch.setattr("loctest.runner.load_model", refuse)
    monkeypatch.setattr("loctest.models.load_model", refuse)


@pytest.mark.parametrize("model", ["tiny-llama", "no-such-org/no-such-model", "smollm2-135m-instruct"])
def test_validate_loads_no_weights(tmp_path, capsys, no_weights, model):
    path = write(tmp_path, BASE.replace('name = "tiny-llama"', f'name = "{model}"'))
    assert main(["validate", str(path)]) == 0
    assert capsys.readouterr().out.strip() == f"{path}: OK (3 arms, 1 scorers, 1 datasets, 1 comparisons)"


def test_missing_local_model_folder(tmp_path):
    text = BASE.replace('name = "tiny-llama"', f'name = "{tmp_path / "no-model"}"')
    assert problems(tmp_path, text) == [f"model.name: no such local folder: {tmp_path / 'no-model'}"]


def test_quickstart_recipe_validates_without_weights(capsys, no_weights):
    path = Path(__file__).resolve().parent.parent / "recipes" / "quickstart.toml"
    assert main(["validate", str(path)]) == 0
    assert capsys.readouterr().out.startswith(f"{path}: OK (")


def test_cached_results_follow_the_content_of_a_dataset_file(tmp_path):
    from loctest.plugin_manager import create_host
    from loctest.recipe import PluginSpec
    from loctest_plugins.datasets.table import Table

    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"question": "Q1", "correct": "yes", "incorrect": "no"}\n')
    spec = PluginSpec("table", Table, Table.Config(path=str(rows)), create_host())
    before = spec.identity
    rows.write_text('{"question": "Q1", "correct": "no", "incorrect": "yes"}\n')
    assert spec.identity != before
