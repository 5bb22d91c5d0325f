"""The `serlens` command: run the study, query the store, rebuild the report, serve the API."""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

from serlens.shared.console import quiet_libraries, set_verbose
from serlens.shared.errors import unwrap
from serlens.shared.importers.command import add_import_parser, run_import
from serlens.shared.settings import default_workdir, ray_address

EXAMPLE_QUERY = (
    "SELECT checkpoint_step, layer, round(value, 3) AS cka FROM latest_cka "
    "WHERE estimator = 'linear' ORDER BY value DESC LIMIT 5"
)


def _version() -> str:
    from serlens import __version__

    return __version__


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", type=Path, default=None,
                        help="folder for the store, MLflow, figures and report "
                             "(default: $SERLENS_WORKDIR or ./serlens-work)")
    parser.add_argument("--verbose", action="store_true",
                        help="show tracebacks with errors, and the libraries' log lines (transformers, Ray, MLflow)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(prog="serlens", description=__doc__)
    parser.add_argument("--version", action="version", version=f"serlens {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("run", "run the whole study (default: the embedded demo)"),
                            ("train", "prepare the data and fine-tune only")):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--config", default=None,
                       help="a YAML config file, or a shipped config by name: demo (the default) or crema-d")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config value, e.g. --set train.lr=2e-5 (repeatable)")
        p.add_argument("--address", default=None, help="Ray cluster to join (default: $RAY_ADDRESS or a local Ray)")
        p.add_argument("--skip-invalid", action="store_true",
                       help="leave invalid inputs out (recorded in the `skipped` table) instead of stopping")
        p.add_argument("--quiet", action="store_true", help="no progress bars")
        _common(p)
    p = sub.add_parser("config", help="print the resolved config (after --config and --set) as YAML, "
                                      "or every config key with its type, default and meaning")
    p.add_argument("action", choices=("show", "schema"),
                   help="show: the config a run would use; schema: every key, its type, default and meaning")
    p.add_argument("--json", action="store_true", help="schema: as a JSON list instead of text")
    p.add_argument("--config", default=None,
                   help="a YAML config file, or a shipped config by name: demo (the default) or crema-d")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.lr=2e-5 (repeatable)")
    _common(p)
    p = sub.add_parser("sql", help="query the feature store (read-only SQL over DuckDB views)")
    p.add_argument("query", help="one SELECT statement")
    p.add_argument("--format", choices=("table", "csv", "json"), default="table",
                   help="how rows are printed (default: table)")
    p.add_argument("--max-rows", type=int, default=1000, help="stop after this many rows (default: 1000)")
    p.add_argument("--timeout-s", type=float, default=60.0, help="stop the query after this many seconds")
    p.add_argument("--memory-mb", type=int, default=2048, help="memory of the query's process, MiB")
    p.add_argument("--threads", type=int, default=2, help="DuckDB threads")
    _common(p)
    p = sub.add_parser("promote", help="serve a checkpoint from /embed and /predict (default: the latest "
                                       "run's last checkpoint)")
    p.add_argument("--train-key", default=None, help="the fine-tuning run (default: the latest finished run's)")
    p.add_argument("--step", type=int, default=None, help="its checkpoint (default: the last one)")
    p.add_argument("--note", default=None, help="why, for the record")
    _common(p)
    p = sub.add_parser("report", help="rebuild the figures and report.html from the store")
    _common(p)
    p = sub.add_parser("schema", help="the store's tables and views: columns, types and what each means")
    p.add_argument("table", nargs="?", default=None, help="one table (default: every table)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    _common(p)
    add_import_parser(sub, _common)
    from serlens.pipeline.store_cli import add_store_parser

    add_store_parser(sub, _common)
    p = sub.add_parser("serve", help="serve the HTTP API on this machine (Ray Serve, port 8000)")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="HTTP port (default: 8000)")
    _common(p)
    return parser


def _run(args: argparse.Namespace, workdir: Path) -> int:
    from serlens.pipeline.cluster import start_ray
    from serlens.pipeline.config import load_study_args
    from serlens.pipeline.run import Study

    study_args = load_study_args(args.config, args.overrides)
    started = time.perf_counter()
    start_ray(args.address or ray_address())
    study = Study(study_args, workdir=workdir, skip_invalid=args.skip_invalid, progress=not args.quiet,
                  analyses=args.command == "run")
    if args.command == "train":
        study.store.init()
        study.store.refresh_views()
        scan = study.scan()
        subsets = study.check(scan)
        keys = study.keys(scan)
        checkpoints = study.train(study.prepare(scan, keys, subsets), keys)
        study.store.refresh_views()
        print(f"\nfine-tuned: {len(checkpoints)} checkpoint(s), train key {keys.train}, "
              f"MLflow run {study.result.mlflow_run_id}")
        return 0
    result = study.run()
    root = result.workdir.root
    seconds = time.perf_counter() - started
    reused = f" (reused from the store: {', '.join(result.reused)})" if result.reused else ""
    print(f"""
serlens: study finished in {seconds:.0f} s{reused}
  report         {result.workdir.report}
  figures        {result.workdir.figures}/  ({', '.join(p.name for p in result.figures)})
  feature store  {result.workdir.store.root}/  (Parquet: tables/; SQL views: {result.workdir.store.db_path.name})
  MLflow         {result.tracking_uri}  (run {result.mlflow_run_id})
                 browse: mlflow ui --backend-store-uri {result.tracking_uri}
  checkpoints    {root / 'checkpoints' / result.train_key}
try:
  serlens sql --workdir {root} "{EXAMPLE_QUERY}"
serve it (the API serves only a promoted checkpoint):
  serlens promote --workdir {root} && serlens serve --workdir {root}
""")
    for warning in result.warnings:
        print(f"warning: {warning}")
    return 0


def _config(args: argparse.Namespace) -> int:
    if args.action == "schema":
        from serlens.pipeline.config_schema import schema_json, schema_text

        sys.stdout.write(schema_json() if args.json else schema_text())
        return 0
    from serlens.pipeline.config import load_study_args

    sys.stdout.write(load_study_args(args.config, args.overrides).to_yaml())
    return 0


def _sql(args: argparse.Namespace, workdir: Path) -> int:
    import pandas as pd

    from serlens.shared.sql import SqlLimits
    from serlens.shared.store import run_readonly_query
    from serlens.shared.workdir import Workdir

    limits = SqlLimits(max_rows=args.max_rows, timeout_s=args.timeout_s, memory_mb=args.memory_mb,
                       threads=args.threads, max_response_bytes=256 * 2**20)
    columns, rows, truncated = run_readonly_query(Workdir(workdir).store, args.query, limits=limits)
    frame = pd.DataFrame.from_records(rows, columns=columns).convert_dtypes()
    if args.format == "csv":
        sys.stdout.write(frame.to_csv(index=False))
    elif args.format == "json":
        sys.stdout.write(frame.to_json(orient="records", date_format="iso") + "\n")
    else:
        with pd.option_context("display.max_rows", None, "display.max_columns", None, "display.width", 200):
            print(frame.to_string(index=False) if len(frame) else "(no rows)")
    if truncated:
        print(f"(stopped at --max-rows {args.max_rows})", file=sys.stderr)
    return 0


def _promote(args: argparse.Namespace, workdir: Path) -> int:
    import getpass

    from serlens.api.promotions import promote
    from serlens.shared.runs import latest_run
    from serlens.shared.workdir import Workdir

    paths = Workdir(workdir)
    train_key = args.train_key or latest_run(paths.store)["train_key"]
    step = args.step
    if step is None:
        steps = paths.store.read("checkpoints", columns=["checkpoint_step"], filters={"train_key": train_key})
        step = max(steps.column("checkpoint_step").to_pylist(), default=0)
    row = promote(paths, train_key=train_key, checkpoint_step=step, promoted_by=f"cli:{getpass.getuser()}",
                  note=args.note)
    print(f"serving checkpoint {row['checkpoint_step']} of fine-tuning run {row['train_key']} "
          "from /embed and /predict (a running API picks it up within seconds)")
    return 0


def _serve(args: argparse.Namespace, workdir: Path) -> int:
    from serlens.api.app import serve_locally

    serve_locally(str(workdir), host=args.host, port=args.port, address=ray_address())
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `serlens` command."""
    args = build_parser().parse_args(argv)
    # Before any library is imported: their INFO lines and progress bars only with --verbose.
    set_verbose(args.verbose)
    quiet_libraries()
    workdir = (args.workdir or default_workdir()).resolve()
    try:
        if args.command in ("run", "train"):
            return _run(args, workdir)
        if args.command == "sql":
            return _sql(args, workdir)
        if args.command == "store":
            from serlens.pipeline.store_cli import run_store

            return run_store(args, workdir)
        if args.command == "promote":
            return _promote(args, workdir)
        if args.command == "import":
            return run_import(args)
        if args.command == "config":
            return _config(args)
        if args.command == "schema":
            from serlens.shared.column_docs import schema_json, schema_text

            sys.stdout.write(schema_json(args.table) if args.json else schema_text(args.table))
            return 0
        if args.command == "report":
            from serlens.pipeline.report import write_report

            print(write_report(workdir))
            return 0
        return _serve(args, workdir)
    except Exception as err:
        # A serlens error (raised here or in a Ray task) is the user's to fix: its message, exit 2.
        named = unwrap(err)
        if named is None:
            raise
        if args.verbose:
            traceback.print_exception(err)
        print(f"serlens: error: {named}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
