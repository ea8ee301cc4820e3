"""Helpers of the reliability tests: real ``python -m lightning_bnn`` jobs in subprocesses.

Each job runs in its own process against a temporary SQLite store, exactly as a user
starts it from a shell; the tests then read the store back through ``MlflowClient``.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from bnn_testing import CONFIGS, cli_env, fit_args

DIGITS = CONFIGS / "digits.yaml"
#: a tiny digits job: two epochs of a 16-unit network, few evaluation samples
TINY = (
    "--trainer.max_epochs",
    "2",
    "--model.hidden_sizes",
    "[16]",
    "--model.num_samples_eval",
    "2",
)
#: metrics that measure wall time, not the model: excluded from "same to the last digit"
TIMING_METRICS = ("train/epoch_time_s",)


def store_uri(root: Path) -> str:
    """A SQLite tracking URI in ``root/mlruns`` (the folder is created)."""
    (root / "mlruns").mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root}/mlruns/mlflow.db"


def _default_sigint() -> None:
    # A test suite started in the background by a non-interactive shell (`pytest &`, nohup) inherits
    # SIGINT ignored, and so would the job: Python then never raises KeyboardInterrupt. Give the job
    # the disposition an interactive user's job has.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def spawn(args: list[str], cwd: Path, log: Path) -> subprocess.Popen:
    """Start ``python -m lightning_bnn ARGS`` in ``cwd``, its output going to ``log``."""
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "lightning_bnn", *args],
            cwd=cwd,
            env=cli_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=_default_sigint,
        )


def spawn_fit(root: Path, name: str, *extra: str, config: Path = DIGITS) -> subprocess.Popen:
    """Start a real ``fit`` job on the store in ``root``; its log is ``root/<name>.log``."""
    return spawn(fit_args(config, store_uri(root), *extra), root, root / f"{name}.log")


def wait(proc: subprocess.Popen, timeout: float = 420) -> int:
    """Exit code of ``proc``; kills it (and fails the test) if it runs past ``timeout`` seconds."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        pytest.fail(f"job {proc.args} ran past {timeout} s")


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 300) -> None:
    """Wait until ``path`` exists, failing early if ``proc`` exits first."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(f"job exited with {proc.returncode} before reaching {path.name}")
        if time.monotonic() > deadline:
            proc.send_signal(signal.SIGKILL)
            pytest.fail(f"job did not reach {path.name} within {timeout} s")
        time.sleep(0.05)


def metric_histories(client, run_id: str) -> dict[str, list[tuple[int, float]]]:
    """Every metric of a run as its full history of (step, value), sorted by step."""
    run = client.get_run(run_id)
    return {key: sorted((m.step, m.value) for m in client.get_metric_history(run_id, key)) for key in run.data.metrics}
