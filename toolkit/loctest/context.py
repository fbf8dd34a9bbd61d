"""What a plugin sees while a run executes."""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .base import Example
from .components import ComponentSet, ModelShape
from .errors import UserError, did_you_mean
from .files import atomic_write
from .model import Model
from .progress import Progress

if TYPE_CHECKING:
    from .plugin_manager import PluginHost


@dataclass
class RunContext:
    """Handed to locators, editors and scorers.

    - ``model``: the model (:class:`loctest.model.Model`: ``next_token_logprobs``, ``capture_last``, ``gradients``,
      ``generate``, ``shape``, ``dtype``, ...), the only way a plugin reaches it;
    - ``dataset(name)``: the examples of a dataset declared in the recipe's ``[datasets]``;
    - ``components``: components located so far, by arm name;
    - ``rng(*keys)``: a NumPy generator seeded from the run seed and ``keys`` (same keys, same stream);
    - ``cache_dir``: a folder for resumable on-disk caches; ``run_dir``: this run's output folder, written
      through ``write_output(name, data)``;
    - ``progress``: rich progress bars;
    - ``plugins``: the run's plugin host, for plugins that build other plugins by name (``plugins.registry("judge")``).
    """

    model: Model
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
        return self.model.shape

    def dataset(self, name: str) -> list[Example]:
        if name not in self.datasets:  # recipe validation checks a config's DatasetRef fields; this is for direct use
            raise UserError(f"no dataset {name!r} in [datasets]; {did_you_mean(name, self.datasets)}")
        if name not in self._loaded:
            self._loaded[name] = self.datasets[name]()
        return self._loaded[name]

    def loaded_datasets(self) -> dict[str, list[Example]]:
        """The datasets read so far, by name (``results.json`` lists their examples)."""
        return dict(self._loaded)

    def rng(self, *keys) -> np.random.Generator:
        digest = hashlib.sha256(repr((self.seed, *keys)).encode()).digest()
        return np.random.default_rng(int.from_bytes(digest[:8], "little"))

    def write_output(self, name: str | Path, data: dict | list | str | bytes) -> Path:
        """Write the file ``name`` (a path relative to the run directory, staying inside it) atomically: JSON for a
        dict or list, text for a str, bytes as given; returns its path."""
        if self.run_dir.resolve() not in (self.run_dir / name).resolve().parents:
            raise ValueError(f"write_output: {str(name)!r} is not a file name inside the run directory")
        return atomic_write(self.run_dir / name, data)
