"""Must hold 1 (concurrent jobs) and 8 (reproducibility), with four real CLI jobs on one SQLite store.

The four jobs start at the same moment on a *fresh* store, the hardest case: without
:func:`lightning_bnn.tracking.store.prepare_sqlite_store` they race in MLflow's schema
creation ("table _alembic_tmp_experiments already exists", "Online migration expected
to match one row") and most of them die. Jobs 0 and 1 share a seed, as do 2 and 3:
their logged metrics must agree to the last digit.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.reliability.jobs import TIMING_METRICS, TINY, metric_histories, spawn_fit, store_uri, wait

NUM_JOBS = 4
SEEDS = (7, 7, 8, 8)


@pytest.fixture(scope="module")
def four_jobs(tmp_path_factory):
    """(tracking_uri, [run id per job], [log text per job]) of four jobs run at once."""
    root = tmp_path_factory.mktemp("concurrent")
    procs = [spawn_fit(root, f"job{i}", *TINY, "--seed_everything", str(SEEDS[i])) for i in range(NUM_JOBS)]
    codes = [wait(p) for p in procs]
    logs = [(root / f"job{i}.log").read_text(errors="replace") for i in range(NUM_JOBS)]
    for i, code in enumerate(codes):
        assert code == 0, f"job {i} exited with {code}:\n{logs[i][-3000:]}"
    from mlflow import MlflowClient

    uri = store_uri(root)
    client = MlflowClient(uri)
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], order_by=["attributes.start_time ASC"]
    )
    by_seed: dict[int, list[str]] = {}
    for run in runs:
        by_seed.setdefault(int(run.data.params["seed"]), []).append(run.info.run_id)
    run_ids = [by_seed[s].pop(0) for s in SEEDS]
    return uri, run_ids, logs


def test_four_jobs_at_once_all_complete(four_jobs):
    from mlflow import MlflowClient

    from lightning_bnn.tracking.store import load_model

    uri, run_ids, logs = four_jobs
    assert len(set(run_ids)) == NUM_JOBS
    for log in logs:
        assert "database is locked" not in log
        assert "Traceback" not in log
    client = MlflowClient(uri)
    assert len(client.search_runs([e.experiment_id for e in client.search_experiments()])) == NUM_JOBS
    for run_id in run_ids:
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED"
        for key in ("lr", "hidden_sizes", "num_samples_eval", "seed", "dataset", "batch_size"):
            assert key in run.data.params, key
        assert run.data.params["hidden_sizes"] == "[16]"
        histories = metric_histories(client, run_id)
        for key in ("train/loss", "train/nll", "train/kl", "val/nll", "val/acc", "val/ece"):
            steps = [step for step, _ in histories[key]]
            assert len(steps) == 2 and len(set(steps)) == 2, (key, histories[key])  # one point per epoch
        assert len(histories["test/acc"]) == 1
        files = {a.path for a in client.list_artifacts(run_id)} | {
            a.path for a in client.list_artifacts(run_id, "model")
        }
        assert {"config.yaml", "model/weights.safetensors", "model/model.json"} <= files
        model = load_model(run_id, tracking_uri=uri)
        assert model.hparams.hidden_sizes == [16]
    db = uri[len("sqlite:///") :]
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert con.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_same_config_and_seed_give_identical_metrics(four_jobs):
    from mlflow import MlflowClient

    uri, run_ids, _ = four_jobs
    client = MlflowClient(uri)
    histories = [metric_histories(client, run_id) for run_id in run_ids]
    for a, b in ((0, 1), (2, 3)):
        assert set(histories[a]) == set(histories[b])
        compared = 0
        for key in histories[a]:
            if key in TIMING_METRICS:
                continue
            assert histories[a][key] == histories[b][key], key  # exact floats, every step
            compared += 1
        assert compared >= 10
    # the comparison has power: another seed gives other numbers
    assert histories[0]["train/loss"] != histories[2]["train/loss"]


def test_run_records_what_rerunning_it_needs(four_jobs, tmp_path):
    import yaml
    from mlflow import MlflowClient

    uri, run_ids, _ = four_jobs
    client = MlflowClient(uri)
    run = client.get_run(run_ids[0])
    params, tags = run.data.params, run.data.tags
    assert params["seed"] == "7"
    assert params["data.seed"] == "0"  # the seed of the train/val/test split
    assert tags["git_commit"]
    for package in ("torch", "lightning", "mlflow"):
        assert tags[f"version.{package}"]
    local = client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path))
    config = yaml.safe_load(Path(local).read_text())
    assert config["seed_everything"] == 7
    assert config["model"]["hidden_sizes"] == [16]
    assert config["data"]["init_args"]["seed"] == 0
