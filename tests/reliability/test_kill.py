"""Must hold 2: killed jobs leave a consistent store, resume from their checkpoint, and end KILLED on a signal.

Each job is a real ``python -m lightning_bnn fit`` process, parked mid-epoch by
:class:`tests.reliability.probe.ParkAt` (epoch 1, batch 3, after epoch 0 was logged
and checkpointed) and then signalled by the test.
"""

from __future__ import annotations

import io
import json
import signal
import sqlite3
from pathlib import Path

from bnn_testing import train

from tests.reliability.jobs import DIGITS, metric_histories, spawn_fit, store_uri, wait, wait_for

EPOCH_METRICS = ("train/loss", "train/nll", "val/nll", "val/acc")


def parked_job(root: Path, name: str, max_epochs: int = 3):
    """A tiny digits job that parks at epoch 1, batch 3 and writes ``root/<name>.parked`` there."""
    marker = root / f"{name}.parked"
    callbacks = [{"class_path": "tests.reliability.probe.ParkAt", "init_args": {"marker": str(marker)}}]
    proc = spawn_fit(
        root,
        name,
        "--trainer.max_epochs",
        str(max_epochs),
        "--model.hidden_sizes",
        "[16]",
        "--model.num_samples_eval",
        "2",
        "--trainer.callbacks",
        json.dumps(callbacks),
    )
    return proc, marker


def only_run(uri: str):
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert len(runs) == 1, [r.info.run_id for r in runs]
    return client, runs[0]


def test_sigkill_mid_epoch_keeps_store_consistent_and_resumes(tmp_path):
    from dashboard.runs import list_runs
    from lightning_bnn.cli.commands import runs_main
    from lightning_bnn.tracking.heartbeat import KILLED_REASON_TAG, mark_stalled, now_ms

    proc, marker = parked_job(tmp_path, "killed")
    wait_for(marker, proc)
    proc.send_signal(signal.SIGKILL)
    assert wait(proc) == -signal.SIGKILL

    uri = store_uri(tmp_path)
    with sqlite3.connect(uri[len("sqlite:///") :]) as con:
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    client, run = only_run(uri)
    assert run.info.status == "RUNNING"  # not FINISHED: nobody could mark it
    before = metric_histories(client, run.info.run_id)
    for key in EPOCH_METRICS:
        assert len(before[key]) == 1, (key, before[key])  # epoch 0 intact, epoch 1 never logged
    table = io.StringIO()
    assert runs_main(["--tracking-uri", uri], out=table) == 0
    assert run.info.run_id[:8] in table.getvalue() and "RUNNING" in table.getvalue()
    frame = list_runs(uri)  # the dashboard's runs table
    assert frame.loc[frame["run_id"] == run.info.run_id, "status"].tolist() == ["RUNNING"]
    # judged ten minutes later it is stalled: ended KILLED with the reason (tests/reliability/test_stalled.py)
    later = now_ms() + 11 * 60_000
    reason = mark_stalled(client, run.info.run_id, 10, now=later)
    assert reason is not None and client.get_run(run.info.run_id).info.status == "KILLED"

    (last,) = tmp_path.rglob("last.ckpt")
    train(
        DIGITS,
        uri,
        "--trainer.max_epochs",
        "3",
        "--model.hidden_sizes",
        "[16]",
        "--model.num_samples_eval",
        "2",
        "--ckpt_path",
        str(last),
    )
    client, resumed = only_run(uri)  # the same run continues
    assert resumed.info.run_id == run.info.run_id
    assert resumed.info.status == "FINISHED"
    # the stop it resumed from is kept, but is no longer why the run ended
    assert KILLED_REASON_TAG not in resumed.data.tags and resumed.data.tags["resume.previous_error"] == reason
    after = metric_histories(client, run.info.run_id)
    for key in EPOCH_METRICS:
        steps = [step for step, _ in after[key]]
        assert len(steps) == 3 and len(set(steps)) == 3, (key, after[key])  # epochs 0, 1, 2: none twice
        assert after[key][0] == before[key][0]  # the killed job's epoch 0, untouched
    files = {a.path for a in client.list_artifacts(run.info.run_id, "model")}
    assert "model/weights.safetensors" in files


def test_sigterm_and_sigint_end_run_killed_with_checkpoint(tmp_path):
    jobs = {}
    for sig in (signal.SIGTERM, signal.SIGINT):  # both jobs at once, each in its own store
        root = tmp_path / sig.name
        root.mkdir()
        jobs[sig] = (root, *parked_job(root, sig.name))
    for sig, (_, proc, marker) in jobs.items():
        wait_for(marker, proc)
        proc.send_signal(sig)
    for sig, (root, proc, _) in jobs.items():
        code = wait(proc, timeout=300)
        log = (root / f"{sig.name}.log").read_text(errors="replace")
        client, run = only_run(store_uri(root))
        assert run.info.status == "KILLED", (sig.name, log[-3000:])
        assert run.info.end_time is not None
        assert code == {signal.SIGTERM: 128 + signal.SIGTERM, signal.SIGINT: 1}[sig], (sig.name, code)
        assert run.data.tags["error.type"] in ("SIGTERMException", "KeyboardInterrupt")
        files = {a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")}
        assert "checkpoints/last.ckpt" in files, sig.name
        assert len(metric_histories(client, run.info.run_id)["val/nll"]) == 1  # epoch 0 kept
