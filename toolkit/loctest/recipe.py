"""Recipes: TOML data (never code) validated as a whole before any weights load.

Every problem is collected and reported together as ``FILE: dotted.key: message``.
"""
from __future__ import annotations

import copy
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from .base import PluginConfig
from .cache import source_fingerprint
from .components import Component
from .errors import RecipeError, UserError, did_you_mean
from .models import ModelConfig, missing_local_path
from .plugin_manager import PluginHost
from .stats import Alternative

SECTIONS = ("run", "model", "backend", "plugins", "datasets", "scorers", "arms", "comparisons")
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # run, arm, scorer and dataset names name files


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
    split: Literal["all", "train", "test"] = Field("all", description="Which part of a seeded split to use.")
    split_fraction: float = Field(0.5, gt=0, lt=1, description="Share of examples in the 'train' part.")
    split_seed: int = Field(0, description="Seed of the shuffle behind split and limit.")


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


@dataclass
class PluginSpec:
    plugin: str
    cls: type
    config: PluginConfig
    host: PluginHost | None = None

    def build(self, *args):
        return self.cls(*args, self.config)

    @property
    def identity(self) -> list:
        """What cached results depend on: the plugin's name, the fingerprint of its code, its config, and
        what the plugin's own ``fingerprint`` adds (data files, plugins it builds)."""
        return [self.plugin, source_fingerprint(self.cls), self.config, self.cls.fingerprint(self.config, self.host)]


@dataclass
class ArmSpec:
    name: str
    locator: PluginSpec | None = None
    editor: PluginSpec | None = None
    components: list[str] | None = None


@dataclass
class Recipe:
    path: Path
    raw: dict
    run: RunSection
    model: ModelConfig
    backend: PluginSpec
    plugin_paths: list[Path]
    datasets: dict[str, tuple[PluginSpec, DatasetSelection]]
    scorers: dict[str, PluginSpec]
    arms: dict[str, ArmSpec]
    comparisons: list[Comparison] = field(default_factory=list)

    def arm_order(self) -> list[str]:
        """Arms in an order where every arm comes after the arms its locator depends on."""
        return dependency_order(arm_dependencies(self.arms))[0]


def arm_dependencies(arms: dict[str, ArmSpec]) -> dict[str, list[str]]:
    """The arms each arm's locator needs (``Locator.depends_on``)."""
    return {name: arm.locator.build().depends_on() if arm.locator else [] for name, arm in arms.items()}


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


def parse_value(text: str) -> Any:
    """A ``--set`` value: TOML syntax when it parses (numbers, booleans, lists, quoted strings), else the text."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(raw: dict, overrides: dict[str, Any]) -> dict:
    raw = copy.deepcopy(raw)
    for key, value in overrides.items():
        parts = key.split(".")
        node = raw
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise UserError(f"--set {key}: {part!r} is not a table")
            node = child
        node[parts[-1]] = parse_value(value) if isinstance(value, str) else value
    return raw


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
    def __init__(self, path: Path, host: PluginHost):
        self.path = path
        self.items: list[str] = []
        self.context = {"plugins": host}  # pydantic validation context: validators may look up other plugins

    def add(self, key: str, message: str):
        self.items.append(f"{self.path}: {key}: {message}")

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
                else:
                    self.add(where, f"{e['msg']} (got {e.get('input')!r})")
            return None


def _plugin(problems: _Problems, host: PluginHost, kind: str, key: str, data: Any, extra_keys=(),
            name_key: str | None = None) -> PluginSpec | None:
    """Validate ``{plugin = NAME, ...config}``: the name (reported at ``name_key``), then the plugin's config."""
    name_key = name_key or f"{key}.plugin"
    if isinstance(data, str):
        data = {"plugin": data}
    if not isinstance(data, dict):
        problems.add(key, f"expected a table with a 'plugin' key, got {data!r}")
        return None
    name = data.get("plugin")
    if not isinstance(name, str):
        problems.add(name_key, f"required: the name of a {kind} plugin; valid: {', '.join(host.registry(kind).names())}")
        return None
    registry = host.registry(kind)
    if name not in registry:
        failed = "".join(f"; {failure}" for failure in host.failures)  # the plugin may be the one that broke
        problems.add(name_key, f"unknown {kind} {name!r}: {did_you_mean(name, registry.names())}{failed}")
        return None
    cls = registry.get(name)
    settings = {k: v for k, v in data.items() if k != "plugin" and k not in extra_keys}
    config = problems.model(key, cls.Config, settings)
    return PluginSpec(name, cls, config, host) if config is not None else None


def validate(raw: dict, path: Path, host: PluginHost) -> Recipe:
    """Check the whole recipe (structure, plugin names and configs, references, component names) and
    raise one :class:`RecipeError` listing every problem."""
    problems = _Problems(path, host)
    for key in raw:
        if key not in SECTIONS:
            problems.add(key, f"unknown section; {did_you_mean(key, SECTIONS)}")
    run = problems.model("run", RunSection, raw.get("run", {})) or RunSection.model_construct(
        backend=raw.get("run", {}).get("backend", "transformer-lens") if isinstance(raw.get("run"), dict) else "transformer-lens")
    if run.name is not None:
        problems.name("run.name", run.name)
    model = problems.model("model", ModelConfig, raw.get("model", {})) or ModelConfig()
    if missing_local_path(model.name):
        problems.add("model.name", f"no such local folder: {model.name}")
    backend_settings = raw.get("backend", {})
    if not isinstance(backend_settings, dict):
        problems.add("backend", f"expected a table of backend settings, got {type(backend_settings).__name__}")
        backend_settings = {}
    if "plugin" in backend_settings:
        problems.add("backend.plugin", "unknown key; the backend is chosen by run.backend")
    backend = _plugin(problems, host, "backend", "backend", {**backend_settings, "plugin": run.backend},
                      name_key="run.backend")
    plugins = problems.model("plugins", PluginsSection, raw.get("plugins", {})) or PluginsSection()
    for i, entry in enumerate(plugins.paths):
        if not (path.parent / entry).exists():
            problems.add(f"plugins.paths[{i}]", f"file or folder not found: {path.parent / entry}")

    datasets = {}
    selection_keys = set(DatasetSelection.model_fields)
    dataset_tables = _table(problems, raw, "datasets")
    for name, data in dataset_tables.items():
        problems.name(f"datasets.{name}", name)
        spec = _plugin(problems, host, "dataset", f"datasets.{name}", data, extra_keys=selection_keys)
        selection = problems.model(f"datasets.{name}", DatasetSelection,
                                   {k: v for k, v in data.items() if k in selection_keys} if isinstance(data, dict) else {})
        if spec and selection:
            if "path" in spec.config.model_fields_set and not Path(spec.config.path).is_absolute():
                spec = PluginSpec(spec.plugin, spec.cls, spec.config.model_copy(update={"path": str(path.parent / spec.config.path)}), host)
            if hasattr(spec.config, "path") and spec.config.path and not Path(spec.config.path).exists():
                problems.add(f"datasets.{name}.path", f"file not found: {spec.config.path}")
            datasets[name] = (spec, selection)

    scorers = {}
    scorer_tables = _table(problems, raw, "scorers")
    for name, data in scorer_tables.items():
        problems.name(f"scorers.{name}", name)
        spec = _plugin(problems, host, "scorer", f"scorers.{name}", data)
        if spec:
            scorers[name] = spec
    if not scorers and "scorers" not in raw:
        problems.add("scorers", "required: at least one [scorers.NAME] table")

    arms = {}
    arm_tables = _table(problems, raw, "arms")
    if not arm_tables and "arms" not in raw:
        problems.add("arms", "required: at least one [arms.NAME] table")
    for name, data in arm_tables.items():
        problems.name(f"arms.{name}", name)
        if not isinstance(data, dict):
            problems.add(f"arms.{name}", f"expected a table, got {data!r}")
            continue
        for key in data:
            if key not in ("locator", "editor", "components"):
                problems.add(f"arms.{name}.{key}", f"unknown key; {did_you_mean(key, ['locator', 'editor', 'components'])}")
        arm = ArmSpec(name)
        if "locator" in data:
            arm.locator = _plugin(problems, host, "locator", f"arms.{name}.locator", data["locator"])
        if "editor" in data:
            arm.editor = _plugin(problems, host, "editor", f"arms.{name}.editor", data["editor"])
        if "components" in data:
            arm.components = _components(problems, f"arms.{name}.components", data["components"], path)
            if "locator" in data:
                problems.add(f"arms.{name}", "give either 'locator' or 'components', not both")
        if "editor" in data and "locator" not in data and "components" not in data:
            problems.add(f"arms.{name}.editor", "an editor needs components: add a 'locator' or 'components'")
        arms[name] = arm

    # references between sections
    users = {f"scorers.{n}": s for n, s in scorers.items()}
    for name, arm in arms.items():
        users |= {f"arms.{name}.locator": arm.locator, f"arms.{name}.editor": arm.editor}
    for key, spec in users.items():
        ref = getattr(spec.config, "dataset", None) if spec else None
        if isinstance(ref, str) and ref not in dataset_tables:
            problems.add(f"{key}.dataset", f"no dataset {ref!r} in [datasets]; {did_you_mean(ref, dataset_tables)}")
    deps = arm_dependencies(arms)
    for name, needed in deps.items():
        for dep in needed:
            if dep not in arm_tables:
                problems.add(_dependency_key(arms[name], dep), f"no arm {dep!r}; {did_you_mean(dep, arm_tables)}")
    cycle = dependency_order(deps)[1]
    if cycle:
        problems.add(_dependency_key(arms[cycle[0]], cycle[1]),
                     f"arms depend on each other in a cycle: {' -> '.join(cycle)}")

    comparisons = []
    raw_comparisons = raw.get("comparisons", [])
    if not isinstance(raw_comparisons, list):
        problems.add("comparisons", "expected an array of tables: [[comparisons]]")
        raw_comparisons = []
    for i, data in enumerate(raw_comparisons):
        comp = problems.model(f"comparisons[{i}]", Comparison, data)
        if comp is None:
            continue
        named = [("baseline", comp.baseline), ("treatment", comp.treatment),
                 *((f"treatment_draws[{j}]", arm) for j, arm in enumerate(comp.treatment_draws))]
        for key, arm in named:
            if arm not in arm_tables:
                problems.add(f"comparisons[{i}].{key}", f"no arm {arm!r}; {did_you_mean(arm, arm_tables)}")
        scorer, _, metric = comp.metric.partition(".")
        if scorer not in scorers:
            if scorer not in scorer_tables:
                problems.add(f"comparisons[{i}].metric", f"expected 'SCORER.METRIC' with a scorer from [scorers]; "
                                                         f"{did_you_mean(scorer, scorers)}")
        else:
            valid = host.registry("scorer").get(scorers[scorer].plugin).metrics
            if metric not in valid:
                problems.add(f"comparisons[{i}].metric", f"scorer {scorer!r} has no metric {metric!r}; "
                                                         f"{did_you_mean(metric, valid)}")
        comparisons.append(comp)

    if problems.items:
        raise RecipeError(problems.items)
    return Recipe(path, raw, run, model, backend, [path.parent / p for p in plugins.paths], datasets, scorers,
                  arms, comparisons)


def _dependency_key(arm: ArmSpec, dep: str) -> str:
    """The dotted key of the locator setting that names arm ``dep`` (e.g. ``arms.x.locator.match``)."""
    return next((f"arms.{arm.name}.locator.{f}" for f, v in arm.locator.config if v == dep), f"arms.{arm.name}.locator")


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
        import json

        try:
            value = [d["name"] if isinstance(d, dict) else d for d in json.loads(file.read_text())]
        except (ValueError, KeyError, TypeError) as err:
            problems.add(key, f"{file}: expected a JSON list of components ({err})")
            return None
    if not isinstance(value, list) or not value:
        problems.add(key, "expected a non-empty list of component names like 'mlp:3:17', 'head:5:2', 'attn:5:2:7'")
        return None
    names = []
    for i, item in enumerate(value):
        try:
            names.append(Component.parse(str(item)).name)
        except UserError as err:
            problems.add(f"{key}[{i}]", str(err))
    return names
