"""Trained edits on disk: ``NAME.safetensors`` (``SITE.a``, ``SITE.b``, ``SITE.mask`` per site) and ``NAME.json``
(the spec: format, model, components, config, training data, loss history)."""
from __future__ import annotations

import json
from pathlib import Path

from loctest.errors import UserError
from loctest.files import atomic_write

from .edit import RankOneEdit

FORMAT = "loctest-rank-one-edit/1"


def edit_paths(path: str | Path) -> tuple[Path, Path]:
    """(tensors, spec) paths of an edit named by either file or by their common stem."""
    path = Path(path)
    stem = path.with_suffix("") if path.suffix in (".json", ".safetensors") else path
    return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")


def save_edit(edit: RankOneEdit, spec: dict, path: str | Path, write=atomic_write) -> None:
    """Write both files through ``write(path, data)`` (``context.write_output`` for a path in the run directory),
    the spec last, so that a spec on disk means a whole edit."""
    from safetensors.torch import save

    tensors_path, spec_path = edit_paths(path)
    write(tensors_path, save(edit.tensors(), metadata={"format": FORMAT}))
    write(spec_path, {"format": FORMAT, **spec})


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
