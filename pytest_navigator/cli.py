"""The navigator CLI (`navigator`, or `python -m pytest_navigator`): profile a model, compare runs, report,
merge shards and export, without pytest.

    navigator profile MODEL [--runtimes ...] [--batch-sizes ...] [--against OLD] [-o run.json]
    navigator compare OLD.json NEW.json [--format text|markdown|json] [--fail-on regressed|inconclusive|never]
    navigator report RUN.json [--html out.html] [--markdown out.md]
    navigator merge A.json B.json ... -o all.json
    navigator export RUN.json --format pytest-benchmark -o DIR

Exit status: 0 when nothing failed, 1 when something did (a regression, a failed check), 2 on bad
input (a missing or corrupt file, a bad option, reports that cannot be compared or merged).
`profile` takes every --navigator-* option of the plugin, with or without the prefix (`--window`
or `--navigator-window`), with the same defaults, and makes the calls the plugin's tests make
(NavigatorSession.check_correctness, NavigatorSession.check_performance), so its figures, verdicts
and messages are the plugin's.
Starting is fast: nothing imports torch until `profile` runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from pytest_navigator import options

if TYPE_CHECKING:
    from pytest_navigator.report.run_report import RunReport

#: Exit statuses.
OK, FAILED, BAD_INPUT = 0, 1, 2
PREFIX = "--navigator-"


def main(argv: Sequence[str] | None = None) -> int:
    """The CLI. `argv` None: the process's own command line (the `navigator` script, `python -m
    pytest_navigator`), whose heap `profile` may freeze (loop.py); a caller's list: a run inside another
    program (a test), whose heap is left alone."""
    parser = _parser()
    args = parser.parse_args(argv)
    args.owns_process = argv is None
    if args.command is None:
        parser.print_help()
        return BAD_INPUT
    from pytest_navigator.errors import NavigatorError

    command: Callable[[argparse.Namespace], int] = args.run
    try:
        return command(args)
    except NavigatorError as exc:
        print(f"navigator {args.command}: {exc}", file=sys.stderr)
        return BAD_INPUT
    except BrokenPipeError:  # `navigator compare ... | head`: the reader left; not an error of ours
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return OK


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="navigator", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    profile = commands.add_parser(
        "profile", help="check and profile every runtime of a model, as the plugin does; write the run's JSON"
    )
    profile.add_argument("models", nargs="+", metavar="MODEL", help="model file(s): .pt2, TorchScript, .onnx")
    profile.add_argument("-o", "--output", type=Path, help="write the run report (JSON) here")
    for option in options.OPTIONS:
        if option.flag in (options.MODEL, options.REPORT):
            continue
        # the plugin's own name works too, so a message naming --navigator-window is a valid option here
        flags = [option.flag.replace(PREFIX, "--"), option.flag] if option.flag.startswith(PREFIX) else [option.flag]
        help = option.argparse_help
        if option.kind == "bool":
            profile.add_argument(*flags, dest=option.dest, action="store_true", default=None, help=help)
        elif option.kind in ("paths", "linelist"):
            profile.add_argument(*flags, dest=option.dest, action="append", metavar=option.metavar, help=help)
        else:
            profile.add_argument(*flags, dest=option.dest, metavar=option.metavar, help=help)
    profile.set_defaults(run=_profile)

    compare = commands.add_parser("compare", help="judge NEW against OLD with the plugin's statistics")
    compare.add_argument("old", type=Path, metavar="OLD.json")
    compare.add_argument("new", type=Path, metavar="NEW.json")
    compare.add_argument("--format", choices=("text", "markdown", "json"), default="text")
    compare.add_argument(
        "--fail-on",
        choices=("regressed", "inconclusive", "never"),
        default="regressed",
        help="exit 1 on these verdicts (default: regressed; inconclusive also fails on unstable measurements)",
    )
    compare.add_argument(
        "--thresholds",
        help="regression limits as the plugin's --navigator-thresholds (default: NEW's run settings, else "
        "throughput=95%%,p95=110%%,p99=110%%)",
    )
    compare.add_argument("--normalize", action="store_true", help="judge calibration-normalized figures")
    compare.add_argument(
        "--allow-hardware-mismatch",
        action="store_true",
        help="compare measurements of different hardware keys (refused by default: meaningless for speed)",
    )
    compare.set_defaults(run=_compare)

    report = commands.add_parser("report", help="write a run's HTML and/or Markdown report")
    report.add_argument("run_json", type=Path, metavar="RUN.json")
    report.add_argument("--html", type=Path, help="self-contained HTML file to write")
    report.add_argument("--markdown", type=Path, help="Markdown file to write")
    report.set_defaults(run=_report)

    merge = commands.add_parser("merge", help="join run reports of CI shards or machines into one")
    merge.add_argument("shards", nargs="+", type=Path, metavar="RUN.json")
    merge.add_argument("-o", "--output", type=Path, required=True, help="the merged report to write")
    merge.set_defaults(run=_merge)

    export = commands.add_parser("export", help="write a run in another tool's format")
    export.add_argument("run_json", type=Path, metavar="RUN.json")
    export.add_argument("--format", choices=("pytest-benchmark",), required=True)
    export.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        help="a folder: pytest-benchmark storage (read it with pytest-benchmark --storage file://DIR compare)",
    )
    export.set_defaults(run=_export)
    return parser


def _profile(args: argparse.Namespace) -> int:
    from pytest_navigator.locations import check_locations
    from pytest_navigator.report.terminal import baseline_summary, performance_summary, runtime_table
    from pytest_navigator.runtimes import default_registry
    from pytest_navigator.session import NavigatorSession
    from pytest_navigator.settings import settings_from

    values = dict(vars(args))
    values["navigator_models"] = args.models
    values["navigator_report"] = str(args.output) if args.output else None
    cwd = Path.cwd()
    settings = settings_from(values.get, lambda name: None, invocation_dir=cwd, rootdir=cwd)
    check_locations(settings)
    session = NavigatorSession(settings, default_registry())
    session.watch(lambda text: print(f"  {text}", file=sys.stderr, flush=True) if text else None)
    try:
        failures = session.run(lambda text: print(text, file=sys.stderr, flush=True), args.owns_process)
        session.finish()  # the baseline update, then the report and the views: their problems are said below
        report = session.report()
        print(runtime_table(report))
        if any(r.profile is not None for r in session.results.runtimes.values()):
            print(performance_summary(report))
        if settings.update_baselines:
            print(baseline_summary(report))
            failures += [f"{path}: {u.error}" for path, u in session.results.baseline_updates.items() if u.error]
        for problem in session.problems:
            print(problem, file=sys.stderr)
    finally:
        session.close()
    for line in failures:
        print(f"FAILED {line}", file=sys.stderr)
    if args.output is not None:
        print(f"wrote {args.output}")
    return FAILED if failures else OK


def _views(report: RunReport, html: Path | None, markdown: Path | None, benchmark: Path | None) -> None:
    from pytest_navigator.report.views import write_views

    for problem in write_views(report, html, markdown, benchmark):
        print(problem, file=sys.stderr)


def _compare(args: argparse.Namespace) -> int:
    from pytest_navigator.gate.thresholds import parse_thresholds
    from pytest_navigator.report.compare import compare_reports, failed, render
    from pytest_navigator.report.json_report import load_report

    old, new = load_report(args.old), load_report(args.new)
    stored = new.settings.get("thresholds") or {}
    given = args.thresholds or ",".join(v for k, v in stored.items() if k != "instructions") or None
    limits = parse_thresholds(given, "--thresholds")
    if "instructions" in stored and not args.thresholds:
        limits |= parse_thresholds(stored["instructions"], "--thresholds")
    rows, notes = compare_reports(
        old, new, limits, allow_hardware_mismatch=args.allow_hardware_mismatch, normalize=args.normalize
    )
    print(render(rows, notes, args.format, args.fail_on))
    return FAILED if failed(rows, args.fail_on) else OK


def _report(args: argparse.Namespace) -> int:
    from pytest_navigator.report.json_report import load_report

    data = load_report(args.run_json)
    if args.html is None and args.markdown is None:  # the Markdown reads well in a terminal too
        from pytest_navigator.report.markdown import render

        print(render(data))
        return OK
    _views(data, args.html, args.markdown, None)
    for path in (args.html, args.markdown):
        if path is not None:
            print(f"wrote {path}")
    return OK


def _merge(args: argparse.Namespace) -> int:
    from pytest_navigator.report.json_report import load_report, write_report
    from pytest_navigator.report.merge import MergeError, merge_reports

    if len(args.shards) < 2:
        raise MergeError(f"give two or more run reports to merge (got {len(args.shards)}).")
    merged = merge_reports([(str(path), load_report(path)) for path in args.shards])
    write_report(merged, args.output)
    models, runtimes = len(merged.results.models), len(merged.results.runtimes)
    print(f"wrote {args.output}: {models} model(s), {runtimes} runtime record(s) from {len(args.shards)} reports")
    return OK


def _export(args: argparse.Namespace) -> int:
    from pytest_navigator.report.benchmark_export import write_storage
    from pytest_navigator.report.json_report import load_report

    data = load_report(args.run_json)
    if args.output.exists() and not args.output.is_dir():
        from pytest_navigator.errors import NavigatorError

        raise NavigatorError(f"-o {args.output} is a file; give a folder (pytest-benchmark's storage).")
    path = write_storage(data, args.output, args.run_json.stem)
    print(f"wrote {path} (read it with: pytest-benchmark --storage file://{args.output} compare)")
    return OK
