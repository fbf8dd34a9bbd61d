"""A content-addressed JSON cache on disk: finished work survives a killed run."""
from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
import warnings
from contextlib import suppress
from pathlib import Path
from typing import Any

from .errors import LoctestWarning
from .files import atomic_write


NUMERIC_PACKAGES = ("torch", "transformers", "transformer-lens", "nnsight", "peft", "accelerate", "numpy", "scipy",
                    "safetensors", "tokenizers", "gguf")


def package_versions(packages=NUMERIC_PACKAGES) -> dict[str, str | None]:
    """Installed versions (None when absent): part of every cache identity and of ``results.json``."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in packages:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = None
    return found


def cache_key(*parts: Any) -> str:
    """A stable hash of JSON-able parts (pydantic configs are dumped first)."""
    def plain(x):
        return x.model_dump(mode="json") if hasattr(x, "model_dump") else x
    text = json.dumps([plain(p) for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def source_fingerprint(cls: type) -> str | None:
    """A hash of the file defining ``cls``: cached results go stale when a plugin's code changes."""
    try:
        return hashlib.sha256(Path(inspect.getsourcefile(cls)).read_bytes()).hexdigest()[:16]
    except (TypeError, OSError):
        return None


def file_digest(*paths: str | Path) -> str:
    """A hash of the files' contents (a missing file counts as empty): cached results go stale when an input
    file changes."""
    digest = hashlib.sha256()
    for path in paths:
        path = Path(path).expanduser()
        digest.update(path.read_bytes() if path.is_file() else b"")
    return digest.hexdigest()[:16]


class JsonCache:
    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def path(self, kind: str, key: str) -> Path:
        return self.folder / kind / f"{key}.json"

    def get(self, kind: str, key: str) -> Any | None:
        """The cached value, or None when there is none; a corrupt file is reported, removed and counts as none."""
        path = self.path(kind, key)
        try:
            return json.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        except ValueError as err:  # truncated or garbled JSON, bytes that are not UTF-8
            drop_corrupt(path, err)
            return None

    def put(self, kind: str, key: str, value: Any) -> None:
        atomic_write(self.path(kind, key), json.dumps(value))

    def put_files(self, kind: str, key: str, root: Path, paths: list[Path]) -> None:
        """Keep copies of files under ``root`` (e.g. what a locator wrote into the run directory)."""
        final = self.folder / kind / key
        tmp = final.with_name(f"{key}.tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        for path in paths:
            target = tmp / path.relative_to(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
        tmp.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(final, ignore_errors=True)
        tmp.replace(final)

    def restore_files(self, kind: str, key: str, root: Path) -> None:
        """Copy files kept by :meth:`put_files` back under ``root``."""
        folder = self.folder / kind / key
        if folder.is_dir():
            shutil.copytree(folder, root, dirs_exist_ok=True)


def drop_corrupt(path: Path, err: Exception) -> None:
    """Warn that the cache file ``path`` is corrupt and remove it, so that its result is computed again."""
    warnings.warn(f"corrupt cache file {path} ({type(err).__name__}: {str(err)[:80]}): removed, recomputing",
                  LoctestWarning, stacklevel=3)
    with suppress(OSError):
        path.unlink()


def file_stamps(root: Path) -> dict[Path, tuple[int, int]]:
    """Every file under ``root`` with its modification time and size, to find what a step wrote."""
    return {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in Path(root).rglob("*") if p.is_file()}
