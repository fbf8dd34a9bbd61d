"""``loctest run | validate | plugins [NAME] | compare | new``, ``loctest --version``. Exit codes: 0 success, 2 user error, 1 internal error."""
from __future__ import annotations

import argparse
import inspect
import json
import shlex
import sys
import traceback
import warnings
from contextlib import contextmanager

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .errors import LoctestWarning, UserError, did_you_mean
from .progress import error_lines
from .recipe import parse_assignments
from .references import type_text


def _common_flags(parser):
    parser.add_argument("--traceback", action="store_true", default=argparse.SUPPRESS,
                        help="Show the full traceback on errors.")
    parser.add_argument("--plugins-dir", action="append", default=[], metavar="DIR", help="Load plugins from DIR (*.py files).")
    parser.add_argument("--no-plugin", action="append", default=[], metavar="NAME", help="Block the plugin NAME.")


class VersionAction(argparse.Action):
    """``--version``: loctest's version and those of the packages a run's numbers depend on, then exit."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, help="Show the versions of loctest and its key packages.")

    def __call__(self, parser, namespace, values, option_string=None):
        from .runner import versions

        found = versions()
        print(f"loctest {found.pop('loctest')}", *(f"{name} {v or '(not installed)'}" for name, v in found.items()), sep="\n")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="loctest", description="Localization tests for language models.")
    parser.add_argument("--version", action=VersionAction)
    parser.add_argument("--traceback", action="store_true", help="Show the full traceback on errors.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="Run a recipe.")
    run.add_argument("recipe")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="Override a recipe key (TOML value).")
    run.add_argument("--out", help="Folder for the new run directory (default: the recipe's run.out).")
    run.add_argument("--limit", metavar="N|F", help=(
        "A count N (at most N examples per dataset) or a fraction 0 < F <= 1 (that share of each dataset's "
        "selected examples, at least 1)."))
    run.add_argument("--device", help="A torch device ('cpu', 'cuda', 'cuda:1', 'mps', ...) or 'auto'.")
    run.add_argument("--backend", help="Backend plugin name (e.g. transformer-lens, nnsight).")
    run.add_argument("--no-progress", action="store_true", help="Hide progress bars.")
    _common_flags(run)

    validate = sub.add_parser("validate", help="Check recipes without loading weights.")
    validate.add_argument("recipes", nargs="+", metavar="recipe")
    validate.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    _common_flags(validate)

    plugins = sub.add_parser("plugins", help="List plugins by kind with their config fields and metrics, or show one.")
    plugins.add_argument("name", nargs="?", help="Show this plugin: its config, metrics and documentation.")
    plugins.add_argument("--json", action="store_true", help="Machine-readable output.")
    _common_flags(plugins)

    new = sub.add_parser("new", help="Write a new plugin file with its tests and a tiny recipe that uses it.")
    new.add_argument("kind", help="locator, editor or scorer.")
    new.add_argument("name", help="The plugin's name (lowercase, dash-separated, e.g. my-locator).")
    new.add_argument("--dir", default=".", help="Folder for the files (default: the current folder; made if missing).")
    _common_flags(new)

    compare = sub.add_parser("compare", help="Show the metrics of run directories side by side.")
    compare.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                         help="Run directories (each holds results.json), or folders of them (a recipe's run.out).")
    compare.add_argument("--out", action="append", default=[], metavar="FILE",
                         help="Also write the comparison to FILE: .csv or .md (repeatable).")
    compare.add_argument("--traceback", action="store_true", default=argparse.SUPPRESS, help="Show the full traceback on errors.")
    return parser


def describe_plugins(host) -> dict:
    out = {}
    for kind, registry in host.registries.items():
        out[kind] = []
        for name, cls in registry.items():
            fields = [{"name": f, "type": type_text(info.annotation, info.metadata),
                       "default": None if info.is_required() else info.get_default(call_default_factory=True),
                       "required": info.is_required(), "description": info.description or ""}
                      for f, info in cls.Config.model_fields.items()]
            out[kind].append({"name": name, "description": cls.description, "plugin": registry.owner(name),
                              "metrics": list(getattr(cls, "metrics", ())),
                              "higher_is_better": dict(getattr(cls, "higher_is_better", {})), "config": fields,
                              "doc": plugin_doc(cls), "source": inspect.getsourcefile(cls)})
    return out


def plugin_doc(cls: type) -> str:
    """A plugin class's own docstring, else its module's (a base class's docstring says nothing about it)."""
    doc = cls.__dict__.get("__doc__") or getattr(inspect.getmodule(cls), "__doc__", None) or ""
    return inspect.cleandoc(doc)


def field_line(field: dict) -> str:
    """``name: type = default`` of a config field."""
    return f"{field['name']}: {field['type']} = {'(required)' if field['required'] else repr(field['default'])}"


def named_plugin(name: str, listing: dict) -> dict:
    """The entries of ``listing`` (by kind) named ``name``: one per kind that has such a plugin."""
    found = {kind: [e for e in entries if e["name"] == name] for kind, entries in listing.items()}
    if not any(found.values()):
        names = {e["name"] for entries in listing.values() for e in entries}
        raise UserError(f"no plugin named {name!r}; {did_you_mean(name, names)}")
    return {kind: entries for kind, entries in found.items() if entries}


def metric_text(entry: dict) -> str:
    """A scorer's metrics with their direction: ``accuracy (higher is better), ...``."""
    better = entry["higher_is_better"]
    return ", ".join(m + (f" ({'higher' if better[m] else 'lower'} is better)" if m in better else "") for m in entry["metrics"])


def show_plugin(kind: str, entry: dict, console: Console) -> None:
    """One plugin: its kind, owner and source file, description, documentation, config fields and metrics."""
    console.print(f"[bold]{kind} {escape(entry['name'])}[/] (from {escape(entry['plugin'])}, {escape(str(entry['source']))})",
                  soft_wrap=True, highlight=False)
    console.print(escape(entry["description"]), soft_wrap=True, highlight=False)
    if entry["doc"]:
        console.print("\n" + escape(entry["doc"]) + "\n", soft_wrap=True, highlight=False)
    if entry["metrics"]:
        console.print(f"metrics: {escape(metric_text(entry))}", soft_wrap=True, highlight=False)
    table = Table(title="config", title_justify="left")
    for col in ("key", "type", "default", "description"):
        table.add_column(col)
    for f in entry["config"]:
        table.add_row(f["name"], escape(f["type"]), "(required)" if f["required"] else escape(repr(f["default"])),
                      escape(f["description"]))
    console.print(table if entry["config"] else "config: (no settings)", highlight=False)


def plugins_table(kind: str, entries: list[dict]) -> Table:
    """The plugins of one kind: name, owner, description, config fields with their descriptions, and metrics."""
    table = Table(title=f"{kind}s", show_lines=True, title_justify="left")
    columns = ["name", "from", "description", "config"] + (["metrics"] if any(e["metrics"] for e in entries) else [])
    for col in columns:
        table.add_column(col)
    for e in entries:
        config = "\n".join(escape(field_line(f)) + (f"\n  [dim]{escape(f['description'])}[/]" if f["description"] else "")
                           for f in e["config"])
        row = [e["name"], e["plugin"], escape(e["description"]), config, escape(metric_text(e))]
        table.add_row(*row[:len(columns)])
    return table


def cmd_new(args, console: Console) -> int:
    from pathlib import Path

    from .plugin_manager import create_host
    from .scaffold import write_skeleton

    host = create_host(extra_paths=args.plugins_dir, blocked=args.no_plugin)
    written = write_skeleton(args.kind, args.name, Path(args.dir), host)
    plugin, test, recipe = written
    console.print(f"Wrote {', '.join(map(str, written))}", soft_wrap=True, highlight=False)
    console.print(f"Next: pytest {test}  |  loctest run {recipe}  |  loctest plugins {args.name} --plugins-dir {plugin}",
                  soft_wrap=True, highlight=False)
    return 0


def warn_failures(host, shown: set[str] | None = None) -> None:
    """Print each plugin that failed to load as a ``warning:`` line, except those in ``shown`` (then added to it)."""
    for failure in host.failures:
        if shown is None or failure not in shown:
            print(f"warning: {failure}", file=sys.stderr)
        if shown is not None:
            shown.add(failure)


def cmd_plugins(args, console: Console) -> int:
    from .plugin_manager import create_host

    host = create_host(extra_paths=args.plugins_dir, blocked=args.no_plugin)
    listing = describe_plugins(host) if args.name is None else named_plugin(args.name, describe_plugins(host))
    if args.json:
        print(json.dumps({"plugins": listing, "failures": host.failures}, indent=1, default=str))
        return 0
    for kind, entries in listing.items():
        if args.name:
            for entry in entries:
                show_plugin(kind, entry, console)
        else:
            console.print(plugins_table(kind, entries))
    warn_failures(host)
    return 0


def cmd_validate(args, console: Console) -> int:
    """Each recipe in turn: an OK line on stdout, or every problem on stderr; exit 2 when any recipe fails."""
    from .runner import prepare

    overrides, failed, shown = parse_assignments(args.set), 0, set()
    for path in args.recipes:
        try:
            recipe, host = prepare(path, overrides, plugins_dirs=args.plugins_dir, blocked_plugins=args.no_plugin)
        except UserError as err:
            failed += 1
            print("\n".join(error_lines(err)[0]), file=sys.stderr)
            if args.traceback:
                traceback.print_exception(err)
            continue
        warn_failures(host, shown)
        console.print(f"{recipe.path}: OK ({len(recipe.arms)} arms, {len(recipe.scorers)} scorers, "
                      f"{len(recipe.datasets)} datasets, {len(recipe.comparisons)} comparisons)", soft_wrap=True)
    if failed and len(args.recipes) > 1:
        print(f"error: {failed} of {len(args.recipes)} recipes failed validation", file=sys.stderr)
    return 2 if failed else 0


def cmd_run(args, console: Console) -> int:
    from .report import EMPTY_ARM_NOTE, empty_located_arms, located_vs_draws_table, results_table
    from .runner import run_recipe
    from .verdict import sentence, warnings_of

    results = run_recipe(args.recipe, parse_assignments(args.set), out=args.out, limit=args.limit, device=args.device,
                         backend=args.backend, plugins_dirs=args.plugins_dir, blocked_plugins=args.no_plugin,
                         progress=not args.no_progress, console=Console(stderr=True), command=args.command_line)
    console.print(results_table(results))
    if (draws_table := located_vs_draws_table(results.data)) is not None:
        console.print(draws_table)
    for line in [sentence(results.data, c) for c in results.comparisons]:
        console.print(line, soft_wrap=True, highlight=False, markup=False)
    for line in warnings_of(results.data):
        console.print(f"[yellow]warning:[/] {escape(line)}", soft_wrap=True, highlight=False)
    for arm in empty_located_arms(results.data):
        console.print(f"[yellow]warning:[/] arm {arm!r} {EMPTY_ARM_NOTE}", highlight=False)
    console.print(f"Report: {results.run_dir / 'report.md'}", soft_wrap=True)
    console.print(f"Results: {results.run_dir / 'results.json'}", soft_wrap=True)
    return 0


def cmd_compare(args, console: Console) -> int:
    from .compare import expand_run_dirs, output_paths, side_by_side
    from .results import load

    outs = output_paths(args.out)
    compared = side_by_side([load(run_dir) for run_dir in expand_run_dirs(args.run_dirs)])
    console.print(compared.table())
    for line in compared.differences:
        console.print(f"[yellow]differ:[/] {escape(line)}", soft_wrap=True, highlight=False)
    for out in outs:
        console.print(f"Wrote {compared.write(out)}", soft_wrap=True, highlight=False)
    return 0


def report_error(err: BaseException) -> int:
    """Print ``err`` on stderr, one line per problem, and return the exit code it deserves."""
    lines, code = error_lines(err)
    if code == 1:
        lines = [f"{lines[0]} (run with --traceback for details)"]
    for line in lines:
        print(line, file=sys.stderr)
    return code


@contextmanager
def one_line_warnings():
    """Print loctest's own warnings as one ``warning:`` line on stderr; other warnings as Python prints them."""
    with warnings.catch_warnings():
        previous = warnings.showwarning

        def show(message, category, *args, **kwargs):
            if issubclass(category, LoctestWarning):
                print(f"warning: {message}", file=sys.stderr)
            else:
                previous(message, category, *args, **kwargs)

        warnings.showwarning = show
        yield


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as done:  # --help, --version, or a malformed command line that argparse has explained
        return int(done.code or 0)
    args.command_line = shlex.join(["loctest", *(sys.argv[1:] if argv is None else argv)])
    try:
        with one_line_warnings():
            return {"run": cmd_run, "validate": cmd_validate, "plugins": cmd_plugins, "compare": cmd_compare,
                    "new": cmd_new}[args.command](args, Console())
    except (Exception, KeyboardInterrupt) as err:  # the CLI's last line of defence: exit codes, no traceback
        code = report_error(err)
        if args.traceback:
            traceback.print_exception(err)
        return code


if __name__ == "__main__":
    sys.exit(main())
