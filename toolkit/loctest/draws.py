"""``draws = N`` on an arm: N independent draws of its locator (one with a ``draw`` setting), run as arms
``ARM~draw0`` ... ``ARM~draw{N-1}``, and the comparisons that name ARM as their treatment rank the baseline among
them. Validation (:mod:`loctest.recipe`) checks the key, expands the arm and rewrites those comparisons here."""
from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .recipe import ArmSpec, Comparison, Recipe, _Problems as Problems

DRAW_MARK = "~draw"  # arm ARM with draws = N runs as arms ARM~draw0 ... ARM~draw{N-1}


def check_draws(problems: Problems, name: str, data: dict, arm: ArmSpec) -> int | None:
    """``draws = N``: N >= 2 independent draws of a locator with a ``draw`` setting (``random``)."""
    key, draws = f"arms.{name}.draws", data["draws"]
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 2:
        problems.add(key, f"expected a whole number of draws, at least 2 (19 let a rank p reach 0.05), got {draws!r}")
    elif "sweep" in data:
        problems.add(key, "a sweep makes its own random draws (sweep.draws): give 'draws' or 'sweep', not both")
    elif "locator" not in data:
        problems.add(key, "draws re-run the arm's locator with other draw numbers: add a 'locator' (e.g. random)")
    elif arm.locator is None:
        pass  # its config has problems of its own
    elif "draw" not in arm.locator.cls.Config.model_fields:
        registry = problems.host.registry("locator")
        drawing = [n for n in registry.names() if "draw" in registry.get(n).Config.model_fields]
        problems.add(key, f"locator {arm.locator.plugin!r} has no 'draw' setting, so it has no independent draws; "
                          f"locators that do: {', '.join(drawing) or 'none loaded'}")
    else:
        return draws
    return None


def draw_name(arm: str, draw: int) -> str:
    return f"{arm}{DRAW_MARK}{draw}"


def expand_draws(arms: dict[str, ArmSpec]) -> dict[str, ArmSpec]:
    """Each arm with ``draws = N`` becomes N arms, draw I with its locator's ``draw`` setting moved on by I."""
    expanded = {}
    for name, arm in arms.items():
        if not arm.draws:
            expanded[name] = arm
            continue
        first = arm.locator.config.draw
        for i in range(arm.draws):
            locator = replace(arm.locator, config=arm.locator.config.model_copy(update={"draw": first + i}))
            expanded[draw_name(name, i)] = replace(arm, name=draw_name(name, i), locator=locator, draws=None,
                                                                draw_point={"of": name, "draw": i})
    return expanded


def drawn_arms(arms: dict[str, ArmSpec]) -> dict[str, list[str]]:
    """Arms declared with ``draws``: their name -> the names of their draws."""
    drawn: dict[str, list[str]] = {}
    for name, arm in arms.items():
        if arm.draw_point:
            drawn.setdefault(arm.draw_point["of"], []).append(name)
    return drawn


def against_draws(problems: Problems, key: str, comparison: Comparison, drawn: dict[str, list[str]]) -> Comparison:
    """A comparison whose treatment is an arm with ``draws``: the treatment is its first draw, the others its
    ``treatment_draws`` (the rank test). Such an arm is a control: it cannot be a baseline or one draw of another."""
    if comparison.baseline in drawn:
        problems.add(f"{key}.baseline", f"arm {comparison.baseline!r} has draws, so it is a control: make it the "
                                        f"treatment (and flip 'alternative' between 'greater' and 'less')")
    if misplaced := [arm for arm in comparison.treatment_draws if arm in drawn]:
        problems.add(f"{key}.treatment_draws", f"arm {misplaced[0]!r} has draws of its own: name it as the "
                                               f"treatment and drop treatment_draws")
    if comparison.treatment not in drawn:
        return comparison
    if comparison.treatment_draws:
        problems.add(f"{key}.treatment_draws", f"arm {comparison.treatment!r} has draws, which are the "
                                               f"treatment_draws: drop this key")
    first, *others = drawn[comparison.treatment]
    return comparison.model_copy(update={"treatment": first, "treatment_draws": others})


def check_drawn_references(problems: Problems, recipe: Recipe) -> None:
    """An arm with ``draws`` stands for several component sets, so no locator or editor can name it."""
    drawn = drawn_arms(recipe.arms)
    for arm in recipe.arms.values():
        for key, name in arm.arm_references():
            if name in drawn:
                problems.add(key, f"arm {name!r} has draws = {len(drawn[name])}, so it has no single set of "
                                  f"components to name; give it no draws, or name another arm")
