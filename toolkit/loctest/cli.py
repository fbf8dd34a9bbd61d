"""``loctest run | validate | plugins``. Exit codes: 0 success, 2 user error, 1 internal error."""
from __future__ import annotations

import argparse
import json
import sys
import traceback
import warnings
from contextlib import contextmanager

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .errors import LoctestWarning, RecipeError, UserError
from .recipe import parse_assignments
from .references import type_text


def _common_flags(parser):
    parser.add_argument("--traceback", action="store_true", default=argparse.SUPPRESS,
                        help="Show the full traceback on errors.")
    parser.add_argument("--plugins-dir", action="append", default=[], metavar="DIR", help="Load plugins from DIR (*.py files).")
    parser.add_argument("--no-plugin", action="append", default=[], metavar="NAME", help="Block the plugin NAME.")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="loctest", description="Localization tests for language models.")
    parser.add_argument("--traceback", action="store_true", help="Show the full traceback on errors.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="Run a recipe.")
    run.add_argument("recipe")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="Override a recipe key (TOML value).")
    run.add_argument("--out", help="Folder for the new run directory (default: the recipe's run.out).")
    run.add_argument("--limit", type=int, help="At most N examples per dataset.")
    run.add_argument("--device", choices=["auto", "cpu", "cuda"])
    run.add_argument("--backend", help="Backend plugin name (e.g. transformer-lens, nnsight).")
    run.add_argument("--no-progress", action="store_true", help="Hide progress bars.")
    _common_flags(run)

    validate = sub.add_parser("validate", help="Check a recipe without loading weights.")
    validate.add_argument("recipe")
    validate.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    _common_flags(validate)

    plugins = sub.add_parser("plugins", help="List plugins by kind with their config fields.")
    plugins.add_argument("--json", action="store_true", help="Machine-readable output.")
    _common_flags(plugins)
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
                              "metrics": list(getattr(cls, "metrics", ())), "config": fields})
    return out


def warn_failures(host) -> None:
    for failure in host.failures:
        print(f"warning: {failure}", file=sys.stderr)


def cmd_plugins(args, console: Console) -> int:
    from .plugin_manager import create_host

    host = create_host(extra_paths=args.plugins_dir, blocked=args.no_plugin)
    listing = describe_plugins(host)
    if args.json:
        print(json.dumps({"plugins": listing, "failures": host.failures}, indent=1, default=str))
        return 0
    for kind, entries in listing.items():
        table = Table(title=f"{kind}s", show_lines=False, title_justify="left")
        for col in ("name", "from", "description", "config"):
            table.add_column(col)
        for e in entries:
            config = "\n".join(f"{f['name']}: {f['type']} = {'(required)' if f['required'] else repr(f['default'])}"
                               for f in e["config"])
            table.add_row(e["name"], e["plugin"], e["description"], config)
        console.print(table)
    warn_failures(host)
    return 0


def cmd_validate(args, console: Console) -> int:
    from .runner import prepare

    recipe, host = prepare(args.recipe, parse_assignments(args.set), plugins_dirs=args.plugins_dir, blocked_plugins=args.no_plugin)
    warn_failures(host)
    console.print(f"{recipe.path}: OK ({len(recipe.arms)} arms, {len(recipe.scorers)} scorers, "
                  f"{len(recipe.datasets)} datasets, {len(recipe.comparisons)} comparisons)", soft_wrap=True)
    return 0


def cmd_run(args, console: Console) -> int:
    from .report import EMPTY_ARM_NOTE, empty_located_arms, located_vs_draws_table, results_table
    from .runner import run_recipe
    from .verdict import sentence, warnings_of

    results = run_recipe(args.recipe, parse_assignments(args.set), out=args.out, limit=args.limit, device=args.device,
                         backend=args.backend, plugins_dirs=args.plugins_dir, blocked_plugins=args.no_plugin,
                         progress=not args.no_progress, console=Console(stderr=True))
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


def report_error(err: BaseException) -> int:
    """Print ``err`` on stderr, one line per problem, and return the exit code it deserves."""
    if isinstance(err, RecipeError):
        lines, code = [f"error: {problem}" for problem in err.problems], 2
    elif isinstance(err, UserError):
        lines, code = [f"error: {err}"], 2
    elif isinstance(err, KeyboardInterrupt):
        lines, code = ["interrupted: finished work is kept in the cache; run the same command again to resume"], 130
    else:
        message = " ".join([*str(err).splitlines()[:1], *getattr(err, "__notes__", [])])
        lines, code = [f"internal error: {type(err).__name__}: {message} (run with --traceback for details)"], 1
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
    args = build_parser().parse_args(argv)
    try:
        with one_line_warnings():
            return {"run": cmd_run, "validate": cmd_validate, "plugins": cmd_plugins}[args.command](args, Console())
    except (Exception, KeyboardInterrupt) as err:  # the CLI's last line of defence: exit codes, no traceback
        code = report_error(err)
        if args.traceback:
            traceback.print_exception(err)
        return code


if __name__ == "__main__":
    sys.exit(main())
