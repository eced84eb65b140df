"""The ``meanfield validate`` command, provided to ``meanfield.cli`` as a plugin.

``meanfield.cli`` discovers the entry point group ``meanfield.commands`` (pyproject.toml:
``validate = "meanfield.validation.cli:register"``), so the core package never imports
``meanfield.validation``. ``register`` adds the subcommand without importing jax (every
``meanfield`` command line builds its parser); each study's module loads only when it runs.
"""

from __future__ import annotations

import argparse
import sys

from meanfield.validation.studies import DEFAULT_OUT, STUDIES, run_study, takes_executor


def register(subparsers) -> argparse.ArgumentParser:
    """Add ``validate`` to the ``meanfield`` subcommands (``argparse`` subparsers action)."""
    parser = subparsers.add_parser(
        "validate", help="run a validation study and write its report.md",
        description="Run a validation study (see --list) and write DIR/report.md with its "
                    "figures.",
        epilog="""examples:
  meanfield validate --list                   # the studies and what each checks
  meanfield validate boursier --quick         # small, fast version (about 10 s)
  meanfield validate wang-ma --out reports/wang-ma
  meanfield validate luo-slopes --workers 2   # sweep points on a local Dask cluster
""", formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", nargs="?", help="study name (see --list)")
    parser.add_argument("--list", action="store_true", help="list the studies")
    parser.add_argument("--all", action="store_true",
                        help="run every study, one after another, each into DIR/STUDY (DIR: "
                             f"--out, default ./{DEFAULT_OUT}); --workers / --scheduler apply to "
                             "the studies built on sweeps")
    parser.add_argument("--quick", action="store_true", help="small, fast version (smoke test)")
    parser.add_argument("--out", metavar="DIR",
                        help=f"report directory (default: ./{DEFAULT_OUT}/STUDY, or "
                             f"./{DEFAULT_OUT}/STUDY-quick with --quick)")
    parser.add_argument("--scheduler", metavar="ADDRESS",
                        help="run the study's sweep points on the Dask cluster of this scheduler")
    parser.add_argument("--workers", type=int, metavar="N",
                        help="run the study's sweep points on a local Dask cluster of N workers")
    parser.set_defaults(func=cmd_validate, usage=parser.format_usage)
    return parser


def _study_lines(studies) -> list[str]:
    pad = max(map(len, studies))
    return [f"  {name:{pad}s}  {description}" for name, (_, description) in studies.items()]


def cmd_validate(args) -> int:
    if args.list:
        print("\n".join(_study_lines(STUDIES)))
        return 0
    if args.all:
        if args.study:
            print(f"meanfield: --all runs every study; drop the study name {args.study!r} or "
                  "--all", file=sys.stderr)
            return 2
        return _validate_all(args)
    if not args.study:
        print(f"{args.usage().rstrip()}\nmeanfield validate: name a study to run, e.g. "
              f"`meanfield validate {next(iter(STUDIES))} --quick`; the studies are:\n"
              + "\n".join(_study_lines(STUDIES)), file=sys.stderr)
        return 2
    from meanfield.validation.executors import executor_from_options  # imports jax

    try:
        executor = executor_from_options(args.scheduler, args.workers)
        report, path = run_study(args.study, args.out, quick=args.quick, executor=executor)
    except (ValueError, ImportError) as exc:
        print(f"meanfield: {exc}", file=sys.stderr)
        return 2
    failed = [c for c in report.checks if c.required and not c.passed]
    print(f"report     {path}  ({'PASS' if report.passed else 'FAIL'}: "
          f"{len(failed)} failing checks)")
    return 0 if report.passed else 1


def _validate_all(args) -> int:
    """Every study in turn; a summary line each; status 0 only if every study passes."""
    from meanfield.validation.executors import executor_from_options  # imports jax

    try:
        executor = executor_from_options(args.scheduler, args.workers)
    except (ValueError, ImportError) as exc:
        print(f"meanfield: {exc}", file=sys.stderr)
        return 2
    base = args.out or DEFAULT_OUT
    suffix = "-quick" if args.quick else ""
    results = []
    for name in STUDIES:
        out_dir = f"{base}/{name}{suffix}"
        report, path = run_study(name, out_dir, quick=args.quick,
                                 executor=executor if takes_executor(name) else None)
        results.append((name, report.passed, report.wall_seconds, path))
        print(f"report     {path}  ({'PASS' if report.passed else 'FAIL'}, "
              f"{report.wall_seconds:.0f} s)", flush=True)
    total = sum(seconds for _, _, seconds, _ in results)
    failed = [name for name, passed, _, _ in results if not passed]
    print(f"studies    {len(results) - len(failed)}/{len(results)} pass"
          + (f"; failing: {', '.join(failed)}" if failed else "") + f"; {total / 60:.1f} min")
    return 1 if failed else 0
