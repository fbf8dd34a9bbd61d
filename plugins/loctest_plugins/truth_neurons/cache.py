"""Per-example attributions on disk (safetensors), so a killed run resumes without recomputing them.

A file's key hashes ``Model.identity()`` (backend, package versions, model and a fingerprint of its weights), the
prompt, the objective's tokens and every IG setting.
"""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from loctest.cache import cache_key, drop_corrupt
from loctest.files import atomic_write

from .ig import Attribution

FORMAT = "ig-attributions-v1"


def _name(prefix: str, site) -> str:
    return f"{prefix}.{site[0]}.{site[1]}"


class AttributionCache:
    """``get``/``put`` one :class:`Attribution` per key as ``folder/<key>.safetensors`` (written atomically)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    @staticmethod
    def key(*parts) -> str:
        return cache_key(FORMAT, *parts)

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.safetensors"

    def get(self, key: str) -> Attribution | None:
        """The cached attribution, or None; a corrupt file is reported, removed and counts as none."""
        path = self.path(key)
        if not path.exists():
            return None
        try:
            tensors = load_file(path)
            sites = [(kind, int(layer)) for name in tensors if name.startswith("attr.")
                     for _, kind, layer in [name.split(".")]]
            return Attribution({s: tensors[_name("attr", s)] for s in sites}, tensors["value"],
                               {s: tensors[_name("zeroed", s)] for s in sites})
        except (SafetensorError, OSError, KeyError, ValueError) as err:
            drop_corrupt(path, err)
            return None

    def put(self, key: str, attribution: Attribution, metadata: dict[str, str]) -> Path:
        tensors = {"value": attribution.value.contiguous()}
        for s, a in attribution.attributions.items():
            tensors[_name("attr", s)] = a.contiguous()
            tensors[_name("zeroed", s)] = attribution.zeroed[s].reshape(-1).contiguous()
        return atomic_write(self.path(key), save({k: v.to(torch.float32) for k, v in tensors.items()}, metadata=metadata))
