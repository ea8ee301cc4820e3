"""Grid sweeps over any config field: ``python -m lightning_bnn sweep --config SWEEP.yaml [--jobs N]``.

A sweep file names a base training config, fixed overrides and a grid of values per
field (dotted config keys, as on the ``fit`` command line)::

    name: blundell_prior               # the sweep's name: its parent run, and how it is resumed
    base: digits.yaml                  # relative to this file (or the current folder)
    experiment: digits-sweeps          # MLflow experiment of the parent and its trials
    metric: val/nll                    # ranks the trials in the summary ...
    mode: min                          # ... smallest first (or max)
    fixed:                             # the same in every trial
      model.prior.name: scale_mixture
    grid:                              # the Cartesian product of these values
      model.prior.pi: [0.25, 0.5, 0.75]
      model.prior.sigma1: [1.0, 0.3679]

Every trial is ``python -m lightning_bnn fit --config BASE --model.prior.pi 0.25 ...`` in a
subprocess, ``--jobs`` of them at a time. MLflow records one **parent run** per sweep
(tags ``lightning_bnn.cli.sweep`` = ``"true"``, ``lightning_bnn.sweep_name``, and
``swept_fields``: a JSON list of the swept fields *as they are named in the trials'
params*, e.g. ``prior.pi`` for ``model.prior.pi``) and one **child run** per trial (tag
``mlflow.parentRunId``). The child tags reach the trial through MLflow's
``MLFLOW_RUN_CONTEXT`` environment variable, which MLflow merges into the tags of every
run it creates; the training code needs no sweep option.

**Resuming.** Running the same sweep again (same name, base config, fixed values and
extra arguments) reuses its parent run and skips every trial that already has a
``FINISHED`` child with the same values; failed or killed trials run again.
``--new`` starts a fresh parent instead.

Extra ``fit`` arguments for every trial follow ``--``, e.g.
``python -m lightning_bnn sweep --config s.yaml --jobs 2 -- --trainer.max_epochs 1``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import itertools
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SWEEP_TAG = "lightning_bnn.sweep"
SWEEP_NAME_TAG = "lightning_bnn.sweep_name"
SWEEP_SPEC_TAG = "lightning_bnn.sweep_spec"
SWEPT_FIELDS_TAG = "swept_fields"
PARENT_TAG = "mlflow.parentRunId"
TRIAL_TAG = "lightning_bnn.sweep_trial"
TRIAL_VALUES_TAG = "lightning_bnn.trial_values"
METHODS = ("grid",)
#: lines of a failed trial's output shown on the console
TAIL_LINES = 15


class SweepError(ValueError):
    """A sweep file that cannot be run; the message names the problem."""


@dataclass
class SweepSpec:
    """A parsed sweep file.

    Args:
        name: sweep name (parent run name; resuming matches it).
        base: path of the base training config.
        grid: config key -> list of values; trials are their Cartesian product.
        fixed: config key -> value applied to every trial.
        experiment: MLflow experiment of the parent and the trials.
        metric: metric ranking the trials in the summary.
        mode: ``min`` or ``max``.
        tracking_uri: MLflow store, unless given on the command line.
    """

    name: str
    base: Path
    grid: dict[str, list[Any]]
    fixed: dict[str, Any] = field(default_factory=dict)
    experiment: str | None = None
    metric: str = "val/nll"
    mode: str = "min"
    tracking_uri: str | None = None

    def trials(self) -> list[dict[str, Any]]:
        """The grid's points in order, each a dict config key -> value."""
        keys = list(self.grid)
        return [dict(zip(keys, values, strict=True)) for values in itertools.product(*self.grid.values())]

    def fingerprint(self, extra_args: list[str]) -> str:
        """Hash of what makes two runs of this sweep the same sweep (not the grid: it may grow)."""
        text = json.dumps(
            {"base": self.base.read_text(), "fixed": self.fixed, "extra": extra_args}, sort_keys=True, default=str
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def load_spec(path: str | Path) -> SweepSpec:
    """Parse and validate a sweep file.

    Raises:
        SweepError: naming the bad key or value.
    """
    path = Path(path)
    if not path.is_file():
        raise SweepError(f"sweep file {path} does not exist")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise SweepError(f"{path}: a sweep file is a mapping, got {type(raw).__name__}")
    known = {"name", "base", "method", "grid", "fixed", "experiment", "metric", "mode", "tracking_uri"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise SweepError(f"{path}: unknown key(s) {unknown}; known keys: {sorted(known)}")
    method = raw.get("method", "grid")
    if method not in METHODS:
        raise SweepError(f"{path}: method must be one of {list(METHODS)}, got {method!r}")
    name = raw.get("name") or path.stem
    if not isinstance(name, str) or "'" in name:
        raise SweepError(f"{path}: name must be a string without quotes, got {name!r}")
    base = raw.get("base")
    if not isinstance(base, str):
        raise SweepError(f"{path}: base must be the path of a training config, got {base!r}")
    base_path = next((p for p in (path.parent / base, Path(base)) if p.is_file()), None)
    if base_path is None:
        raise SweepError(f"{path}: base config {base!r} not found next to the sweep file or in {Path.cwd()}")
    grid = raw.get("grid")
    if not isinstance(grid, dict) or not grid:
        raise SweepError(f"{path}: grid must map config keys to lists of values, got {grid!r}")
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise SweepError(f"{path}: grid.{key} must be a non-empty list of values, got {values!r}")
    fixed = raw.get("fixed") or {}
    if not isinstance(fixed, dict):
        raise SweepError(f"{path}: fixed must map config keys to values, got {fixed!r}")
    both = sorted(set(fixed) & set(grid))
    if both:
        raise SweepError(f"{path}: {both} are both fixed and swept")
    mode = raw.get("mode", "min")
    if mode not in ("min", "max"):
        raise SweepError(f"{path}: mode must be 'min' or 'max', got {mode!r}")
    return SweepSpec(
        name=name,
        base=base_path.resolve(),
        grid={str(k): list(v) for k, v in grid.items()},
        fixed={str(k): v for k, v in fixed.items()},
        experiment=raw.get("experiment"),
        metric=str(raw.get("metric", "val/nll")),
        mode=mode,
        tracking_uri=raw.get("tracking_uri"),
    )


def param_name(key: str) -> str:
    """The name under which the trial's run records config key ``key`` as a param.

    Mirrors :func:`lightning_bnn.cli.app._readable_params`: model fields unprefixed
    (``model.prior.pi`` -> ``prior.pi``), ``data.*`` and ``trainer.*`` kept,
    ``seed_everything`` -> ``seed``.
    """
    parts = key.split(".")
    if parts[0] == "model":
        rest = parts[2:] if len(parts) > 2 and parts[1] == "init_args" else parts[1:]
        return ".".join(rest)
    if parts[0] == "data" and len(parts) > 2 and parts[1] == "init_args":
        return ".".join(["data", *parts[2:]])
    if key == "seed_everything":
        return "seed"
    return key


def cli_value(value: Any) -> str:
    """A value as the ``fit`` command line parses it (YAML): strings as-is, the rest as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, float) and not math.isfinite(value):
        raise SweepError(f"non-finite value {value!r} in a sweep")
    return json.dumps(value)


def trial_key(values: dict[str, Any]) -> str:
    """Canonical JSON of a trial's values: equal for equal trials."""
    return json.dumps(values, sort_keys=True, default=str)


def trial_command(spec: SweepSpec, values: dict[str, Any], uri: str, experiment: str, run_name: str, extra: list[str]):
    """The ``fit`` command line of one trial."""
    cmd = [sys.executable, "-m", "lightning_bnn", "fit", "--config", str(spec.base)]
    for key, value in {**spec.fixed, **values}.items():
        cmd += [f"--{key}", cli_value(value)]
    cmd += ["--mlflow.tracking_uri", uri, "--mlflow.experiment", experiment, "--mlflow.run_name", run_name]
    cmd += ["--trainer.enable_progress_bar", "false", *extra]
    return cmd


@dataclass
class TrialResult:
    """Outcome of one trial."""

    index: int
    values: dict[str, Any]
    status: str  # FINISHED, FAILED, KILLED or SKIPPED
    run_id: str | None = None
    metric: float | None = None
    seconds: float = 0.0


class Sweep:
    """Runs one sweep against an MLflow store (see the module docstring)."""

    def __init__(self, spec: SweepSpec, tracking_uri: str | None, jobs: int, extra: list[str], new: bool) -> None:
        from mlflow import MlflowClient

        from lightning_bnn.tracking.store import ensure_experiment, prepare_sqlite_store, resolve_tracking_uri

        self.spec = spec
        self.uri = resolve_tracking_uri(tracking_uri or spec.tracking_uri)
        prepare_sqlite_store(self.uri)
        self.jobs = jobs
        self.extra = extra
        self.client = MlflowClient(self.uri)
        self.experiment = spec.experiment or spec.name
        self.experiment_id = ensure_experiment(self.client, self.experiment, self.uri)
        self.fingerprint = spec.fingerprint(extra)
        self.parent_id, self.resumed = self._parent(new)
        self._procs: dict[int, subprocess.Popen] = {}
        self._lock = threading.Lock()
        self._stopping = False

    # -- MLflow -----------------------------------------------------------------------------------
    def _parent(self, new: bool) -> tuple[str, bool]:
        """(parent run id, resumed?): the latest parent of this sweep with the same fingerprint, or a new one."""
        fields = [param_name(k) for k in self.spec.grid]
        if not new:
            runs = self.client.search_runs(
                [self.experiment_id],
                filter_string=(
                    f"tags.`{SWEEP_TAG}` = 'true' and tags.`{SWEEP_NAME_TAG}` = '{self.spec.name}' "
                    f"and tags.`{SWEEP_SPEC_TAG}` = '{self.fingerprint}'"
                ),
                order_by=["attributes.start_time DESC"],
                max_results=1,
            )
            if runs:
                run_id = runs[0].info.run_id
                self.client.update_run(run_id, status="RUNNING")
                self.client.set_tag(run_id, SWEPT_FIELDS_TAG, json.dumps(fields))  # the grid may have grown
                return run_id, True
        tags = {
            SWEEP_TAG: "true",
            SWEEP_NAME_TAG: self.spec.name,
            SWEEP_SPEC_TAG: self.fingerprint,
            SWEPT_FIELDS_TAG: json.dumps(fields),
            "lightning_bnn.sweep_metric": self.spec.metric,
            "mlflow.runName": self.spec.name,
        }
        run = self.client.create_run(self.experiment_id, run_name=self.spec.name, tags=tags)
        run_id = run.info.run_id
        params = {
            "sweep.base": str(self.spec.base),
            "sweep.method": "grid",
            "sweep.trials": str(len(self.spec.trials())),
            "sweep.extra_args": " ".join(self.extra)[:6000],
            **{f"sweep.fixed.{k}": cli_value(v)[:6000] for k, v in self.spec.fixed.items()},
            **{f"sweep.grid.{k}": json.dumps(v)[:6000] for k, v in self.spec.grid.items()},
        }
        for key, value in params.items():
            self.client.log_param(run_id, key, value)
        with tempfile.TemporaryDirectory() as tmp:
            spec_file = Path(tmp) / "sweep.yaml"
            spec_file.write_text(
                yaml.safe_dump(
                    {
                        "name": self.spec.name,
                        "base": str(self.spec.base),
                        "experiment": self.experiment,
                        "metric": self.spec.metric,
                        "mode": self.spec.mode,
                        "fixed": self.spec.fixed,
                        "grid": self.spec.grid,
                        "extra_args": self.extra,
                    },
                    sort_keys=False,
                )
            )
            self.client.log_artifact(run_id, str(spec_file))
        return run_id, False

    def finished_trials(self) -> dict[str, str]:
        """Trial key -> run id of the parent's FINISHED children."""
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{PARENT_TAG}` = '{self.parent_id}' and attributes.status = 'FINISHED'",
            max_results=10000,
        )
        return {r.data.tags[TRIAL_VALUES_TAG]: r.info.run_id for r in runs if TRIAL_VALUES_TAG in r.data.tags}

    def _child(self, trial_id: str) -> Any | None:
        runs = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`{TRIAL_TAG}` = '{trial_id}'", max_results=1
        )
        return runs[0] if runs else None

    # -- trials -------------------------------------------------------------------------------------
    def _env(self, trial_id: str, values: dict[str, Any]) -> dict[str, str]:
        env = dict(os.environ)
        try:  # keep tags the caller put in MLFLOW_RUN_CONTEXT
            context = dict(json.loads(env.get("MLFLOW_RUN_CONTEXT") or "{}"))
        except (json.JSONDecodeError, TypeError, ValueError):
            context = {}
        context |= {
            PARENT_TAG: self.parent_id,
            SWEEP_NAME_TAG: self.spec.name,
            TRIAL_TAG: trial_id,
            TRIAL_VALUES_TAG: trial_key(values),
        }
        env["MLFLOW_RUN_CONTEXT"] = json.dumps(context)
        package_root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        if "OMP_NUM_THREADS" not in env:  # share the cores between the parallel trials
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // self.jobs))
        return env

    def run_trial(self, index: int, values: dict[str, Any], log_dir: Path) -> TrialResult:
        """Run one trial to completion; its output goes to ``log_dir/trial-<index>.log``."""
        if self._stopping:
            return TrialResult(index, values, "KILLED")
        trial_id = f"{self.parent_id}-{index:04d}-{int(time.time() * 1e6)}"
        run_name = f"{self.spec.name}-{index:03d}"
        cmd = trial_command(self.spec, values, self.uri, self.experiment, run_name, self.extra)
        log_path = log_dir / f"trial-{index:03d}.log"
        start = time.perf_counter()
        with open(log_path, "w") as log:
            log.write(" ".join(cmd) + "\n\n")
            log.flush()
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self._env(trial_id, values))
            with self._lock:
                self._procs[index] = proc
            code = proc.wait()
            with self._lock:
                self._procs.pop(index, None)
        seconds = time.perf_counter() - start
        child = self._child(trial_id)
        status = "FINISHED" if code == 0 else ("KILLED" if self._stopping else "FAILED")
        metric = child.data.metrics.get(self.spec.metric) if child is not None else None
        if child is not None:
            with contextlib.suppress(Exception):  # the log is a convenience; never fail the sweep on it
                self.client.log_artifact(self.parent_id, str(log_path), "trial_logs")
        if code != 0:
            tail = log_path.read_text().splitlines()[-TAIL_LINES:]
            print(f"trial {index} failed (exit {code}); last lines of {log_path}:", file=sys.stderr)
            print("\n".join(f"  | {line}" for line in tail), file=sys.stderr)
        return TrialResult(index, values, status, child.info.run_id if child else None, metric, seconds)

    @property
    def interrupted(self) -> bool:
        """Whether the sweep was stopped (Ctrl-C) before every trial ran."""
        return self._stopping

    def stop(self) -> None:
        """Terminate running trials (SIGTERM: each ends its run KILLED)."""
        self._stopping = True
        with self._lock:
            procs = list(self._procs.values())
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()

    def run(self) -> list[TrialResult]:
        """Run every trial not yet finished; returns all results (skipped ones included)."""
        trials = self.spec.trials()
        done = self.finished_trials() if self.resumed else {}
        results: list[TrialResult] = []
        todo = []
        for index, values in enumerate(trials):
            run_id = done.get(trial_key(values))
            if run_id is not None:
                results.append(TrialResult(index, values, "SKIPPED", run_id))
            else:
                todo.append((index, values))
        verb = "resuming" if self.resumed else "starting"
        print(
            f"sweep {self.spec.name!r}: {verb} parent run {self.parent_id} in experiment {self.experiment!r} "
            f"at {self.uri}: {len(trials)} trials, {len(results)} already finished, {len(todo)} to run, "
            f"{self.jobs} at a time",
            flush=True,
        )
        start = time.perf_counter()
        status = "FINISHED"
        with tempfile.TemporaryDirectory(prefix="lightning_bnn_sweep_") as tmp:
            pool = ThreadPoolExecutor(max_workers=self.jobs)
            futures = [pool.submit(self.run_trial, i, v, Path(tmp)) for i, v in todo]
            try:
                for n, future in enumerate(futures, 1):
                    result = future.result()
                    results.append(result)
                    shown = "" if result.metric is None else f" {self.spec.metric}={result.metric:.4g}"
                    print(
                        f"[{n}/{len(todo)}] trial {result.index} {result.status}{shown} "
                        f"({result.seconds:.0f} s): {trial_key(result.values)}",
                        flush=True,
                    )
            except KeyboardInterrupt:
                status = "KILLED"
                print("interrupted: stopping the running trials (finished ones are kept)", file=sys.stderr)
                for future in futures:
                    future.cancel()
                self.stop()
                pool.shutdown(wait=True, cancel_futures=True)
            else:
                pool.shutdown(wait=True)
        if status == "FINISHED" and any(r.status == "FAILED" for r in results):
            status = "FAILED"
        self._summarise(results, time.perf_counter() - start, status)
        return sorted(results, key=lambda r: r.index)

    def _summarise(self, results: list[TrialResult], seconds: float, status: str) -> None:
        ran = [r for r in results if r.status != "SKIPPED"]
        finished = self.finished_trials()
        metrics = {
            "sweep/trials_run": float(len(ran)),
            "sweep/trials_finished": float(len(finished)),
            "sweep/trials_failed": float(sum(r.status == "FAILED" for r in results)),
        }
        if ran:  # a resume with nothing left to do keeps the wall time of the sweep that ran
            metrics["sweep/wall_time_s"] = seconds
        best = self._best(list(finished.values()))
        if best is not None:
            metrics[f"best/{self.spec.metric}"] = best[1]
            self.client.set_tag(self.parent_id, "best_run_id", best[0])
            print(f"best {self.spec.metric} = {best[1]:.4g}: run {best[0]}")
        for key, value in metrics.items():
            self.client.log_metric(self.parent_id, key, value)
        self.client.set_terminated(self.parent_id, status=status)
        print(f"sweep {self.spec.name!r} {status}: {len(ran)} trials run in {seconds:.0f} s; parent {self.parent_id}")

    def _best(self, run_ids: list[str]) -> tuple[str, float] | None:
        scored = []
        for run_id in run_ids:
            value = self.client.get_run(run_id).data.metrics.get(self.spec.metric)
            if value is not None and math.isfinite(value):
                scored.append((run_id, value))
        if not scored:
            return None
        return (min if self.spec.mode == "min" else max)(scored, key=lambda item: item[1])


def build_parser() -> argparse.ArgumentParser:
    """The ``sweep`` command's options."""
    parser = argparse.ArgumentParser(
        prog="python -m lightning_bnn sweep",
        description="Run a grid sweep of training runs, recorded as one MLflow parent run with a child per trial.",
        epilog="Arguments after -- are passed to every trial's fit command (e.g. -- --trainer.max_epochs 1).",
    )
    parser.add_argument("--config", required=True, help="sweep YAML file")
    parser.add_argument("--jobs", type=int, default=1, help="trials run in parallel (default 1)")
    parser.add_argument(
        "--mlflow.tracking_uri",
        dest="tracking_uri",
        default=None,
        help="MLflow store (default: the sweep file's tracking_uri, $MLFLOW_TRACKING_URI, sqlite:///mlruns/mlflow.db)",
    )
    parser.add_argument("--new", action="store_true", help="start a new parent run instead of resuming")
    parser.add_argument("--dry-run", action="store_true", help="print the trials' commands and exit")
    return parser


def main(argv: list[str] | None = None) -> int:
    """``python -m lightning_bnn sweep``; returns 0 if every trial finished, 1 if one failed, 130 if interrupted."""
    argv = list(sys.argv[1:] if argv is None else argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    try:
        spec = load_spec(args.config)
        spec.trials()
        if args.dry_run:
            for index, values in enumerate(spec.trials()):
                uri = args.tracking_uri or spec.tracking_uri or "<default store>"
                name = f"{spec.name}-{index:03d}"
                print(" ".join(trial_command(spec, values, uri, spec.experiment or spec.name, name, extra)))
            return 0
        sweep = Sweep(spec, args.tracking_uri, args.jobs, extra, args.new)
    except (SweepError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        results = sweep.run()
    except KeyboardInterrupt:  # pragma: no cover - interrupted outside the trial loop
        sweep.stop()
        return 130
    if sweep.interrupted:
        return 130
    return 1 if any(r.status == "FAILED" for r in results) else 0
