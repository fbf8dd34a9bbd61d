"""Plugin discovery and the registries: entry points, drop-in files, recipe paths, failures, blocking."""
from __future__ import annotations

import ast
import importlib.metadata
import json
import sys
import tomllib
from pathlib import Path

import pytest

import loctest_plugins
from loctest import ComponentSet, Locator
from loctest.cli import main
from loctest.errors import PluginLoadError, UserError
from loctest.plugin_manager import BUILTIN_PLUGIN, DEFAULT_PLUGINS, DISABLE_AUTOLOAD_ENV, create_host, repo_dropin_dir
from loctest.registry import Registry
from loctest.runner import prepare

from conftest import BUILTINS, ROOT, write_plugin


def test_builtins_register_through_the_entry_point_group(monkeypatch):
    points = {ep.name: ep for ep in importlib.metadata.entry_points(group="loctest")}
    assert points[BUILTIN_PLUGIN].value == "loctest_plugins"
    loaded = []
    real_load = importlib.metadata.EntryPoint.load
    monkeypatch.setattr(importlib.metadata.EntryPoint, "load", lambda ep: loaded.append(ep.name) or real_load(ep))
    host = create_host(autoload=False)
    assert loaded == [BUILTIN_PLUGIN]
    assert host.pm.get_plugin(BUILTIN_PLUGIN) is loctest_plugins
    for kind, names in BUILTINS.items():
        for name in names:
            assert host.registry(kind).owner(name) == BUILTIN_PLUGIN
            assert issubclass(host.registry(kind).get(name), host.registry(kind).base)
    assert host.failures == []


def test_default_plugins_are_the_entry_points_pyproject_declares():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["loctest"]
    assert {ep.name: ep.value for ep in DEFAULT_PLUGINS} == declared


def test_builtins_load_from_a_source_tree_that_is_not_installed(monkeypatch):
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda **kwargs: [])
    host = create_host()
    assert host.pm.get_plugin(BUILTIN_PLUGIN) is loctest_plugins and "random" in host.registry("locator")


def imported_packages(file: Path) -> set[str]:
    """The top-level packages a Python file imports (relative imports left out)."""
    names = set()
    for node in ast.walk(ast.parse(file.read_text(), str(file))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module)
    return {name.split(".")[0] for name in names}


def test_the_host_never_imports_the_builtins():
    """The built-ins come through their entry point: nothing under toolkit/ imports loctest_plugins."""
    importers = [file for file in (ROOT / "toolkit").rglob("*.py") if "loctest_plugins" in imported_packages(file)]
    assert importers == []


def test_registry_refuses_duplicates_naming_both_owners():
    class A(Locator):
        name = "same"

    class B(Locator):
        name = "same"

    registry = Registry("locator", Locator)
    registry.register(A, "first-plugin")
    with pytest.raises(UserError, match="duplicate locator name 'same': registered by 'first-plugin' and again by 'second-plugin'"):
        registry.register(B, "second-plugin")
    assert registry.get("same") is A and registry.owner("same") == "first-plugin"


def test_registry_rejects_wrong_kinds_and_nameless_classes():
    class Nameless(Locator):
        pass

    registry = Registry("locator", Locator)
    with pytest.raises(UserError, match="plugin 'p' registered .* as a locator, but it is not a subclass of Locator"):
        registry.register(ComponentSet, "p")
    with pytest.raises(UserError, match="plugin 'p': locator class Nameless has no 'name'"):
        registry.register(Nameless, "p")


def test_unknown_name_suggests_and_lists_valid_names():
    registry = create_host(autoload=False).registry("locator")
    with pytest.raises(UserError) as err:
        registry.get("randm")
    message = str(err.value)
    assert message.startswith("unknown locator 'randm': did you mean 'random'? valid: ")
    assert set(registry.names()) <= set(message.split("valid: ")[1].split(", "))
    with pytest.raises(UserError, match=r"unknown locator 'zzzz': valid: "):
        registry.get("zzzz")


def test_dropin_duplicate_of_a_builtin_names_both_plugins(tmp_path):
    write_plugin(tmp_path, "shadow", name="random")
    with pytest.raises(UserError, match="duplicate locator name 'random': registered by 'builtins' and again by 'shadow'"):
        create_host(extra_paths=[tmp_path], autoload=False)


def test_dropin_folder_and_file_register_locators(tmp_path):
    write_plugin(tmp_path / "dir", "first_neurons")
    single = write_plugin(tmp_path, "single_file")
    host = create_host(extra_paths=[tmp_path / "dir", single], autoload=False)
    registry = host.registry("locator")
    assert registry.owner("first-neurons") == "first_neurons"
    assert registry.owner("single-file") == "single_file"
    assert registry.get("first-neurons").__module__ == "loctest_dropin_first_neurons"
    assert {"first_neurons", "single_file", BUILTIN_PLUGIN} <= set(host.plugin_names())


def test_missing_plugins_dir_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="plugin path .*nowhere.* does not exist"):
        create_host(extra_paths=[tmp_path / "nowhere"], autoload=False)


def test_plugins_dir_flag_lists_the_dropin(tmp_path, capsys):
    write_plugin(tmp_path, "first_neurons")
    assert main(["plugins", "--json", "--plugins-dir", str(tmp_path)]) == 0
    listing = json.loads(capsys.readouterr().out)
    entry = next(e for e in listing["plugins"]["locator"] if e["name"] == "first-neurons")
    assert entry["plugin"] == "first_neurons" and entry["description"] == "The first neurons of a layer."
    assert [(f["name"], f["default"], f["description"]) for f in entry["config"]] == [
        ("count", 2, "How many neurons."), ("layer", 0, "Which layer.")]


RECIPE = """
[plugins]
paths = ["my_plugins"]

[model]
name = "tiny-llama"

[datasets.tqa]
plugin = "truthfulqa-binary"

[scorers.tqa]
plugin = "binary-choice"
dataset = "tqa"

[arms.first]
locator = { plugin = "first-neurons", count = 3 }
editor = "zero-ablation"
"""


def test_recipe_plugin_paths_load_a_plugin(tmp_path):
    write_plugin(tmp_path / "my_plugins", "first_neurons")
    (tmp_path / "recipe.toml").write_text(RECIPE)
    recipe, host = prepare(tmp_path / "recipe.toml")
    assert recipe.plugin_paths == [tmp_path / "my_plugins"]
    assert recipe.arms["first"].locator.cls.__module__ == "loctest_dropin_first_neurons"
    assert recipe.arms["first"].locator.config.count == 3
    assert host.registry("locator").owner("first-neurons") == "first_neurons"


def test_a_plugin_that_fails_to_import_is_reported_and_the_others_load(tmp_path):
    write_plugin(tmp_path, "good")
    write_plugin(tmp_path, "broken", "import json\nraise ValueError('boom at import time')\n")
    write_plugin(tmp_path, "syntax", "def oops(:\n")
    host = create_host(extra_paths=[tmp_path], autoload=False)
    assert "good" in host.registry("locator")
    broken, syntax = host.failures
    assert broken == f"plugin 'broken' ({tmp_path / 'broken.py'}) failed to load: ValueError: boom at import time"
    assert syntax.startswith(f"plugin 'syntax' ({tmp_path / 'syntax.py'}) failed to load: SyntaxError: ")
    assert "loctest_dropin_broken" not in sys.modules
    with pytest.raises(PluginLoadError, match="plugin 'broken' .* ValueError: boom at import time"):
        create_host(extra_paths=[tmp_path], autoload=False, strict=True)


def test_import_failures_are_warnings_of_the_cli(tmp_path, capsys):
    write_plugin(tmp_path, "broken", "raise ValueError('boom')\n")
    assert main(["plugins", "--plugins-dir", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert err.strip() == f"warning: plugin 'broken' ({tmp_path / 'broken.py'}) failed to load: ValueError: boom"


MISSPELLED_HOOK = """
from loctest import hookimpl


@hookimpl
def register_locator(register):
    pass
"""


def test_misspelled_hook_name_is_an_error(tmp_path, capsys):
    write_plugin(tmp_path, "typo", MISSPELLED_HOOK)
    with pytest.raises(PluginLoadError, match=r"plugin 'typo': unknown hook 'register_locator'; did you mean 'register_locators'"):
        create_host(extra_paths=[tmp_path], autoload=False)
    assert main(["plugins", "--plugins-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: plugin 'typo': unknown hook 'register_locator'; did you mean 'register_locators'")
    assert err.count("\n") == 1 and "Traceback" not in err


@pytest.fixture
def autoload_sources(tmp_path, monkeypatch):
    """A fake repo drop-in folder and a third-party entry point, each bringing one locator."""
    write_plugin(tmp_path / "repo_plugins", "repo_dropin")
    write_plugin(tmp_path / "site", "third_party_mod", name="third-party")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setattr("loctest.plugin_manager.repo_dropin_dir", lambda: tmp_path / "repo_plugins")
    real = importlib.metadata.entry_points

    def entry_points(**kwargs):
        found = list(real(**kwargs))
        if kwargs.get("group") == "loctest":
            found.append(importlib.metadata.EntryPoint("third_party", "third_party_mod", "loctest"))
        return found

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    yield
    sys.modules.pop("third_party_mod", None)


def test_autoload_finds_entry_points_and_the_repo_dropin_folder(autoload_sources, monkeypatch):
    monkeypatch.delenv(DISABLE_AUTOLOAD_ENV, raising=False)
    host = create_host()
    assert host.registry("locator").owner("repo-dropin") == "repo_dropin"
    assert host.registry("locator").owner("third-party") == "third_party"


def test_disable_autoload_keeps_only_builtins_and_explicit_paths(autoload_sources, monkeypatch, tmp_path):
    monkeypatch.setenv(DISABLE_AUTOLOAD_ENV, "1")
    write_plugin(tmp_path / "explicit", "explicit")
    host = create_host(extra_paths=[tmp_path / "explicit"])
    assert set(host.plugin_names()) == {BUILTIN_PLUGIN, "explicit"}
    assert "repo-dropin" not in host.registry("locator") and "third-party" not in host.registry("locator")
    assert "random" in host.registry("locator")


def test_no_plugin_blocks_by_name(autoload_sources, monkeypatch, tmp_path, capsys):
    monkeypatch.delenv(DISABLE_AUTOLOAD_ENV, raising=False)
    write_plugin(tmp_path / "extra", "first_neurons")
    host = create_host(extra_paths=[tmp_path / "extra"], blocked=["third_party", "first_neurons", "repo_dropin"])
    assert set(host.plugin_names()) == {BUILTIN_PLUGIN}
    assert main(["plugins", "--json", "--plugins-dir", str(tmp_path / "extra"), "--no-plugin", "first_neurons",
                 "--no-plugin", BUILTIN_PLUGIN]) == 0
    listing = json.loads(capsys.readouterr().out)["plugins"]
    assert [e["name"] for e in listing["locator"]] == ["repo-dropin", "third-party"]
    assert listing["scorer"] == []


def test_repo_dropin_folder_is_the_plugins_folder_of_this_checkout():
    assert repo_dropin_dir() == ROOT / "plugins"
