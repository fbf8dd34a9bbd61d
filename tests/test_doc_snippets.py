"""Every runnable snippet in the docs runs. A fenced block whose info string is ``python snippet`` is executed; a
``toml snippet`` is a whole recipe, validated and run on tiny-llama with at most 4 examples per dataset; a
``bash snippet`` runs each ``loctest ...`` line through the CLI (exit 0 expected). All three run in a fresh folder
that holds links to the repository's ``recipes/`` and ``docs/``, so runs and caches stay in it."""
from __future__ import annotations

import os
import re
import shlex
import textwrap
from pathlib import Path

import pytest

from loctest.cli import main

from conftest import ROOT

DOC_FILES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
FENCE = re.compile(r"^```(python|toml|bash) snippet\s*\n(.*?)^```", re.M | re.S)
TINY = {"model.name": '"tiny-llama"', "model.device": '"cpu"'}


def snippets() -> list:
    found = []
    for doc in DOC_FILES:
        text = doc.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            found.append(pytest.param(match.group(1), textwrap.dedent(match.group(2)),
                                      id=f"{doc.relative_to(ROOT)}:{line}"))
    return found


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    for folder in ("recipes", "docs"):
        (tmp_path / folder).symlink_to(ROOT / folder)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    return tmp_path


def run_recipe_snippet(source: str, folder: Path) -> None:
    recipe = folder / "snippet.toml"
    recipe.write_text(source, encoding="utf-8")
    overrides = [f"{key}={value}" for key, value in TINY.items()] + [f'run.cache="{folder / "cache"}"']
    sets = [arg for item in overrides for arg in ("--set", item)]
    assert main(["validate", str(recipe)]) == 0
    assert main(["run", str(recipe), "--out", str(folder / "runs"), "--limit", "4", "--no-progress", *sets]) == 0


def run_shell_snippet(source: str) -> None:
    for line in source.splitlines():
        line = line.split(" #")[0].strip()
        if line.startswith("loctest "):
            assert main(shlex.split(line)[1:]) == 0, line


def test_docs_have_snippets():
    kinds = {param.values[0] for param in snippets()}
    assert kinds >= {"python", "toml"}, kinds


@pytest.mark.parametrize(("language", "source"), snippets())
def test_snippet_runs(language, source, workdir):
    if language == "python":
        # dont_inherit: the snippet runs as written, without this file's `from __future__ import annotations`
        exec(compile(source, "<snippet>", "exec", dont_inherit=True), {"__name__": "__snippet__"})
    elif language == "toml":
        run_recipe_snippet(source, workdir)
    else:
        run_shell_snippet(source)
