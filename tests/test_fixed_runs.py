"""Refactors change no number: every shipped recipe, shrunk to tiny-llama, gives the ``results.json`` numbers
recorded in ``tests/golden/fixed_runs.json`` (components, per-repetition scores, comparisons).

Regenerate the record only for a change that is meant to change results:
``LOCTEST_UPDATE_GOLDEN=1 pytest tests/test_fixed_runs.py``.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from loctest.runner import run_recipe

from conftest import ROOT

GOLDEN = Path(__file__).parent / "golden" / "fixed_runs.json"
RELATIVE = 1e-6
# Float32 reductions change with the torch thread count: a KL of 1.4e-5 (a difference of two nearly equal sums) moves
# by ~1e-8 between 1 and 2 threads. Any real change of a number moves it by far more than this.
ABSOLUTE = 1e-7

SHRINK = {
    "quickstart": {"datasets.truthfulqa.limit": 6, "arms.random-mlp.locator.count": 20},
    "truth_neurons": {"datasets.truthfulqa-locate.limit": 40, "datasets.truthfulqa.limit": 6,
                      "datasets.mmlu.limit": 6, "arms.truth.locator.adaptive_threshold": 20.0, "arms.truth.locator.steps": 4},
    "iti": {**{f"datasets.{d}.limit": 6 for d in ("train", "test", "generate")}, "model.tiny_layers": 8, "scorers.info-truth.max_new_tokens": 6, "scorers.kl.count": 4},
    "ipo_localization": {"datasets.train.limit": 6, "datasets.test.limit": 6, "model.tiny_layers": 8, "arms.all-heads.locator.count": 32, "arms.full-model.locator.count": 32,
                         "scorers.kl.count": 4,
                         **{f"arms.{arm}.editor.max_pairs": 6 for arm in
                            ("probe", "random-0", "random-1", "random-2", "all-heads", "full-model", "single-0", "single-1")}},
}


def numbers(results) -> dict:
    """What a run computed, without paths, timings or versions."""
    data = results.data
    return {
        "components": {arm: sorted(c.names()) for arm, c in results.components.items()},
        "scores": {arm: {scorer: s["values"] if "values" in s else {m: v["values"] for m, v in s.items() if m != "note"}
                         for scorer, s in a["scores"].items()} for arm, a in data["arms"].items()},
        "comparisons": [{k: c[k] for k in ("baseline", "treatment", "metric", "baseline_mean", "treatment_mean", "p", "min_p")}
                        for c in data["comparisons"]],
    }


def close(a, b, where="") -> None:
    if isinstance(a, dict):
        assert sorted(a) == sorted(b), f"{where}: keys {sorted(a)} != {sorted(b)}"
        for k in a:
            close(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), f"{where}: length {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            close(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and isinstance(b, (int, float)):
        assert (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=RELATIVE, abs_tol=ABSOLUTE), f"{where}: {a} != {b}"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


@pytest.mark.parametrize("recipe", sorted(SHRINK))
def test_shipped_recipe_gives_the_recorded_numbers(recipe, tmp_path):
    overrides = {"model.name": "tiny-llama", "model.device": "cpu", "run.cache": str(tmp_path / "cache"),
                 **SHRINK[recipe]}
    results = run_recipe(ROOT / "recipes" / f"{recipe}.toml", overrides, out=tmp_path / "runs", progress=False)
    got = json.loads(json.dumps(numbers(results)))
    record = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
    if os.environ.get("LOCTEST_UPDATE_GOLDEN"):
        record[recipe] = got
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    assert recipe in record, f"no record for {recipe}: run with LOCTEST_UPDATE_GOLDEN=1"
    close(got, record[recipe], recipe)
