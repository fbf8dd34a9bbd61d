"""Sweeps: an arm's effect over a range of component counts k, against matched random draws.

For each k of ``arms.ARM.sweep.sizes`` the arm's top k (``ComponentSet.top``, by its locator's scores) runs as arm
``ARM@kK``, and each random draw I as ``ARM@kK~randomI``, all with the arm's editor and every scorer. Draw I is
one random order of each layer's components of each kind, cut at the top k's count of that kind in that layer:
matched like the ``random`` locator's ``match``, and nested over k like the top-k sets themselves, so that under
the null (the locator's ranking is a random order within each layer and kind) the located curve and the draws'
curves are exchangeable.

Summary per metric (means over repetitions): the area between a curve and the draws' mean curve, by the
trapezoid rule over log2 k; the located area is ranked among the draws' areas (:func:`loctest.stats.rank_test`).
The draws' mean is common to every area, so this ranks the located curve's integral among the draws' integrals:
an exact p under the null, never below :func:`loctest.stats.rank_min_p` for the number of draws.
"""
from __future__ import annotations

import numpy as np

from .base import Scores
from .components import Component, ComponentSet, ModelShape
from .errors import UserError
from .recipe import ArmSpec, Sweep
from .stats import rank_test, summary

X_AXIS = "log2 k"


def point_name(arm: str, k: int, draw: int | None = None) -> str:
    """The generated arm of size ``k`` of ``arm``'s sweep: its top k, or random draw ``draw``."""
    return f"{arm}@k{k}" + (f"~random{draw}" if draw is not None else "")


def nested_draws(tops: list[ComponentSet], shape: ModelShape, rng: np.random.Generator) -> list[ComponentSet]:
    """One random set per set of ``tops`` (nested, growing) with its count of each kind in each layer, nested
    like them: one random order of each layer's components of each kind, cut at each set's counts."""
    orders = {site: rng.permutation(shape.per_layer(site[0])) for site in tops[-1].counts_by_layer()}
    return [ComponentSet(Component.numbered(kind, layer, int(i), shape) for (kind, layer), n in top.counts_by_layer().items()
                         for i in np.sort(orders[kind, layer][:n])) for top in tops]


def sweep_arms(arm: ArmSpec, located: ComponentSet, shape: ModelShape, rng_of_draw) -> dict[str, ArmSpec]:
    """The arms ``arm``'s sweep generates, by name: each size's top k, then each draw's matched sets (drawn from
    ``rng_of_draw(draw)``), all with fixed components and ``arm``'s editor."""
    sizes = arm.sweep.sizes
    if located.scores is None:
        raise UserError("the locator found components without scores, so their top k is undefined")
    if sizes[-1] > len(located):
        raise UserError(f"size {sizes[-1]} exceeds the {len(located)} components the locator found (docs/recipes.md, "
                        f"'Sweeps', says how each locator ranks more)")
    tops = [located.top(k) for k in sizes]
    points = [(k, None, top) for k, top in zip(sizes, tops)]
    for draw in range(arm.sweep.draws):
        points += [(k, draw, drawn) for k, drawn in zip(sizes, nested_draws(tops, shape, rng_of_draw(draw)))]
    return {point_name(arm.name, k, draw): ArmSpec(point_name(arm.name, k, draw), editor=arm.editor,
                                                   components=components.names(),
                                                   sweep_point={"of": arm.name, "k": k, "draw": draw})
            for k, draw, components in points}


def trapezoid_area(sizes: list[int], gap: np.ndarray) -> float:
    """The trapezoid rule of ``gap`` (one value per size) over log2 of the sizes."""
    x = np.log2(sizes)
    return float(np.sum((gap[1:] + gap[:-1]) / 2 * np.diff(x)))


def sweep_summary(arm: str, sweep: Sweep, scores: dict[str, dict[str, Scores]]) -> dict:
    """``results.json``'s ``sweeps.ARM``: per ``SCORER.METRIC``, per k the located mean and the draws' means, the
    area between the located curve and the draws' mean curve, the draws' own areas, and the located area's rank p."""
    sizes, draws = sweep.sizes, range(sweep.draws)

    def means(scorer: str, metric: str, draw: int | None) -> list[float]:
        return [summary(scores[point_name(arm, k, draw)][scorer].values[metric])["mean"] for k in sizes]

    metrics = {}
    for scorer, first in scores[point_name(arm, sizes[0])].items():
        for metric in first.values:
            located = np.array(means(scorer, metric, None))
            random = np.array([means(scorer, metric, draw) for draw in draws])  # [draws, sizes]
            center = random.mean(axis=0)
            area = trapezoid_area(sizes, located - center)
            draw_areas = [trapezoid_area(sizes, curve - center) for curve in random]
            metrics[f"{scorer}.{metric}"] = {
                "located": located.tolist(), "random": random.T.tolist(), "random_mean": center.tolist(),
                "area": area, "draw_areas": draw_areas, **rank_test(area, draw_areas, sweep.alternative)}
    return {"sizes": sizes, "draws": sweep.draws, "alternative": sweep.alternative, "x": X_AXIS,
            "arms": {"located": [point_name(arm, k) for k in sizes],
                     "random": [[point_name(arm, k, draw) for draw in draws] for k in sizes]},
            "metrics": metrics}
