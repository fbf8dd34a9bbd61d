"""loctest's built-in plugins. They register through the ``loctest`` entry-point group like any other plugin.

Every plugin class defined in a module of the ``backends``, ``datasets``, ``locators``, ``editors``,
``scorers`` and ``judges`` subpackages is registered: adding a built-in means adding a module.
"""
import importlib
import pkgutil

from loctest import Backend, Dataset, Editor, Locator, Scorer, hookimpl
from loctest.base import Judge


def _defined_in(package: str, base: type) -> list[type]:
    found = []
    pkg = importlib.import_module(f"{__name__}.{package}")
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{pkg.__name__}.{info.name}")
        found += [obj for obj in vars(module).values()
                  if isinstance(obj, type) and issubclass(obj, base) and obj.__module__ == module.__name__ and obj.name]
    return found


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
    from .locators.ig_truth_neurons import report_section

    return report_section(results)
