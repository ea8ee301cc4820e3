"""Sweeps on Optuna: ``python -m lightning_bnn sweep --config SWEEP.yaml [--jobs N] [--worker] [-- fit args]``.

The sweep file (see :mod:`lightning_bnn.cli.sweep_spec`) becomes an Optuna **study** in an RDB
storage: by default ``optuna.db`` beside the MLflow SQLite store (``mlruns/optuna.db``),
or any SQLAlchemy URL (``--storage postgresql://USER:PASS@HOST/optuna``). The study's
name is the sweep's name (``--study`` overrides it); running the command again resumes
the study, and ``--worker`` processes started on other machines join it.

* **Trials** are ``python -m lightning_bnn fit --config BASE --model.prior.pi 0.25 ...``
  subprocesses (Lightning's state never leaks between trials), ``--jobs`` of them at a
  time in each worker. ``grid`` enqueues every point once when the study is created;
  workers pop them from the queue, so no point runs twice. ``random`` and ``tpe`` ask
  Optuna's sampler until the study holds ``trials`` trials.
* **MLflow**: one parent run per study (tags ``lightning_bnn.sweep``,
  ``lightning_bnn.optuna_study``, ``lightning_bnn.optuna_storage``, ``swept_fields``)
  and one child run per trial (tags ``mlflow.parentRunId``, ``lightning_bnn.optuna_trial``,
  ``lightning_bnn.optuna_study``), which records the trial's values as its params. The
  child's tags reach the trial through MLflow's ``MLFLOW_RUN_CONTEXT`` environment
  variable. When a worker ends, the parent gets the tags ``best_run_id`` and
  ``lightning_bnn.best_trial`` and the metric ``best/<metric>``.
* **Pruning**: with a pruner, each trial's fit reports the metric after every validation
  epoch through :class:`lightning_bnn.cli.sweep_trial.OptunaPruning`; a pruned fit stops,
  its run ends ``FINISHED`` with the tag ``lightning_bnn.pruned = true`` and the trial ends
  ``PRUNED``.
* **Failures**: workers beat a heartbeat for their running trials; a trial whose worker
  died (killed, machine lost) fails after the grace period and is enqueued again. A trial
  whose fit exits with an error ends ``FAIL`` (not retried). Ctrl-C or SIGTERM stops the
  running fits (their runs end ``KILLED``) and enqueues their trials again.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from lightning_bnn.cli.sweep_spec import SweepError, SweepSpec, cli_value, load_spec, make_pruner, param_name
from lightning_bnn.cli.sweep_trial import PRUNED_ATTR, TRIAL_ENV, open_storage, trial_env
from lightning_bnn.tracking.heartbeat import Heartbeat

__all__ = ["SweepError", "SweepSpec", "load_spec", "main", "param_name"]

SWEEP_TAG = "lightning_bnn.sweep"
SWEEP_NAME_TAG = "lightning_bnn.sweep_name"
SWEPT_FIELDS_TAG = "swept_fields"
STUDY_TAG = "lightning_bnn.optuna_study"
STORAGE_TAG = "lightning_bnn.optuna_storage"
TRIAL_NUMBER_TAG = "lightning_bnn.optuna_trial"
TRIAL_TOKEN_TAG = "lightning_bnn.sweep_trial"
PRUNED_TAG = "lightning_bnn.pruned"
PARENT_TAG = "mlflow.parentRunId"
#: study user attributes
PARENT_ATTR = "lightning_bnn.parent_run_id"
FINGERPRINT_ATTR = "lightning_bnn.fingerprint"
#: trial user attributes
RUN_ID_ATTR = "mlflow_run_id"
SURPLUS_ATTR = "lightning_bnn.surplus"
PRUNING_CALLBACK = "lightning_bnn.cli.sweep_trial.OptunaPruning"
#: lines of a failed trial's output shown on the console
TAIL_LINES = 15
#: seconds a joining worker waits for the creating worker to set the study up
SETUP_WAIT_S = 120


def default_storage(tracking_uri: str) -> str:
    """``optuna.db`` beside a SQLite MLflow store, else ``./mlruns/optuna.db``.

    Optuna and MLflow both keep their schema version in a table named ``alembic_version``,
    so a study never shares MLflow's database: on PostgreSQL, give it its own database.
    """
    from lightning_bnn.tracking.store import store_folder

    folder = store_folder(tracking_uri) or Path.cwd() / "mlruns"
    return f"sqlite:///{Path(folder).resolve()}/optuna.db"


def public_url(url: str) -> str:
    """``url`` without its password (what the parent run records)."""
    from sqlalchemy.engine import make_url

    with contextlib.suppress(Exception):
        return make_url(url).set(password=None).render_as_string(hide_password=False)
    return url.split("@")[-1] if "@" in url else url


def trial_command(
    spec: SweepSpec, values: dict[str, Any], uri: str, experiment: str, run_name: str, extra: list[str]
) -> list[str]:
    """The ``fit`` command line of one trial (``values``: config key -> value)."""
    cmd = [sys.executable, "-m", "lightning_bnn", "fit", "--config", str(spec.base)]
    for key, value in {**spec.fixed, **values}.items():
        cmd += [f"--{key}", cli_value(value)]
    cmd += ["--mlflow.tracking_uri", uri, "--mlflow.experiment", experiment, "--mlflow.run_name", run_name]
    if spec.pruner is not None:
        cmd += [f"--trainer.callbacks+={PRUNING_CALLBACK}"]
    cmd += ["--trainer.enable_progress_bar", "false", *extra]
    return cmd


def example_values(spec: SweepSpec) -> dict[str, Any]:
    """One point of the space (config key -> value): the first choice, or ``low``."""
    return {p.key: p.choices[0] if p.type == "categorical" else p.low for p in spec.space}


def check_command(spec: SweepSpec, extra: list[str]) -> None:
    """Parse one trial's command with ``--print_config`` (nothing is trained): unknown fields fail here.

    Raises:
        SweepError: with the ``fit`` parser's message, which names the field.
    """
    cmd = trial_command(spec, example_values(spec), "sqlite:///:memory:", "check", "check", extra)
    result = subprocess.run(
        [*cmd, "--print_config"], capture_output=True, text=True, env=_package_env(dict(os.environ)), check=False
    )
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        reason = next((line for line in reversed(lines) if "error" in line.lower()), lines[-1] if lines else "")
        raise SweepError(f"the fit command refuses this sweep's fields: {reason.strip()}")


def _package_env(env: dict[str, str]) -> dict[str, str]:
    package_root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    return env


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the fit gets SIGTERM when its worker dies, so a killed worker leaves no orphan training."""
    import ctypes

    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Sweep:
    """One worker of a study: creates or joins it, runs trials until none is left (see the module docstring)."""

    def __init__(
        self,
        spec: SweepSpec,
        *,
        tracking_uri: str | None = None,
        storage: str | None = None,
        study_name: str | None = None,
        jobs: int = 1,
        extra: list[str] | None = None,
        worker: bool = False,
        heartbeat: int = 20,
        check: bool = True,
    ) -> None:
        import optuna
        from mlflow import MlflowClient

        from lightning_bnn.tracking.store import ensure_experiment, prepare_sqlite_store, resolve_tracking_uri

        self.spec = spec
        self.uri = resolve_tracking_uri(tracking_uri or spec.tracking_uri)
        prepare_sqlite_store(self.uri)
        self.storage_url = storage or spec.storage or default_storage(self.uri)
        self.study_name = study_name or spec.name
        self.jobs = jobs
        self.extra = list(extra or [])
        self.heartbeat = heartbeat
        self.client = MlflowClient(self.uri)
        self.experiment = spec.experiment or spec.name
        self.experiment_id = ensure_experiment(self.client, self.experiment, self.uri)
        self.fingerprint = spec.fingerprint(self.extra)
        self.storage = open_storage(self.storage_url, heartbeat_interval=heartbeat, grace_period=3 * heartbeat)
        seed = spec.seed
        if worker:  # several workers with one seed would draw the same points
            seed = random.Random(f"{spec.seed}-{socket.gethostname()}-{os.getpid()}").randrange(2**31)
        self.sampler = self._sampler(seed)
        self.pruner = make_pruner(spec.pruner, spec.pruner_args)
        self.created = False
        if check and self.study_name not in optuna.get_all_study_names(self.storage):
            check_command(spec, self.extra)  # a bad field fails before the study exists
        try:
            self.study = optuna.create_study(
                study_name=self.study_name,
                storage=self.storage,
                sampler=self.sampler,
                pruner=self.pruner,
                direction=spec.direction,
            )
            self.created = True
        except optuna.exceptions.DuplicatedStudyError:
            self.study = optuna.load_study(
                study_name=self.study_name, storage=self.storage, sampler=self.sampler, pruner=self.pruner
            )
        if self.created:
            self.parent_id = self._set_up()
        else:
            self.parent_id = self._joined()
        self._procs: dict[int, subprocess.Popen] = {}
        self._running: set[int] = set()
        self._lock = threading.Lock()
        self._ask_lock = threading.Lock()
        self._stopping = threading.Event()
        self.failed = 0

    def _sampler(self, seed: int) -> Any:
        import optuna

        args = dict(self.spec.sampler_args)
        if self.spec.sampler == "tpe":
            args.setdefault("constant_liar", True)  # parallel trials keep away from each other's points
            return optuna.samplers.TPESampler(seed=seed, **args)
        return optuna.samplers.RandomSampler(seed=seed)

    # -- set-up -------------------------------------------------------------------------------------
    def _set_up(self) -> str:
        """The creating worker: enqueue the grid, create the parent run, then publish its id (last)."""
        study = self.study
        study.set_user_attr(FINGERPRINT_ATTR, self.fingerprint)
        if self.spec.sampler == "grid":
            points = self.spec.grid()
            if self.spec.trials < len(points):
                points = random.Random(self.spec.seed).sample(points, self.spec.trials)
            for point in points:
                study.enqueue_trial(point)
        fields = [p.name for p in self.spec.space]
        tags = {
            SWEEP_TAG: "true",
            SWEEP_NAME_TAG: self.spec.name,
            SWEPT_FIELDS_TAG: json.dumps(fields),
            STUDY_TAG: self.study_name,
            STORAGE_TAG: public_url(self.storage_url),
            "lightning_bnn.sweep_metric": self.spec.metric,
            "lightning_bnn.sweep_sampler": self.spec.sampler,
            "mlflow.runName": self.study_name,
        }
        run = self.client.create_run(self.experiment_id, run_name=self.study_name, tags=tags)
        run_id = run.info.run_id
        params = {
            "sweep.base": str(self.spec.base),
            "sweep.sampler": self.spec.sampler,
            "sweep.trials": str(self.spec.trials),
            "sweep.pruner": str(self.spec.pruner),
            "sweep.extra_args": " ".join(self.extra)[:6000],
        }
        for key, value in params.items():
            self.client.log_param(run_id, key, value)
        if self.spec.source is not None:  # the sweep file as written (its space, fixed values, pruner options)
            self.client.log_artifact(run_id, str(self.spec.source))
        study.set_user_attr(PARENT_ATTR, run_id)
        return run_id

    def _joined(self) -> str:
        """A joining worker: check the study is this sweep's, wait for its parent run id."""
        deadline = time.monotonic() + SETUP_WAIT_S
        while True:
            attrs = self.study.user_attrs
            if attrs.get(FINGERPRINT_ATTR) not in (None, self.fingerprint):
                raise SweepError(
                    f"study {self.study_name!r} in {public_url(self.storage_url)} was created from a different sweep "
                    "(base config, fixed values, space, metric or extra fit arguments differ); "
                    "use --study NAME to start another study"
                )
            if PARENT_ATTR in attrs:
                break
            if time.monotonic() > deadline:
                raise SweepError(
                    f"study {self.study_name!r} exists but its creating worker never finished setting it up "
                    f"(no {PARENT_ATTR}); delete it (optuna delete-study --study-name {self.study_name} "
                    f"--storage URL) or use --study NAME"
                )
            time.sleep(1)
        parent_id = attrs[PARENT_ATTR]
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_run(parent_id)
        except MlflowException:
            raise SweepError(
                f"the parent run {parent_id} of study {self.study_name!r} is not in the MLflow store {self.uri}: "
                "give every worker the store of the first one (--mlflow.tracking_uri)"
            ) from None
        self.client.update_run(parent_id, status="RUNNING")
        return parent_id

    # -- trials -------------------------------------------------------------------------------------
    def _next_trial(self) -> Any | None:
        """The next trial to run (popped from the queue or sampled), or None when there is none now."""
        import optuna
        from optuna.trial import TrialState

        with self._ask_lock:
            optuna.storages.fail_stale_trials(self.study)  # a dead worker's trials fail and are enqueued again
            trials = self.study.get_trials(deepcopy=False)
            waiting = any(t.state == TrialState.WAITING for t in trials)
            if not waiting and (self.spec.sampler == "grid" or _counted(trials) >= self.spec.trials):
                return None
            trial = self.study.ask()
            enqueued = "fixed_params" in self.storage.get_trial_system_attrs(trial._trial_id)
            if self.spec.sampler == "grid" and not enqueued:
                # another worker popped the last point between our look and our ask: a trial with no point
                trial.set_user_attr(SURPLUS_ATTR, True)
                self.study.tell(trial, state=TrialState.FAIL)
                return None
            with self._lock:
                self._running.add(trial._trial_id)
            self.storage.record_heartbeat(trial._trial_id)
            return trial

    def _env(self, trial: Any, token: str) -> dict[str, str]:
        env = dict(os.environ)
        try:  # keep tags the caller put in MLFLOW_RUN_CONTEXT
            context = dict(json.loads(env.get("MLFLOW_RUN_CONTEXT") or "{}"))
        except (json.JSONDecodeError, TypeError, ValueError):
            context = {}
        context |= {
            PARENT_TAG: self.parent_id,
            SWEEP_NAME_TAG: self.spec.name,
            STUDY_TAG: self.study_name,
            TRIAL_NUMBER_TAG: str(trial.number),
            TRIAL_TOKEN_TAG: token,
        }
        env["MLFLOW_RUN_CONTEXT"] = json.dumps(context)
        if self.spec.pruner is not None:
            env[TRIAL_ENV] = trial_env(
                self.storage_url, self.study_name, trial._trial_id, self.spec.metric, self.spec.pruner,
                self.spec.pruner_args,
            )  # fmt: skip
        if "OMP_NUM_THREADS" not in env:  # share the cores between the parallel trials
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // self.jobs))
        return _package_env(env)

    def run_trial(self, trial: Any, log_dir: Path) -> str:
        """Run one trial's fit and tell Optuna how it ended; returns the trial's state name."""
        from optuna.trial import TrialState

        params = {p.name: p.suggest(trial) for p in self.spec.space}
        values = {p.key: params[p.name] for p in self.spec.space}
        token = f"{self.study_name}-{trial.number}-{uuid.uuid4().hex[:12]}"
        run_name = f"{self.study_name}-{trial.number:03d}"
        cmd = trial_command(self.spec, values, self.uri, self.experiment, run_name, self.extra)
        log_path = log_dir / f"trial-{trial.number:03d}.log"
        start = time.perf_counter()
        with open(log_path, "w") as log:
            log.write(" ".join(cmd) + "\n\n")
            log.flush()
            preexec = _die_with_parent if sys.platform == "linux" else None
            proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=self._env(trial, token), preexec_fn=preexec
            )
            with self._lock:
                self._procs[trial.number] = proc
            code = proc.wait()
            with self._lock:
                self._procs.pop(trial.number, None)
        seconds = time.perf_counter() - start
        child = self._child(token)
        if child is not None:
            trial.set_user_attr(RUN_ID_ATTR, child.info.run_id)
            with contextlib.suppress(Exception):  # the log is a convenience; never fail the sweep on it
                self.client.log_artifact(self.parent_id, str(log_path), "trial_logs")
        value = child.data.metrics.get(self.spec.metric) if child is not None else None
        pruned_at = self.storage.get_trial_user_attrs(trial._trial_id).get(PRUNED_ATTR)
        try:
            if self._stopping.is_set():
                state = self._interrupted(trial)
            elif code == 0 and pruned_at is not None:
                if child is not None:
                    self.client.set_tag(child.info.run_id, PRUNED_TAG, "true")
                    self.client.set_tag(child.info.run_id, "lightning_bnn.pruned_at_epoch", str(pruned_at))
                self.study.tell(trial, state=TrialState.PRUNED)
                state = "PRUNED"
            elif code == 0 and value is not None:
                self.study.tell(trial, value)
                state = "COMPLETE"
            else:
                if code == 0:
                    print(f"trial {trial.number}: its run logged no {self.spec.metric}", file=sys.stderr)
                else:
                    tail = log_path.read_text().splitlines()[-TAIL_LINES:]
                    print(f"trial {trial.number} failed (exit {code}); last lines of its output:", file=sys.stderr)
                    print("\n".join(f"  | {line}" for line in tail), file=sys.stderr)
                self.study.tell(trial, state=TrialState.FAIL)
                self.failed += 1
                state = "FAIL"
        finally:
            with self._lock:
                self._running.discard(trial._trial_id)
        shown = "" if value is None else f" {self.spec.metric}={value:.4g}"
        print(f"trial {trial.number} {state}{shown} ({seconds:.0f} s): {json.dumps(params)}", flush=True)
        return state

    def _interrupted(self, trial: Any) -> str:
        """A trial stopped by Ctrl-C/SIGTERM: FAIL, and a copy enqueued so that a resume runs it again."""
        import optuna
        from optuna.trial import TrialState

        frozen = self.study.tell(trial, state=TrialState.FAIL)
        optuna.storages.RetryHeartbeatStaleTrialCallback()(self.study, frozen)
        return "KILLED"

    def _child(self, token: str) -> Any | None:
        runs = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`{TRIAL_TOKEN_TAG}` = '{token}'", max_results=1
        )
        return runs[0] if runs else None

    def _beat(self) -> None:
        """Record a heartbeat for this worker's running trials every ``heartbeat`` seconds."""
        while not self._done.wait(self.heartbeat):
            with self._lock:
                running = list(self._running)
            for trial_id in running:
                with contextlib.suppress(Exception):
                    self.storage.record_heartbeat(trial_id)

    def _loop(self, log_dir: Path) -> None:
        """One lane of this worker: run trials until the study has none waiting or running."""
        from optuna.trial import TrialState

        while not self._stopping.is_set():
            trial = self._next_trial()
            if trial is not None:
                self.run_trial(trial, log_dir)
                continue
            states = [t.state for t in self.study.get_trials(deepcopy=False)]
            if TrialState.RUNNING not in states and TrialState.WAITING not in states:
                return
            # others are still running: one may die and be enqueued again, so stay until they end
            self._stopping.wait(min(self.heartbeat, 5))

    @property
    def interrupted(self) -> bool:
        """Whether the worker was stopped (Ctrl-C, SIGTERM)."""
        return self._stopping.is_set()

    def stop(self) -> None:
        """Terminate the running fits (SIGTERM: each ends its run KILLED); their trials are enqueued again."""
        self._stopping.set()
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

    def run(self) -> None:
        """Run trials ``jobs`` at a time until the study is done (or the worker is stopped), then summarise."""
        verb = "created" if self.created else "joined"
        print(
            f"sweep {self.spec.name!r}: {verb} study {self.study_name!r} in {public_url(self.storage_url)} "
            f"({self.spec.sampler}, budget {self.spec.trials}, "
            f"{_counted(self.study.get_trials())} trials queued or run); "
            f"parent run {self.parent_id} in experiment {self.experiment!r} at {self.uri}; {self.jobs} at a time",
            flush=True,
        )
        self._done = threading.Event()
        beat = threading.Thread(target=self._beat, daemon=True)
        beat.start()
        # the parent run beats while this worker runs, so it is not shown as stalled (tracking.heartbeat)
        with Heartbeat(self.client, self.parent_id), tempfile.TemporaryDirectory(prefix="lightning_bnn_sweep_") as tmp:
            pool = ThreadPoolExecutor(max_workers=self.jobs)
            futures = [pool.submit(self._loop, Path(tmp)) for _ in range(self.jobs)]
            try:
                for future in futures:
                    future.result()
            except KeyboardInterrupt:
                print("interrupted: stopping the running trials (they will run again on resume)", file=sys.stderr)
                self.stop()
                pool.shutdown(wait=True, cancel_futures=True)
            else:
                pool.shutdown(wait=True)
            finally:
                self._done.set()
        self.summarise()

    def summarise(self) -> None:
        """Tag the best trial on the parent; end the parent when the study has nothing waiting or running."""
        from optuna.trial import TrialState

        trials = [t for t in self.study.get_trials(deepcopy=False) if not t.user_attrs.get(SURPLUS_ATTR)]
        counts = {state: sum(t.state == state for t in trials) for state in TrialState}
        metrics = {
            "sweep/trials_complete": float(counts[TrialState.COMPLETE]),
            "sweep/trials_pruned": float(counts[TrialState.PRUNED]),
            "sweep/trials_failed": float(counts[TrialState.FAIL]),
        }
        starts = [t.datetime_start for t in trials if t.datetime_start]
        ends = [t.datetime_complete for t in trials if t.datetime_complete]
        if starts and ends:
            metrics["sweep/wall_time_s"] = (max(ends) - min(starts)).total_seconds()
        if counts[TrialState.COMPLETE]:
            best = self.study.best_trial
            metrics[f"best/{self.spec.metric}"] = float(best.value)
            self.client.set_tag(self.parent_id, "lightning_bnn.best_trial", str(best.number))
            if RUN_ID_ATTR in best.user_attrs:
                self.client.set_tag(self.parent_id, "best_run_id", best.user_attrs[RUN_ID_ATTR])
            print(f"best {self.spec.metric} = {best.value:.4g}: trial {best.number} {json.dumps(best.params)}")
        for key, value in metrics.items():
            self.client.log_metric(self.parent_id, key, value)
        active = counts[TrialState.RUNNING] + counts[TrialState.WAITING]
        if not active:
            self.client.set_terminated(self.parent_id, status="FINISHED")
        elif self.interrupted and not counts[TrialState.RUNNING]:
            self.client.set_terminated(self.parent_id, status="KILLED")
        print(
            f"sweep {self.spec.name!r}: {metrics['sweep/trials_complete']:.0f} complete, "
            f"{metrics['sweep/trials_pruned']:.0f} pruned, {metrics['sweep/trials_failed']:.0f} failed, "
            f"{active} waiting or running; parent {self.parent_id}"
        )


def _counted(trials: list[Any]) -> int:
    """Trials that use the budget: all but surplus ones and failures that were enqueued again."""
    from optuna.trial import TrialState

    retried = {t.system_attrs.get("failed_trial") for t in trials}
    return sum(
        1
        for t in trials
        if not t.user_attrs.get(SURPLUS_ATTR) and not (t.state == TrialState.FAIL and t.number in retried)
    )


def _quiet_optuna() -> None:
    """Keep the console to our lines: Optuna's heartbeat API is marked experimental, and warns so on every trial."""
    import warnings

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")


def build_parser() -> argparse.ArgumentParser:
    """The ``sweep`` command's options."""
    parser = argparse.ArgumentParser(
        prog="python -m lightning_bnn sweep",
        description="Run an Optuna study of training runs, recorded as one MLflow parent run with a child per trial.",
        epilog="Arguments after -- are passed to every trial's fit command (e.g. -- --trainer.max_epochs 1).",
    )
    parser.add_argument("--config", required=True, help="sweep YAML file")
    parser.add_argument("--jobs", type=int, default=1, help="trials run in parallel by this process (default 1)")
    parser.add_argument(
        "--mlflow.tracking_uri",
        dest="tracking_uri",
        default=None,
        help="MLflow store (default: the sweep file's tracking_uri, $MLFLOW_TRACKING_URI, sqlite:///mlruns/mlflow.db)",
    )
    parser.add_argument(
        "--storage",
        default=None,
        help="Optuna storage URL (default: the sweep file's storage, else optuna.db beside the MLflow SQLite "
        "store, else mlruns/optuna.db); e.g. postgresql://USER:PASS@HOST:5432/optuna",
    )
    parser.add_argument("--study", default=None, help="study name (default: the sweep's name)")
    parser.add_argument(
        "--worker",
        action="store_true",
        help="join the study as one of several workers (its sampler draws from its own random stream)",
    )
    parser.add_argument(
        "--heartbeat",
        type=int,
        default=20,
        help="seconds between heartbeats of running trials; a trial silent for 3x this is retried (default 20)",
    )
    parser.add_argument("--no-check", action="store_true", help="skip parsing one trial's fit command first")
    parser.add_argument("--dry-run", action="store_true", help="print the trials' commands (grid) or one example")
    return parser


def main(argv: list[str] | None = None) -> int:
    """``python -m lightning_bnn sweep``; 0 if every trial of this worker ran, 1 if one failed, 130 if stopped."""
    argv = list(sys.argv[1:] if argv is None else argv)
    _quiet_optuna()
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1 :]
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs must be >= 1, got {args.jobs}")
    if args.heartbeat < 1:
        parser.error(f"--heartbeat must be >= 1 second, got {args.heartbeat}")
    try:
        spec = load_spec(args.config)
        if args.dry_run:
            uri = args.tracking_uri or spec.tracking_uri or "<default store>"
            points = [{spec.key_of(k): v for k, v in p.items()} for p in spec.grid()] if spec.sampler == "grid" else []
            for index, values in enumerate(points or [example_values(spec)]):
                name = f"{spec.name}-{index:03d}"
                print(" ".join(trial_command(spec, values, uri, spec.experiment or spec.name, name, extra)))
            return 0
        sweep = Sweep(
            spec,
            tracking_uri=args.tracking_uri,
            storage=args.storage,
            study_name=args.study,
            jobs=args.jobs,
            extra=extra,
            worker=args.worker,
            heartbeat=args.heartbeat,
            check=not args.no_check,
        )
    except (SweepError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    previous = None
    if threading.current_thread() is threading.main_thread():  # SIGTERM stops the worker as Ctrl-C does

        def _terminate(signum: int, frame: Any) -> None:
            raise KeyboardInterrupt

        previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        sweep.run()
    except KeyboardInterrupt:  # pragma: no cover - interrupted outside the trial loop
        sweep.stop()
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if sweep.interrupted:
        return 130
    return 1 if sweep.failed else 0
