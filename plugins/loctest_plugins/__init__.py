"""loctest's built-in plugins. They register through the ``loctest`` entry-point group like any other plugin.

Every plugin class defined in a module of the ``backends``, ``datasets``, ``locators``, ``editors``,
``scorers`` and ``judges`` subpackages is registered: adding a built-in means adding a module. A module adds a
report section as a drop-in file does, with a ``loctest_report_sections`` hook implementation of its own.
"""
import importlib
import pkgutil

from loctest import Backend, Dataset, Editor, Locator, Scorer, hookimpl
from loctest.base import Judge


def _modules(package: str) -> list:
    """The modules of a subpackage, imported, in name order."""
    pkg = importlib.import_module(f"{__name__}.{package}")
    return [importlib.import_module(f"{pkg.__name__}.{info.name}")
            for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name)]


def _defined_in(package: str, base: type) -> list[type]:
    return [obj for module in _modules(package) for obj in vars(module).values()
            if isinstance(obj, type) and issubclass(obj, base) and obj.__module__ == module.__name__ and obj.name]


def _registrar(package: str, base: type):
    def hook(register):
        for cls in _defined_in(package, base):
            register(cls)
    return hook


register_backends = hookimpl(_registrar("backends", Backend), specname="register_backends")
register_datasets = hookimpl(_registrar("datasets", Dataset), specname="register_datasets")
register_locators = hookimpl(_registrar("locators", Locator), specname="register_locators")
register_editors = hookimpl(_registrar("editors", Editor), specname="register_editors")
register_scorers = hookimpl(_registrar("scorers", Scorer), specname="register_scorers")
register_judges = hookimpl(_registrar("judges", Judge), specname="register_judges")


@hookimpl
def loctest_report_sections(results):
    """The sections of the built-in modules that write one: scorers' first, then locators', editors', ..."""
    sections = [module.loctest_report_sections(results)
                for package in ("scorers", "locators", "editors", "datasets", "backends", "judges")
                for module in _modules(package) if hasattr(module, "loctest_report_sections")]
    return "\n\n".join(s for s in sections if s) or None
