"""The seams hold: plugins reach models only through the host's model interface, the component vocabulary names
no backend, and host functions stay short enough to read."""
from __future__ import annotations

import ast
import re

import pytest

from conftest import ROOT

HOST = ROOT / "toolkit" / "loctest"
PLUGINS = ROOT / "plugins" / "loctest_plugins"
LONGEST_HOST_FUNCTION = 60
# what only a backend may touch: the loaded model object, module paths, fresh model objects, backend internals
BACKEND_INTERNALS = re.compile(r"\.loaded\b|\binstantiate\(|layer_module_path|loaded_module\(|architecture_of|\.bridge\b")


def functions(path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node.name, node.end_lineno - node.lineno + 1


@pytest.mark.parametrize("path", sorted(HOST.rglob("*.py")), ids=lambda p: p.name)
def test_no_host_function_is_longer_than_a_screen(path):
    long = [(name, n) for name, n in functions(path) if n > LONGEST_HOST_FUNCTION]
    assert not long, f"{path.name}: {long} (over {LONGEST_HOST_FUNCTION} lines)"


def test_plugins_outside_backends_never_touch_model_internals():
    offenders = [f"{path.relative_to(ROOT)}:{i}: {line.strip()}"
                 for path in sorted(PLUGINS.rglob("*.py")) if "backends" not in path.parts
                 for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                 if BACKEND_INTERNALS.search(line)]
    assert not offenders, "\n".join(offenders)


def test_the_component_vocabulary_names_no_backend():
    text = (HOST / "components.py").read_text(encoding="utf-8").lower()
    for backend_word in ("transformer_lens", "transformerlens", "transformer-lens", "nnsight", "hook_", "envoy"):
        assert backend_word not in text, backend_word
