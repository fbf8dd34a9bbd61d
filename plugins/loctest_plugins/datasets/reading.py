"""Reading the data files of dataset plugins: CSV (a header line, or ``header`` names), JSONL and JSON (a list of
objects). Every problem is one :class:`UserError` line naming the file, the line or row, and the column or key."""
from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import Field

from loctest.errors import UserError, did_you_mean

ALLOW_DUPLICATES = Field(False, description="Keep rows whose question repeats an earlier row's (default: an error "
                                            "naming both rows).")  # a dataset config's `allow_duplicates`


class Row(dict):
    """One record of a data file; ``where`` says where it is (``FILE: line 3``)."""

    def __init__(self, values: dict, path: Path, place: str, word: str):
        super().__init__(values)
        self.place, self.where, self.word = place, f"{path}: {place}", word

    def error(self, key: str, message: str) -> UserError:
        return UserError(f"{self.where}: {self.word} {key!r}: {message}")

    def text(self, key: str) -> str:
        """The stripped text at ``key``; an error when it is empty."""
        value = self.get(key)
        text = "" if value is None else str(value).strip()
        if not text:
            raise self.error(key, "is empty")
        return text

    def answers(self, key: str, separator: str | None = ";", best: str | None = None) -> tuple[str, ...]:
        """The answers at ``key`` (a list, or text split on ``separator``) with ``best`` first; at least one."""
        cell = self.get(key)
        if isinstance(cell, list):
            items = cell
        else:
            items = [] if cell is None else str(cell).split(separator) if separator else [str(cell)]
        items = [str(a).strip() for a in items if str(a).strip()]
        if best:
            items = [best] + [a for a in items if a != best]
        if not items:
            raise self.error(key, "holds no answer")
        return tuple(items)


def decoded(path: Path) -> str:
    """The file's text; an error naming the line and byte offset of the first byte that is not UTF-8."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise UserError(f"{path}: line {line}: not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start}); "
                        f"save the file as UTF-8") from None


def csv_rows(path: Path, text: str, header: Sequence[str] | None) -> list[Row]:
    reader = csv.reader(io.StringIO(text, newline=""))
    rows, names, first = [], list(header) if header else None, 1
    try:
        for cells in reader:
            place, first = f"line {first}", reader.line_num + 1
            if not cells:
                continue
            if names is None:
                names = [c.strip() for c in cells]
                twice = [n for n in names if names.count(n) > 1]
                if twice:
                    raise UserError(f"{path}: {place}: column {twice[0]!r} appears twice in the header")
            elif len(cells) != len(names):
                missing = f": column {names[len(cells)]!r} is missing" if len(cells) < len(names) else ""
                raise UserError(f"{path}: {place}: {len(cells)} cells, the header has {len(names)}{missing}")
            else:
                rows.append(Row(dict(zip(names, cells)), path, place, "column"))
    except csv.Error as err:
        raise UserError(f"{path}: line {reader.line_num}: not valid CSV ({err})") from None
    if names is None:
        raise UserError(f"{path}: empty file: expected a header line and rows")
    return rows


def jsonl_rows(path: Path, text: str) -> list[Row]:
    rows = []
    for n, line in enumerate(text.split("\n"), 1):  # not splitlines(): JSON strings may hold U+2028
        if line.strip():
            rows.append(_object(path, f"line {n}", _json(path, line, f"line {n}: ")))
    return rows


def json_rows(path: Path, text: str) -> list[Row]:
    data = _json(path, text)
    if not isinstance(data, list):
        raise UserError(f"{path}: expected a JSON list of objects, got {type(data).__name__}")
    return [_object(path, f"row {n}", item) for n, item in enumerate(data, 1)]


def _json(path: Path, text: str, place: str = "") -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        where = place or f"line {err.lineno}: "
        raise UserError(f"{path}: {where}not valid JSON ({err.msg}, column {err.colno})") from None


def _object(path: Path, place: str, item: Any) -> Row:
    if not isinstance(item, dict):
        raise UserError(f"{path}: {place}: expected a JSON object, got {type(item).__name__} {str(item)[:40]!r}")
    return Row(item, path, place, "key")


def read_rows(path: str | Path, columns: Sequence[str] = (), header: Sequence[str] | None = None) -> list[Row]:
    """The records of a .csv, .jsonl or .json file: at least one, each with every key of ``columns``.
    ``header`` names the columns of a CSV file without a header line."""
    path = Path(path)
    if path.suffix not in (".csv", ".jsonl", ".json"):
        raise UserError(f"{path}: expected a .csv, .jsonl or .json file")
    if not path.is_file():
        raise UserError(f"{path}: {'a folder, not a file' if path.is_dir() else 'file not found'}")
    text = decoded(path)
    rows = (csv_rows(path, text, header) if path.suffix == ".csv" else
            jsonl_rows(path, text) if path.suffix == ".jsonl" else json_rows(path, text))
    if not rows:
        raise UserError(f"{path}: no rows" + (" after the header line" if path.suffix == ".csv" and not header else ""))
    for row in rows:
        missing = [key for key in columns if key not in row]
        if missing:
            where = f"{path}: line 1 (header)" if path.suffix == ".csv" else row.where
            unused = [str(key) for key in row if key not in columns]
            raise UserError(f"{where}: no {row.word} {missing[0]!r}; {did_you_mean(missing[0], unused)}")
    return rows


ALLOW_HINT = "; set allow_duplicates = true in the dataset's table to keep both"


def check_unique(rows: Sequence[Row], key: str, allow: bool = False, hint: str = ALLOW_HINT) -> None:
    """An error naming both rows when two rows hold the same text at ``key``, unless ``allow``."""
    seen: dict[str, Row] = {}
    for row in rows:
        text = row.text(key)
        if text in seen and not allow:
            raise row.error(key, f"duplicate of {seen[text].place} ({text[:60]!r}){hint}")
        seen.setdefault(text, row)
