"""What a plugin sees while a run executes."""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .backend import Backend
from .base import Example
from .components import ComponentSet, ModelShape
from .progress import Progress

if TYPE_CHECKING:
    from .plugin_manager import PluginHost


@dataclass
class RunContext:
    """Handed to locators, editors and scorers.

    - ``backend``: activation access (``next_token_logprobs``, ``capture_last``, ``gradients``, ...);
    - ``dataset(name)``: the examples of a dataset declared in the recipe's ``[datasets]``;
    - ``components``: components located so far, by arm name;
    - ``rng(*keys)``: a NumPy generator seeded from the run seed and ``keys`` (same keys, same stream);
    - ``cache_dir``: a folder for resumable on-disk caches; ``run_dir``: this run's output folder;
    - ``progress``: rich progress bars;
    - ``plugins``: the run's plugin host, for plugins that build other plugins by name (``plugins.registry("judge")``).
    """

    backend: Backend
    seed: int
    run_dir: Path
    cache_dir: Path
    progress: Progress
    datasets: dict[str, Callable[[], list[Example]]] = field(default_factory=dict)
    components: dict[str, ComponentSet] = field(default_factory=dict)
    arm: str = ""
    plugins: PluginHost | None = None
    _loaded: dict[str, list[Example]] = field(default_factory=dict)

    @property
    def shape(self) -> ModelShape:
        return self.backend.shape

    def dataset(self, name: str) -> list[Example]:
        if name not in self._loaded:
            self._loaded[name] = self.datasets[name]()
        return self._loaded[name]

    def rng(self, *keys) -> np.random.Generator:
        digest = hashlib.sha256(repr((self.seed, *keys)).encode()).digest()
        return np.random.default_rng(int.from_bytes(digest[:8], "little"))
