"""Files written whole or not at all."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def encode(data: Any) -> bytes:
    """The bytes of a file holding ``data``: JSON (indented) for a dict or list, UTF-8 for a str, bytes as given."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, str):
        return data.encode()
    if isinstance(data, (dict, list)):
        return json.dumps(data, indent=1).encode()
    raise TypeError(f"cannot write a {type(data).__name__} to a file (give a dict, list, str or bytes)")


def atomic_write(path: str | Path, data: Any) -> Path:
    """Write ``data`` (see :func:`encode`) to ``path`` through a temporary name in the same folder, creating the
    folder, so that a killed run never leaves half a file; returns ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(encode(data))
    tmp.replace(path)
    return path
