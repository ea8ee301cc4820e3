"""Run lifecycle in MLflow: FAILED on an exception, KILLED on SIGTERM/Ctrl-C with a checkpoint, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning.pytorch as L
import pytest
import torch
from bnn_testing import CONFIGS, REPO, fit_args, train
from mlflow import MlflowClient

from lightning_bnn import load_model
from lightning_bnn.tracking import artifacts
from lightning_bnn.tracking.store import CHECKPOINT_KEY

TINY = ("--model.hidden_sizes", "[16]", "--model.num_samples_eval", "4")


class RaiseAt(L.Callback):
    """Raise ``RuntimeError`` (or KeyboardInterrupt) at batch ``batch`` of epoch ``epoch``."""

    def __init__(self, epoch: int = 1, batch: int = 2, interrupt: bool = False) -> None:
        self.epoch, self.batch, self.interrupt = epoch, batch, interrupt

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            if self.interrupt:
                raise KeyboardInterrupt
            raise RuntimeError("boom: synthetic failure mid-epoch")


class Stall(L.Callback):
    """At the first batch of ``epoch``, write ``marker`` and wait (up to 120 s) for SIGTERM."""

    def __init__(self, marker: str, epoch: int = 1) -> None:
        self.marker, self.epoch = marker, epoch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch == self.epoch and batch_idx == 0:
            Path(self.marker).write_text("stalled")
            deadline = time.monotonic() + 120
            while not trainer.received_sigterm and time.monotonic() < deadline:
                time.sleep(0.05)


def callbacks(class_name: str, **init_args) -> list[str]:
    return ["--trainer.callbacks", json.dumps([{"class_path": f"test_lifecycle.{class_name}", "init_args": init_args}])]


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory) -> str:
    """One store for the module (a new SQLite store costs seconds); each test has its own experiment."""
    root = tmp_path_factory.mktemp("lifecycle_store")
    return f"sqlite:///{root}/mlflow.db"


@pytest.fixture
def tiny(request) -> tuple[str, ...]:
    """CLI arguments of a tiny model, in an experiment named after the test."""
    return (*TINY, "--mlflow.experiment", request.node.name)


def only_run(uri: str, tiny: tuple[str, ...]):
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(tiny[-1]).experiment_id])
    assert len(runs) == 1
    return runs[0]


def test_exception_mid_epoch_ends_failed_with_the_error(tracking_uri, tiny):
    with pytest.raises(RuntimeError, match="boom"):
        train(CONFIGS / "digits.yaml", tracking_uri, "--trainer.max_epochs", "3", *tiny, *callbacks("RaiseAt"))
    run = only_run(tracking_uri, tiny)
    assert run.info.status == "FAILED"
    assert run.data.tags["error.type"] == "RuntimeError"
    assert "boom: synthetic failure mid-epoch" in run.data.tags["error"]
    assert len(MlflowClient(tracking_uri).get_metric_history(run.info.run_id, "val/nll")) == 1  # epoch 0 only
    assert artifacts.LAST_CHECKPOINT not in {a.path for a in MlflowClient(tracking_uri).list_artifacts(run.info.run_id)}


def test_ctrl_c_in_the_first_epoch_ends_killed_with_a_checkpoint_of_that_moment(tracking_uri, tmp_path, tiny):
    interrupt = callbacks("RaiseAt", epoch=0, batch=2, interrupt=True)
    handler = signal.getsignal(signal.SIGINT)
    try:
        with pytest.raises(SystemExit):  # Lightning turns KeyboardInterrupt into a graceful exit(1)
            train(CONFIGS / "digits.yaml", tracking_uri, "--trainer.max_epochs", "3", *tiny, *interrupt)
    finally:
        signal.signal(signal.SIGINT, handler)  # Lightning ignores further Ctrl-C after the first
    run = only_run(tracking_uri, tiny)
    assert run.info.status == "KILLED"
    assert run.data.tags["error.type"] == "KeyboardInterrupt"
    client = MlflowClient(tracking_uri)
    ckpt = client.download_artifacts(run.info.run_id, artifacts.LAST_CHECKPOINT, str(tmp_path))
    checkpoint = torch.load(ckpt, weights_only=True, map_location="cpu")
    assert checkpoint["epoch"] == 0 and checkpoint["global_step"] == 2  # stopped before the third batch

    # resuming with a changed param: same run, the change recorded in a tag (MLflow params are immutable)
    cli = train(CONFIGS / "digits.yaml", tracking_uri, "--trainer.max_epochs", "1", *tiny, "--ckpt_path", ckpt)
    assert cli.trainer.logger.run_id == run.info.run_id
    resumed = client.get_run(run.info.run_id)
    assert resumed.info.status == "FINISHED"
    assert resumed.data.params["trainer.max_epochs"] == "3"
    assert json.loads(resumed.data.tags["resume.changed_params"]) == {"trainer.max_epochs": ["3", "1"]}


def test_sigterm_ends_killed_with_a_checkpoint_and_fit_resumes_the_same_run(tracking_uri, tmp_path, tiny):
    marker = tmp_path / "stalled"
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
    args = fit_args(CONFIGS / "digits.yaml", tracking_uri, "--trainer.max_epochs", "3", *tiny)
    args += callbacks("Stall", marker=str(marker), epoch=1)
    proc = subprocess.Popen(
        [sys.executable, "-m", "lightning_bnn", *args],
        cwd=workdir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 150
        while not marker.exists():
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            assert time.monotonic() < deadline, "training never reached epoch 1"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert list(workdir.iterdir()) == []  # nothing written relative to the working folder
    client = MlflowClient(tracking_uri)
    run = only_run(tracking_uri, tiny)
    run_id = run.info.run_id
    assert run.info.status == "KILLED", run.data.tags.get("error")
    assert run.data.tags["error.type"] == "SIGTERMException"
    ckpt = client.download_artifacts(run_id, artifacts.LAST_CHECKPOINT, str(tmp_path / "dl"))
    checkpoint = torch.load(ckpt, weights_only=True, map_location="cpu")  # plain data: no pickle needed
    assert checkpoint["epoch"] == 0 and checkpoint[CHECKPOINT_KEY]["run_id"] == run_id
    assert len(client.get_metric_history(run_id, "val/nll")) == 1

    # resume straight from the run's artifact (downloaded beside the store, then fit)
    source = f"runs:/{run_id}/{artifacts.LAST_CHECKPOINT}"
    cli = train(CONFIGS / "digits.yaml", tracking_uri, "--trainer.max_epochs", "3", *tiny, "--ckpt_path", source)
    assert cli.trainer.logger.run_id == run_id  # the same run, not a new one
    assert len(client.search_runs([run.info.experiment_id])) == 1
    resumed = client.get_run(run_id)
    assert resumed.info.status == "FINISHED"
    assert Path(resumed.data.tags["resumed_from_checkpoint"]).name == "last.ckpt"
    assert "error" not in resumed.data.tags and "SIGTERMException" in resumed.data.tags["resume.previous_error"]
    history = client.get_metric_history(run_id, "val/nll")
    assert len(history) == 3 and sorted(m.step for m in history) == [m.step for m in history]
    assert len({m.step for m in client.get_metric_history(run_id, "train/loss")}) == 3  # epochs 0, 1, 2
    assert cli.trainer.current_epoch == 3
    load_model(run_id, tracking_uri=tracking_uri)  # the resumed run saved its final weights
