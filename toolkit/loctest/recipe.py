"""Recipes: TOML data (never code) validated as a whole before any weights load.

Every problem is collected and reported together as ``FILE: dotted.key: message``.
"""
from __future__ import annotations

import copy
import functools
import json
import re
import tomllib
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator

from .base import PluginConfig
from .cache import source_fingerprint
from .components import Component
from .draws import against_draws, check_draws, check_drawn_references, drawn_arms, expand_draws
from .errors import RecipeError, UserError, did_you_mean
from .models import ModelConfig, missing_local_path
from .plugin_manager import PluginHost
from .references import Declared, references
from .stats import Alternative

SECTIONS = ("run", "model", "backend", "plugins", "datasets", "scorers", "arms", "comparisons")
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # run, arm, scorer and dataset names name files
ARM_KEYS = ("locator", "editor", "components", "sweep", "draws")


class RunSection(PluginConfig):
    name: str | None = Field(None, description="Run name (default: the recipe's file name).")
    seed: int = Field(0, description="Seed for every random choice of the run.")
    backend: str = Field("transformer-lens", description="Backend plugin name.")
    out: str = Field("runs", description="Folder that receives one new run directory per run.")
    cache: str = Field(".loctest-cache", description="Folder of the resumable on-disk cache.")


class PluginsSection(PluginConfig):
    paths: list[str] = Field(default_factory=list, description="Extra plugin files or folders (relative to the recipe).")


class DatasetSelection(PluginConfig):
    limit: int | None = Field(None, ge=1, description="Keep at most this many examples (after the seeded shuffle).")
    limit_fraction: float | None = Field(None, gt=0, le=1, description=(
        "Keep this share of the examples left after split and limit (rounded, at least 1); `--limit 0.1` sets it."))
    split: Literal["all", "train", "test"] = Field("all", description="Which part of a seeded split to use.")
    split_fraction: float = Field(0.5, gt=0, lt=1, description="Share of examples in the 'train' part.")
    split_seed: int = Field(0, description="Seed of the shuffle behind split and limit.")
    exclude: list[str] = Field(default_factory=list, description=(
        "Datasets of the recipe whose questions this one drops (same text, case and spacing aside), after the "
        "split and before the limit: keeps a test set apart from every question a locator or editor saw, also "
        "across datasets of different formats (binary-choice and MC TruthfulQA share their questions)."))


class Comparison(PluginConfig):
    baseline: str = Field(..., description="Arm expected to score higher (with alternative 'greater').")
    treatment: str = Field(..., description="Arm compared with the baseline.")
    metric: str = Field(..., description="'SCORER.METRIC', e.g. 'truthfulqa.accuracy'.")
    alternative: Alternative = Field("greater", description="Welch alternative: baseline 'greater', 'less' or 'two-sided'.")
    treatment_draws: list[str] = Field(default_factory=list, description=(
        "Further arms that are independent draws of the same control as the treatment (e.g. random locators "
        "with different `draw`). With them the unit of the test is the arm, not the repetition: the baseline's "
        "mean is ranked among the draws' means (exact rank p-value). Repetitions only resample answer order, "
        "so a per-repetition test against ONE random draw ignores which set was drawn (see docs/recipes.md)."))


class Sweep(PluginConfig):
    sizes: list[int] = Field(..., min_length=2, description=(
        "Component counts k, distinct and increasing (e.g. [1, 2, 4, 8]): each k's top-k located set is edited "
        "and scored, as arm ARM@kK."))
    draws: int = Field(..., ge=1, description=(
        "Matched random draws per k (arms ARM@kK~randomI): nested sets with the top k's count of each kind in "
        "each layer. The rank p can go no lower than 1 / (draws + 1) (twice that two-sided)."))
    alternative: Alternative = Field("two-sided", description=(
        "Rank test of the area between the located curve and the draws' mean: 'greater' (the located curve lies "
        "above), 'less' or 'two-sided'."))

    @field_validator("sizes")
    @classmethod
    def _increasing(cls, sizes: list[int]) -> list[int]:
        if sizes[0] < 1:
            raise ValueError(f"sizes must be at least 1, got {sizes[0]}")
        if sizes != sorted(set(sizes)):
            raise ValueError(f"sizes must be distinct and increasing; did you mean {sorted(set(sizes))}?")
        return sizes


@dataclass
class PluginSpec:
    plugin: str
    cls: type
    config: PluginConfig
    host: PluginHost | None = None

    @functools.cached_property
    def instance(self):
        """The plugin, built once from its config (the runner builds a backend itself, over the loaded model)."""
        return self.cls(self.config)

    @property
    def identity(self) -> list:
        """What cached results depend on: the plugin's name, the fingerprint of its code, its config, and
        what the plugin's own ``fingerprint`` adds (data files, plugins it builds)."""
        return [self.plugin, source_fingerprint(self.cls), self.config, self.cls.fingerprint(self.config, self.host)]

    def resolved(self) -> dict:
        """The plugin's name and its whole config, as ``results.json`` records them."""
        return {"plugin": self.plugin, **self.config.model_dump(mode="json")}


@dataclass
class ArmSpec:
    name: str
    locator: PluginSpec | None = None
    editor: PluginSpec | None = None
    components: list[str] | None = None
    sweep: Sweep | None = None
    sweep_point: dict | None = None  # an arm a sweep generated: {"of": ARM, "k": K, "draw": None or I}
    draws: int | None = None  # N independent draws of the arm's locator, run as arms ARM~draw0 ...
    draw_point: dict | None = None  # one of those draws: {"of": ARM, "draw": I}

    def plugins(self) -> list[tuple[str, PluginSpec]]:
        """The arm's locator and editor, each with the dotted key of its table."""
        declared = self.draw_point["of"] if self.draw_point else self.name
        return [(f"arms.{declared}.{role}", spec) for role, spec in (("locator", self.locator), ("editor", self.editor))
                if spec is not None]

    def arm_references(self) -> list[tuple[str, str]]:
        """``(dotted key, arm)`` for each arm that this arm's locator or editor names: those arms run first."""
        return [(f"{key}.{setting}", name) for key, spec in self.plugins()
                for setting, marker, name in references(spec.config) if marker == Declared("arms")]

    @property
    def depends_on(self) -> list[str]:
        return [name for _, name in self.arm_references()]


@dataclass
class Recipe:
    path: Path
    raw: dict
    run: RunSection
    model: ModelConfig
    backend: PluginSpec | None  # None only while validation finds problems
    plugin_paths: list[Path]
    datasets: dict[str, tuple[PluginSpec, DatasetSelection]]
    scorers: dict[str, PluginSpec]
    arms: dict[str, ArmSpec]
    comparisons: list[Comparison] = field(default_factory=list)

    def arm_order(self) -> list[str]:
        """Arms in an order where every arm comes after the arms it names."""
        return dependency_order({name: arm.depends_on for name, arm in self.arms.items()})[0]

    def plugins(self) -> list[tuple[str, PluginSpec]]:
        """Every configured plugin with the dotted key of its table, in recipe order."""
        specs = [("backend", self.backend), *((f"datasets.{n}", spec) for n, (spec, _) in self.datasets.items()),
                 *((f"scorers.{n}", spec) for n, spec in self.scorers.items()),
                 *(entry for arm in self.arms.values() for entry in arm.plugins())]
        return [(key, spec) for key, spec in specs if spec is not None]


def dependency_order(deps: dict[str, list[str]]) -> tuple[list[str], list[str]]:
    """The names of ``deps`` with each after its (known) dependencies, and the first cycle met ([] if none)."""
    order: list[str] = []
    cycle: list[str] = []

    def visit(name: str, stack: list[str]):
        if name in stack:
            cycle[:] = cycle or [*stack[stack.index(name):], name]
        elif name not in order:
            for dep in deps[name]:
                if dep in deps:
                    visit(dep, [*stack, name])
            order.append(name)

    for name in deps:
        visit(name, [])
    return order, cycle


def parse_assignments(pairs: list[str]) -> dict[str, str]:
    """``--set`` arguments ``dotted.key=value`` as a dict (values still text: :func:`apply_overrides` reads them)."""
    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set {pair!r}: expected dotted.key=value")
        overrides[key.strip()] = value
    return overrides


def parse_value(text: str) -> Any:
    """A ``--set`` value: TOML syntax when it parses (numbers, booleans, lists, quoted strings), else the text."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_limit(value: int | float | str) -> int | float:
    """A run's ``limit`` (``--limit``): a count N >= 1, or a fraction 0 < F <= 1 (a float, or text with a point)."""
    number = value
    if isinstance(value, str):
        with suppress(ValueError):
            number = float(value) if any(c in value for c in ".eE") else int(value)
    if isinstance(number, float) and 0 < number <= 1 or type(number) is int and number >= 1:
        return number
    raise UserError(f"limit {value}: expected a count N >= 1 (at most N examples per dataset, e.g. 40) or a "
                    f"fraction 0 < F <= 1 (that share of each dataset's selected examples, e.g. 0.1)")


def apply_overrides(raw: dict, overrides: dict[str, Any], limit: int | float | str | None = None,
                    device: str | None = None, backend: str | None = None, out: str | Path | None = None) -> dict:
    """A copy of ``raw`` with ``overrides`` (dotted key -> value; text is read by :func:`parse_value`) set, then the
    run options: ``device``, ``backend``, ``out``, and ``limit`` (:func:`parse_limit`), which lowers every
    dataset's own ``limit`` (a count) or ``limit_fraction`` (a fraction), never raising one."""
    raw = copy.deepcopy(raw)
    for key, value in overrides.items():
        _set_key(raw, key, parse_value(value) if isinstance(value, str) else value)
    options = {"model.device": device, "run.backend": backend, "run.out": None if out is None else str(out)}
    datasets, limit = raw.get("datasets", {}), None if limit is None else parse_limit(limit)
    if limit is not None and isinstance(datasets, dict):
        field = "limit" if type(limit) is int else "limit_fraction"
        for name, data in datasets.items():
            current = data.get(field) if isinstance(data, dict) else None
            options[f"datasets.{name}.{field}"] = min(limit, current) if isinstance(current, type(limit)) else limit
    for key, value in options.items():
        if value is not None:
            _set_key(raw, key, value)
    return raw


def _set_key(raw: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UserError(f"--set {key}: {part!r} is not a table")
        node = child
    node[parts[-1]] = value


def read_recipe(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: recipe file not found")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise RecipeError([f"{path}: expected a UTF-8 TOML file, got undecodable byte at position {err.start}"]) from None
    except tomllib.TOMLDecodeError as err:
        raise RecipeError([f"{path}: TOML syntax error: {err}"]) from None


class _Problems:
    """The problems found so far, each as ``FILE: dotted.key: message``, and the plugin host validation uses."""

    def __init__(self, path: Path, host: PluginHost):
        self.path = path
        self.host = host
        self.items: list[str] = []
        self.context = {"plugins": host}  # pydantic validation context: validators may look up other plugins

    def add(self, key: str, message: str):
        if (problem := f"{self.path}: {key}: {message}") not in self.items:
            self.items.append(problem)

    def name(self, key: str, name: str):
        """Record ``name`` unless it is safe in a file name (no '/', no leading '.')."""
        if not SAFE_NAME.fullmatch(name):
            safe = re.sub(r"[^A-Za-z0-9._-]+", "-", name).lstrip("._-")
            self.add(key, f"unsafe name {name!r}: use letters, digits, '.', '_' and '-', starting with a letter or "
                          f"digit (it names files of the run)" + (f"; did you mean {safe!r}?" if safe else ""))

    def model(self, key: str, model: type[BaseModel], data: Any):
        """Validate ``data`` against a pydantic model; record each error under its dotted key."""
        if not isinstance(data, dict):
            self.add(key, f"expected a table, got {type(data).__name__} {data!r}")
            return None
        try:
            return model.model_validate(data, context=self.context)
        except ValidationError as err:
            fields = list(model.model_fields)
            for e in err.errors():
                where = key + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in e["loc"])
                if e["type"] == "extra_forbidden":
                    self.add(where, f"unknown key; {did_you_mean(str(e['loc'][-1]), fields)}")
                elif e["type"] == "missing":
                    self.add(where, "required key is missing")
                else:  # an error of the whole table (loc ()) names what it is about itself
                    got = f" (got {e.get('input')!r})" if e["loc"] else ""
                    self.add(where, f"{e['msg'].removeprefix('Value error, ')}{got}")
            return None

    def unknown_plugin(self, kind: str, name: str) -> str:
        """The message for a plugin name that no plugin registered (a plugin that failed to load may be the one)."""
        failed = "".join(f"; {failure}" for failure in self.host.failures)
        return f"unknown {kind} {name!r}: {did_you_mean(name, self.host.registry(kind).names())}{failed}"


def _plugin(problems: _Problems, kind: str, key: str, data: Any, extra_keys=(),
            name_key: str | None = None) -> PluginSpec | None:
    """Validate ``{plugin = NAME, ...config}``: the name (reported at ``name_key``), then the plugin's config."""
    name_key = name_key or f"{key}.plugin"
    if isinstance(data, str):
        data = {"plugin": data}
    if not isinstance(data, dict):
        problems.add(key, f"expected a table with a 'plugin' key, got {data!r}")
        return None
    registry = problems.host.registry(kind)
    name = data.get("plugin")
    if not isinstance(name, str):
        problems.add(name_key, f"required: the name of a {kind} plugin; valid: {', '.join(registry.names())}")
        return None
    if name not in registry:
        problems.add(name_key, problems.unknown_plugin(kind, name))
        return None
    cls = registry.get(name)
    settings = {k: v for k, v in data.items() if k != "plugin" and k not in extra_keys}
    config = problems.model(key, cls.Config, settings)
    return PluginSpec(name, cls, config, problems.host) if config is not None else None


def validate(raw: dict, path: Path, host: PluginHost) -> Recipe:
    """Check the whole recipe (structure, plugin names and configs, references, component names) and
    raise one :class:`RecipeError` listing every problem."""
    problems = _Problems(path, host)
    for key in raw:
        if key not in SECTIONS:
            problems.add(key, f"unknown section; {did_you_mean(key, SECTIONS)}")
    run = _run_section(problems, raw)
    recipe = Recipe(path, raw, run, _model_section(problems, raw), _backend_section(problems, raw, run.backend),
                    _plugin_paths(problems, raw, path), _datasets_section(problems, raw, path),
                    _scorers_section(problems, raw), _arms_section(problems, raw, path))
    _check_references(problems, recipe)
    check_drawn_references(problems, recipe)
    _check_arm_cycles(problems, recipe)
    recipe.comparisons = _comparisons_section(problems, raw, recipe)
    if problems.items:
        raise RecipeError(problems.items)
    return recipe


def _run_section(problems: _Problems, raw: dict) -> RunSection:
    data = raw.get("run", {})
    run = problems.model("run", RunSection, data)
    if run is None:  # keep the backend's name, to check the [backend] table all the same
        backend = data.get("backend") if isinstance(data, dict) else None
        return RunSection.model_construct(backend=backend if isinstance(backend, str) else "transformer-lens")
    if run.name is not None:
        problems.name("run.name", run.name)
    return run


def _model_section(problems: _Problems, raw: dict) -> ModelConfig:
    model = problems.model("model", ModelConfig, raw.get("model", {})) or ModelConfig()
    if missing_local_path(model.name):
        problems.add("model.name", f"no such local folder: {model.name}")
    return model


def _backend_section(problems: _Problems, raw: dict, backend: str) -> PluginSpec | None:
    """The backend named by ``run.backend`` with the settings of the ``[backend]`` table."""
    settings = raw.get("backend", {})
    if not isinstance(settings, dict):
        problems.add("backend", f"expected a table of backend settings, got {type(settings).__name__}")
        settings = {}
    if "plugin" in settings:
        problems.add("backend.plugin", "unknown key; the backend is chosen by run.backend")
    return _plugin(problems, "backend", "backend", {**settings, "plugin": backend}, name_key="run.backend")


def _plugin_paths(problems: _Problems, raw: dict, path: Path) -> list[Path]:
    plugins = problems.model("plugins", PluginsSection, raw.get("plugins", {})) or PluginsSection()
    for i, entry in enumerate(plugins.paths):
        if not (path.parent / entry).exists():
            problems.add(f"plugins.paths[{i}]", f"file or folder not found: {path.parent / entry}")
    return [path.parent / entry for entry in plugins.paths]


def _datasets_section(problems: _Problems, raw: dict, path: Path) -> dict[str, tuple[PluginSpec, DatasetSelection]]:
    """Each dataset's plugin and selection; a relative ``path`` setting is resolved against the recipe's folder."""
    datasets = {}
    selection_keys = set(DatasetSelection.model_fields)
    for name, data in _table(problems, raw, "datasets").items():
        problems.name(f"datasets.{name}", name)
        spec = _plugin(problems, "dataset", f"datasets.{name}", data, extra_keys=selection_keys)
        chosen = {k: v for k, v in data.items() if k in selection_keys} if isinstance(data, dict) else {}
        selection = problems.model(f"datasets.{name}", DatasetSelection, chosen)
        if not (spec and selection):
            continue
        if "path" in spec.config.model_fields_set and not Path(spec.config.path).is_absolute():
            config = spec.config.model_copy(update={"path": str(path.parent / spec.config.path)})
            spec = PluginSpec(spec.plugin, spec.cls, config, problems.host)
        if getattr(spec.config, "path", None) and not Path(spec.config.path).exists():
            problems.add(f"datasets.{name}.path", f"file not found: {spec.config.path}")
        datasets[name] = (spec, selection)
    _check_exclusions(problems, raw, datasets)
    return datasets


def _check_exclusions(problems: _Problems, raw: dict, datasets: dict[str, tuple[PluginSpec, DatasetSelection]]) -> None:
    """Each ``exclude`` names another declared dataset, and no dataset excludes itself through others."""
    declared = _declared(raw, "datasets")
    for name, (_, selection) in datasets.items():
        for j, other in enumerate(selection.exclude):
            if other not in declared:
                problems.add(f"datasets.{name}.exclude[{j}]", _undeclared("datasets", other, declared))
    cycle = dependency_order({name: selection.exclude for name, (_, selection) in datasets.items()})[1]
    if cycle:
        problems.add(f"datasets.{cycle[0]}.exclude", f"datasets exclude each other in a cycle: {' -> '.join(cycle)}")


def _scorers_section(problems: _Problems, raw: dict) -> dict[str, PluginSpec]:
    if "scorers" not in raw:
        problems.add("scorers", "required: at least one [scorers.NAME] table")
    scorers = {}
    for name, data in _table(problems, raw, "scorers").items():
        problems.name(f"scorers.{name}", name)
        if spec := _plugin(problems, "scorer", f"scorers.{name}", data):
            scorers[name] = spec
    return scorers


def _arms_section(problems: _Problems, raw: dict, path: Path) -> dict[str, ArmSpec]:
    if "arms" not in raw:
        problems.add("arms", "required: at least one [arms.NAME] table")
    arms = {}
    for name, data in _table(problems, raw, "arms").items():
        problems.name(f"arms.{name}", name)
        if not isinstance(data, dict):
            problems.add(f"arms.{name}", f"expected a table, got {data!r}")
            continue
        arms[name] = _arm(problems, name, data, path)
    return expand_draws(arms)


def _arm(problems: _Problems, name: str, data: dict, path: Path) -> ArmSpec:
    """One arm: a locator or fixed components, an editor (which needs one of them), and a sweep of k."""
    for key in data:
        if key not in ARM_KEYS:
            problems.add(f"arms.{name}.{key}", f"unknown key; {did_you_mean(key, ARM_KEYS)}")
    arm = ArmSpec(name)
    if "locator" in data:
        arm.locator = _plugin(problems, "locator", f"arms.{name}.locator", data["locator"])
    if "editor" in data:
        arm.editor = _plugin(problems, "editor", f"arms.{name}.editor", data["editor"])
    if "components" in data:
        arm.components = _components(problems, f"arms.{name}.components", data["components"], path)
        if "locator" in data:
            problems.add(f"arms.{name}", "give either 'locator' or 'components', not both")
        if arm.editor and arm.components:
            kinds = {Component.parse(c).kind for c in arm.components}
            if reason := arm.editor.cls.refusal(arm.editor.config, kinds):
                problems.add(f"arms.{name}.editor", reason)
    if "editor" in data and "locator" not in data and "components" not in data:
        problems.add(f"arms.{name}.editor", "an editor needs components: add a 'locator' or 'components'")
    if "sweep" in data:
        arm.sweep = problems.model(f"arms.{name}.sweep", Sweep, data["sweep"])
        _check_sweep(problems, name, data, arm)
    if "draws" in data:
        arm.draws = check_draws(problems, name, data, arm)
    return arm


def _check_sweep(problems: _Problems, name: str, data: dict, arm: ArmSpec) -> None:
    """A sweep ranks the components of a locator that scores them, and edits each top k with the arm's editor."""
    key = f"arms.{name}.sweep"
    if "editor" not in data:
        problems.add(key, "a sweep edits each top-k set: add an 'editor'")
    if "locator" not in data:
        problems.add(key, "a sweep ranks located components by their scores: add a 'locator' that scores them")
    elif arm.locator and not arm.locator.cls.scored:
        registry = problems.host.registry("locator")
        scored = [n for n in registry.names() if registry.get(n).scored]
        problems.add(key, f"locator {arm.locator.plugin!r} gives no component scores, so its top k is undefined; "
                          f"locators that score: {', '.join(scored) or 'none loaded'}")


def _check_references(problems: _Problems, recipe: Recipe) -> None:
    """Every typed reference in a plugin's config (:mod:`loctest.references`) names a dataset or arm the recipe
    declares (a declared one with problems of its own is not reported again), or a registered plugin whose
    settings, when the reference names a field for them, fit that plugin's ``Config``."""
    for key, spec in recipe.plugins():
        for setting, marker, name in references(spec.config):
            if isinstance(marker, Declared):
                if name not in (declared := _declared(recipe.raw, marker.section)):
                    problems.add(f"{key}.{setting}", _undeclared(marker.section, name, declared))
            elif name not in problems.host.registry(marker.kind):
                problems.add(f"{key}.{setting}", problems.unknown_plugin(marker.kind, name))
            elif marker.settings:
                config = problems.host.registry(marker.kind).get(name).Config
                problems.model(f"{key}.{marker.settings}", config, getattr(spec.config, marker.settings))


def _declared(raw: dict, section: str) -> list[str]:
    """The names a recipe section declares, those with problems of their own included."""
    table = raw.get(section)
    return list(table) if isinstance(table, dict) else []


def _undeclared(section: str, name: str, declared: list[str]) -> str:
    return f"no {section.removesuffix('s')} {name!r} in [{section}]; {did_you_mean(name, declared)}"


def _check_arm_cycles(problems: _Problems, recipe: Recipe) -> None:
    cycle = dependency_order({name: arm.depends_on for name, arm in recipe.arms.items()})[1]
    if cycle:
        key = next(key for key, name in recipe.arms[cycle[0]].arm_references() if name == cycle[1])
        problems.add(key, f"arms depend on each other in a cycle: {' -> '.join(cycle)}")


def _comparisons_section(problems: _Problems, raw: dict, recipe: Recipe) -> list[Comparison]:
    data = raw.get("comparisons", [])
    if not isinstance(data, list):
        problems.add("comparisons", "expected an array of tables: [[comparisons]]")
        return []
    comparisons = []
    drawn = drawn_arms(recipe.arms)
    for i, entry in enumerate(data):
        if comparison := problems.model(f"comparisons[{i}]", Comparison, entry):
            _check_comparison(problems, f"comparisons[{i}]", comparison, raw, recipe.scorers)
            comparisons.append(against_draws(problems, f"comparisons[{i}]", comparison, drawn))
    return comparisons


def _check_comparison(problems: _Problems, key: str, comparison: Comparison, raw: dict,
                      scorers: dict[str, PluginSpec]) -> None:
    """The compared arms are declared; the metric is ``SCORER.METRIC`` of a declared scorer."""
    arms = _declared(raw, "arms")
    named = [("baseline", comparison.baseline), ("treatment", comparison.treatment),
             *((f"treatment_draws[{j}]", arm) for j, arm in enumerate(comparison.treatment_draws))]
    for setting, arm in named:
        if arm not in arms:
            problems.add(f"{key}.{setting}", _undeclared("arms", arm, arms))
    scorer, _, metric = comparison.metric.partition(".")
    if scorer in scorers:
        valid = scorers[scorer].cls.metrics
        if metric not in valid:
            problems.add(f"{key}.metric", f"scorer {scorer!r} has no metric {metric!r}; {did_you_mean(metric, valid)}")
    elif scorer not in _declared(raw, "scorers"):
        problems.add(f"{key}.metric", f"expected 'SCORER.METRIC' with a scorer from [scorers]; "
                                      f"{did_you_mean(scorer, scorers)}")


def _table(problems: _Problems, raw: dict, key: str) -> dict:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        problems.add(key, f"expected a table of named entries ([{key}.NAME]), got {type(value).__name__}")
        return {}
    return value


def _components(problems: _Problems, key: str, value: Any, path: Path) -> list[str] | None:
    """Component names given inline (a list) or as a JSON file written by an earlier run."""
    if isinstance(value, str):
        file = path.parent / value
        if not file.exists():
            problems.add(key, f"file not found: {file}")
            return None
        try:
            value = [d["name"] if isinstance(d, dict) else d for d in json.loads(file.read_text())]
        except (ValueError, KeyError, TypeError) as err:
            problems.add(key, f"{file}: expected a JSON list of components ({err})")
            return None
    if not isinstance(value, list) or not value:
        problems.add(key, "expected a non-empty list of component names like 'mlp:3:17', 'head:5:2', 'attn:5:2:7', "
                          "'resid:4'")
        return None
    names = []
    for i, item in enumerate(value):
        try:
            names.append(Component.parse(str(item)).name)
        except UserError as err:
            problems.add(f"{key}[{i}]", str(err))
    return names
