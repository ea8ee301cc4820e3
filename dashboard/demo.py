"""Train the two bundled demo runs (toy regression, digits) from the dashboard's first screen.

Each demo is ``python -m lightning_bnn fit`` in a subprocess (so Lightning's global
state never leaks into the Streamlit server), with shortened settings that finish
well under two minutes on 2 CPU cores. Progress is the number of epochs each run has
recorded in the store (its ``train/epoch_time_s`` history), polled while they train.
No Streamlit calls here: the page passes a progress callback.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "lightning_bnn" / "configs"
EPOCH_METRIC = "train/epoch_time_s"


@dataclass
class Demo:
    """One demo run: a bundled config plus overrides that keep it short."""

    name: str
    config: str
    epochs: int
    overrides: list[str] = field(default_factory=list)

    @property
    def run_name(self) -> str:
        """The MLflow run name of this demo."""
        return f"demo-{self.name}"


#: the demos, trained concurrently (one per core)
DEMOS = [
    Demo("toy-regression", "toy_regression.yaml", 60),
    Demo("digits", "digits.yaml", 10, ["--model.hidden_sizes", "[64]"]),
]


class DemoError(RuntimeError):
    """A demo run failed; the message carries the end of its log."""


def demo_command(demo: Demo, uri: str) -> list[str]:
    """The ``python -m lightning_bnn fit`` command line of a demo."""
    return [
        sys.executable,
        "-m",
        "lightning_bnn",
        "fit",
        "--config",
        str(CONFIGS / demo.config),
        "--mlflow.tracking_uri",
        uri,
        "--mlflow.run_name",
        demo.run_name,
        "--trainer.max_epochs",
        str(demo.epochs),
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.enable_model_summary",
        "false",
        *demo.overrides,
    ]


def working_dir(uri: str) -> Path:
    """Where a demo runs: the folder holding the SQLite store's ``mlruns/`` (checkpoints go beside it)."""
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///") :]).parent.parent
    return REPO


def epochs_done(uri: str, run_names: list[str]) -> dict[str, int]:
    """Epochs recorded so far by the newest run of each name (0 when not started)."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    done = dict.fromkeys(run_names, 0)
    try:
        experiments = [e.experiment_id for e in client.search_experiments()]
        if not experiments:
            return done
        for name in run_names:
            runs = client.search_runs(
                experiments,
                filter_string=f"attributes.run_name = '{name}'",
                order_by=["attributes.start_time DESC"],
                max_results=1,
            )
            if runs:
                done[name] = len(client.get_metric_history(runs[0].info.run_id, EPOCH_METRIC))
    except Exception:  # noqa: BLE001 - the store may be mid-creation by the subprocesses
        pass
    return done


def train_demos(
    uri: str,
    on_progress: Callable[[float, str], None] | None = None,
    demos: list[Demo] | None = None,
    poll_s: float = 1.0,
    timeout_s: float = 600.0,
) -> list[str]:
    """Train the demos concurrently into ``uri``; returns their run names.

    Args:
        uri: the (resolved) tracking URI.
        on_progress: called with (fraction done in [0, 1], status text) while training.
        demos: the demos (default :data:`DEMOS`).
        poll_s: seconds between progress polls.
        timeout_s: give up (and stop the subprocesses) after this long.

    Raises:
        DemoError: a demo exited with an error or the time ran out.
    """
    demos = demos or DEMOS
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("OMP_NUM_THREADS", "1")
    cwd = working_dir(uri)
    cwd.mkdir(parents=True, exist_ok=True)
    from mlflow import MlflowClient

    # Create the store's tables here: two processes initialising a new SQLite store at once race.
    MlflowClient(uri).search_experiments()
    total = sum(d.epochs for d in demos)
    with tempfile.TemporaryDirectory() as tmp:
        logs = {d.name: Path(tmp) / f"{d.name}.log" for d in demos}
        procs = {}
        for d in demos:
            with open(logs[d.name], "wb") as log:
                procs[d.name] = subprocess.Popen(
                    demo_command(d, uri), cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT
                )
        start = time.monotonic()
        try:
            while True:
                finished = {name: p.poll() for name, p in procs.items()}
                done = epochs_done(uri, [d.run_name for d in demos])
                fraction = sum(min(done[d.run_name], d.epochs) for d in demos) / total
                status = ", ".join(f"{d.name}: epoch {min(done[d.run_name], d.epochs)}/{d.epochs}" for d in demos)
                if on_progress:
                    on_progress(min(fraction, 0.99) if None in finished.values() else 1.0, status)
                failed = [name for name, code in finished.items() if code not in (None, 0)]
                if failed:
                    tail = logs[failed[0]].read_text(errors="replace").strip().splitlines()[-8:]
                    raise DemoError(f"demo '{failed[0]}' failed:\n" + "\n".join(tail))
                if all(code == 0 for code in finished.values()):
                    return [d.run_name for d in demos]
                if time.monotonic() - start > timeout_s:
                    raise DemoError(f"the demos did not finish in {timeout_s:.0f} s")
                time.sleep(poll_s)
        finally:
            for p in procs.values():
                if p.poll() is None:
                    p.terminate()
                    try:
                        p.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        p.kill()
