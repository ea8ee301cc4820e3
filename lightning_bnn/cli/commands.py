"""``python -m lightning_bnn runs`` and ``compare``: read runs back through ``MlflowClient``.

``runs`` prints a table of runs (newest first) with their key params and final
metrics, filtered by experiment, tag or an MLflow filter string; a ``RUNNING`` run with no
heartbeat for ``--stalled-after`` minutes shows as ``STALLED``, and ``--mark-stalled`` ends
such runs ``KILLED`` (:mod:`lightning_bnn.tracking.heartbeat`). ``compare RUN ...``
prints the params that differ between runs and their final metrics side by side.
Both show the registered model versions of each run (``registered``: ``NAME v1 @champion``; see
``python -m lightning_bnn register``).
Both work on any store (``--tracking-uri``, else as in :mod:`lightning_bnn.tracking.store`);
they only read, through the MLflow client API (no SQL), except ``runs --mark-stalled``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from lightning_bnn.tracking import heartbeat
from lightning_bnn.tracking.serialization import ModelLoadError
from lightning_bnn.tracking.store import parse_run, resolve_tracking_uri

#: params shown in the ``runs`` table (those a run has)
KEY_PARAMS = ("dataset", "prior.name", "estimator", "hidden_sizes", "lr", "trainer.max_epochs")
#: metrics shown in the ``runs`` table (those a run has)
KEY_METRICS = ("val/nll", "val/acc", "val/rmse", "test/nll", "test/acc", "test/ece", "test/rmse", "test/picp95")


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned text table with a header rule (pure; empty cells as ``-``)."""
    cells = [list(header)] + [[c if c not in (None, "") else "-" for c in row] for row in rows]
    widths = [max(len(str(row[i])) for row in cells) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_value(value: Any) -> str:
    """A metric or param for a table: floats to 4 significant digits."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def parse_tags(pairs: Sequence[str]) -> dict[str, str]:
    """``KEY=VALUE`` strings to a dict; a malformed pair raises ValueError naming it."""
    tags = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--tag expects KEY=VALUE, got {pair!r}")
        tags[key] = value
    return tags


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def build_filter(tags: dict[str, str], status: str | None, extra: str | None) -> str:
    """An MLflow search filter string from tag equalities, a status and a raw clause."""
    clauses = [f"tags.`{k}` = {_quote(v)}" for k, v in tags.items()]
    if status:
        clauses.append(f"attributes.status = {_quote(status.upper())}")
    if extra:
        clauses.append(f"({extra})" if " or " in extra.lower() else extra)
    return " and ".join(clauses)


def _client(uri: str | None):
    from mlflow import MlflowClient

    return MlflowClient(resolve_tracking_uri(uri))


def registered_by_run(client: Any) -> dict[str, str]:
    """Map each run id to its registered versions (``NAME v1 @champion``), from the store's model registry."""
    from mlflow.exceptions import MlflowException

    from lightning_bnn.tracking.registry import registered_labels, registered_versions

    try:
        return registered_labels(registered_versions(client=client))
    except MlflowException:  # a store without a model registry: no column, not an error
        return {}


def _started(ms: int | None) -> str:
    if not ms:
        return ""
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M")


def _minutes(text: str) -> float:
    try:
        return heartbeat.check_stalled_after(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def run_status(run: Any, now_ms: int, stalled_after_min: float) -> str:
    """The run's MLflow status, or ``STALLED`` for a ``RUNNING`` run without a recent heartbeat."""
    return heartbeat.STALLED if heartbeat.run_is_stalled(run, now_ms, stalled_after_min) else run.info.status


def mark_stalled_runs(client: Any, experiment_ids: list[str], filter_string: str, stalled_after_min: float) -> list:
    """End every stalled ``RUNNING`` run matching ``filter_string`` as ``KILLED``; returns [(run, reason)].

    Every page of the search is read before any run is ended (ending one moves the later pages).
    """
    filter_string = " and ".join(c for c in (filter_string, "attributes.status = 'RUNNING'") if c)
    running, token = [], None
    while True:
        page = client.search_runs(experiment_ids, filter_string=filter_string, max_results=1000, page_token=token)
        running += list(page)
        token = page.token
        if not token:
            break
    now = heartbeat.now_ms()
    marked = []
    for run in running:
        if heartbeat.run_is_stalled(run, now, stalled_after_min):
            reason = heartbeat.mark_stalled(client, run.info.run_id, stalled_after_min)  # read again, then ended
            if reason is not None:
                marked.append((run, reason))
    return marked


def runs_main(argv: Sequence[str], out: TextIO | None = None) -> int:
    """``runs``: table of runs with key params and final metrics."""
    out = out or sys.stdout
    parser = argparse.ArgumentParser(prog="python -m lightning_bnn runs", description=runs_main.__doc__)
    parser.add_argument(
        "--tracking-uri", help="MLflow store (default $MLFLOW_TRACKING_URI or sqlite:///mlruns/mlflow.db)"
    )
    parser.add_argument("--experiment", "-e", action="append", default=[], help="experiment name (repeatable)")
    parser.add_argument("--tag", "-t", action="append", default=[], help="KEY=VALUE tag filter (repeatable)")
    parser.add_argument("--status", choices=["RUNNING", "FINISHED", "FAILED", "KILLED", "SCHEDULED"], type=str.upper)
    parser.add_argument("--filter", help="extra MLflow filter, e.g. \"params.`prior.name` = 'scale_mixture'\"")
    parser.add_argument("--max-results", type=int, default=50, help="most runs to show (default 50)")
    parser.add_argument(
        "--stalled-after",
        type=_minutes,
        default=heartbeat.DEFAULT_STALLED_AFTER_MIN,
        metavar="MINUTES",
        help="a RUNNING run with no heartbeat for this many minutes shows as STALLED (default "
        f"{heartbeat.DEFAULT_STALLED_AFTER_MIN:g}; fractions allowed)",
    )
    parser.add_argument(
        "--mark-stalled",
        action="store_true",
        help="end the stalled runs (those matching the filters) as KILLED, with the tag "
        f"{heartbeat.KILLED_REASON_TAG} saying why, and print them",
    )
    args = parser.parse_args(list(argv))
    try:
        tags = parse_tags(args.tag)
    except ValueError as err:
        parser.error(str(err))
    if args.mark_stalled and args.status not in (None, "RUNNING"):
        parser.error(f"--mark-stalled ends RUNNING runs only; drop --status {args.status}")
    client = _client(args.tracking_uri)
    if args.experiment:
        experiments = []
        for name in args.experiment:
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                print(f"error: no experiment named {name!r}", file=sys.stderr)
                return 2
            experiments.append(experiment)
    else:
        experiments = client.search_experiments()
    names = {e.experiment_id: e.name for e in experiments}
    if not names:
        print("no experiments", file=out)
        return 0
    from mlflow.exceptions import MlflowException

    if args.mark_stalled:
        try:
            marked = mark_stalled_runs(client, list(names), build_filter(tags, None, args.filter), args.stalled_after)
        except MlflowException as err:
            print(f"error: {err.message}", file=sys.stderr)
            return 2
        for run, reason in marked:
            name = names.get(run.info.experiment_id, run.info.experiment_id)
            print(f"marked KILLED: {run.info.run_id} {run.info.run_name or ''} ({name}): {reason}", file=out)
        print(f"{len(marked)} stalled run(s) marked KILLED (no heartbeat for {args.stalled_after:g} min)", file=out)
        return 0
    try:
        runs = client.search_runs(
            list(names),
            filter_string=build_filter(tags, args.status, args.filter),
            max_results=args.max_results,
            order_by=["attributes.start_time DESC"],
        )
    except MlflowException as err:
        print(f"error: {err.message}", file=sys.stderr)
        return 2
    if not runs:
        print("no runs match", file=out)
        return 0
    params = [p for p in KEY_PARAMS if any(p in r.data.params for r in runs)]
    metrics = [m for m in KEY_METRICS if any(m in r.data.metrics for r in runs)]
    registered = registered_by_run(client)
    shown = ["registered"] if any(r.info.run_id in registered for r in runs) else []
    header = ["run_id", "experiment", "name", "status", "started", *shown, *params, *metrics]
    now = heartbeat.now_ms()
    rows = [
        [
            r.info.run_id,
            names.get(r.info.experiment_id, r.info.experiment_id),
            r.info.run_name or "",
            run_status(r, now, args.stalled_after),
            _started(r.info.start_time),
            *(registered.get(r.info.run_id, "") for _ in shown),
            *(r.data.params.get(p, "") for p in params),
            *(format_value(r.data.metrics.get(m)) for m in metrics),
        ]
        for r in runs
    ]
    print(format_table(header, rows), file=out)
    stalled = sum(row[3] == heartbeat.STALLED for row in rows)
    if stalled:
        print(
            f"\n{stalled} run(s) STALLED: RUNNING with no heartbeat for {args.stalled_after:g} min (the process "
            "was probably killed); `python -m lightning_bnn runs --mark-stalled` ends them KILLED",
            file=out,
        )
    return 0


def diff_params(params: Sequence[dict[str, str]], show_all: bool = False) -> list[tuple[str, list[str]]]:
    """(name, values per run) for params that differ between runs (all params with ``show_all``); sorted."""
    keys = sorted(set().union(*params)) if params else []
    rows = []
    for key in keys:
        values = [p.get(key, "") for p in params]
        if show_all or len(set(values)) > 1:
            rows.append((key, values))
    return rows


def compare_main(argv: Sequence[str], out: TextIO | None = None) -> int:
    """``compare RUN_A RUN_B ...``: differing params and final metrics side by side."""
    out = out or sys.stdout
    parser = argparse.ArgumentParser(prog="python -m lightning_bnn compare", description=compare_main.__doc__)
    parser.add_argument("runs", nargs="+", help="run ids or runs:/<id> URIs")
    parser.add_argument(
        "--tracking-uri", help="MLflow store (default $MLFLOW_TRACKING_URI or sqlite:///mlruns/mlflow.db)"
    )
    parser.add_argument("--all-params", action="store_true", help="show every param, not only differing ones")
    args = parser.parse_args(list(argv))
    from mlflow.exceptions import MlflowException

    client = _client(args.tracking_uri)
    runs = []
    for ref in args.runs:
        try:
            runs.append(client.get_run(parse_run(ref)))
        except (ModelLoadError, MlflowException) as err:
            print(f"error: no run {ref!r}: {getattr(err, 'message', err)}", file=sys.stderr)
            return 2
    ids = [r.info.run_id[:12] for r in runs]
    header = ["", *ids]
    info = [
        ["run_name", *(r.info.run_name or "" for r in runs)],
        ["status", *(r.info.status for r in runs)],
        ["started", *(_started(r.info.start_time) for r in runs)],
    ]
    registered = registered_by_run(client)
    if any(r.info.run_id in registered for r in runs):
        info.append(["registered", *(registered.get(r.info.run_id, "") for r in runs)])
    print(format_table(header, info), file=out)
    differing = diff_params([r.data.params for r in runs], show_all=args.all_params)
    title = "params" if args.all_params else "params that differ"
    print(f"\n{title} ({len(differing)})", file=out)
    if differing:
        print(format_table(["param", *ids], [[k, *v] for k, v in differing]), file=out)
    else:
        print("(none: the runs have identical params)", file=out)
    names = sorted(set().union(*(r.data.metrics for r in runs)))
    print(f"\nfinal metrics ({len(names)})", file=out)
    rows = [[m, *(format_value(r.data.metrics.get(m)) for r in runs)] for m in names]
    print(format_table(["metric", *ids], rows), file=out)
    return 0
