"""Trained edits on disk: ``NAME.safetensors`` (``SITE.a``, ``SITE.b``, ``SITE.mask`` per site) and ``NAME.json``
(the spec: format, model, components, config, training data, loss history)."""
from __future__ import annotations

import json
import os
from pathlib import Path

from loctest.errors import UserError

from .edit import RankOneEdit

FORMAT = "loctest-rank-one-edit/1"


def edit_paths(path: str | Path) -> tuple[Path, Path]:
    """(tensors, spec) paths of an edit named by either file or by their common stem."""
    path = Path(path)
    stem = path.with_suffix("") if path.suffix in (".json", ".safetensors") else path
    return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")


def save_edit(edit: RankOneEdit, spec: dict, path: str | Path) -> None:
    """Write both files (each through a temporary name, so a killed run never leaves half an edit)."""
    from safetensors.torch import save_file

    tensors_path, spec_path = edit_paths(path)
    tensors_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = f".tmp{os.getpid()}"
    save_file(edit.tensors(), str(tensors_path) + tmp, metadata={"format": FORMAT})
    Path(str(spec_path) + tmp).write_text(json.dumps({"format": FORMAT, **spec}, indent=1))
    Path(str(tensors_path) + tmp).replace(tensors_path)
    Path(str(spec_path) + tmp).replace(spec_path)


def load_edit(path: str | Path, device="cpu") -> tuple[RankOneEdit, dict]:
    """The edit and its spec; UserError when a file is missing or is not a loctest edit."""
    from safetensors.torch import load_file

    tensors_path, spec_path = edit_paths(path)
    for p in (tensors_path, spec_path):
        if not p.exists():
            raise UserError(f"load: no saved edit at {p} (expected NAME.safetensors and NAME.json from an earlier run)")
    spec = json.loads(spec_path.read_text())
    if spec.get("format") != FORMAT:
        raise UserError(f"load: {spec_path} is not a loctest edit (format {spec.get('format')!r}, expected {FORMAT!r})")
    return RankOneEdit.from_tensors(load_file(str(tensors_path)), device), spec
