"""The first screen's direct read of a SQLite store answers exactly what MLflow's client does, or steps aside."""

from __future__ import annotations

import math
import shutil
import sqlite3
import time

import pandas as pd
import pytest
from mlflow import MlflowClient

from dashboard import runs as dashboard_runs
from lightning_bnn.tracking import sqlite_runs


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A real store: two live experiments and a deleted one; finished, failed, running and deleted runs."""
    root = tmp_path_factory.mktemp("sqlite-runs")
    uri = f"sqlite:///{root}/mlflow.db"
    client = MlflowClient(uri)
    live = [client.create_experiment(name) for name in ("alpha", "beta")]
    gone = client.create_experiment("gone")
    made = []
    for i in range(7):
        run = client.create_run(live[i % 2], run_name=f"run-{i}", tags={"dataset": f"set{i % 3}", "task": "t"})
        run_id = run.info.run_id
        client.log_param(run_id, "prior.name", "gaussian")
        client.log_param(run_id, "num_samples_eval", str(10 + i))
        for step in range(3):  # the latest value is the last step's
            client.log_metric(run_id, "val/nll", 1.0 / (step + 1 + i), step=step)
        client.log_metric(run_id, "test/acc", math.nan if i == 3 else 0.5 + i / 100)
        if i != 5:  # run-5 stays RUNNING
            client.set_terminated(run_id, "FAILED" if i == 4 else "FINISHED")
        made.append(run_id)
        time.sleep(0.002)  # distinct start times
    client.delete_run(made[6])
    gone_run = client.create_run(gone, run_name="in-gone").info.run_id
    client.set_terminated(gone_run)
    client.delete_experiment(gone)
    return uri


def _mlflow_view(uri: str, max_results: int = 1000):
    client = MlflowClient(uri)
    names = {e.experiment_id: e.name for e in client.search_experiments()}
    return names, client.search_runs(list(names), max_results=max_results, order_by=["attributes.start_time DESC"])


def _fields(run) -> tuple:
    info, data = run.info, run.data
    metrics = {k: ("nan" if math.isnan(v) else v) for k, v in data.metrics.items()}
    head = (info.run_id, info.run_name, info.experiment_id, info.status, info.start_time, info.end_time)
    return (*head, dict(data.params), metrics, dict(data.tags))


@pytest.mark.parametrize("max_results", [1000, 3])
def test_it_reads_what_mlflow_reads(store, max_results):
    names, found = sqlite_runs.search_runs(store, max_results)
    expected_names, expected = _mlflow_view(store, max_results)
    assert names == expected_names
    assert sorted(names.values()) == ["Default", "alpha", "beta"]  # not the deleted "gone"
    assert [_fields(r) for r in found] == [_fields(r) for r in expected]
    assert len(found) == min(max_results, 6)  # the deleted run and the deleted experiment's run are left out


def test_the_dashboard_table_is_the_same_either_way(store, monkeypatch):
    fast = dashboard_runs.list_runs(store)
    monkeypatch.setattr(sqlite_runs, "search_runs", lambda uri, max_results=1000: None)  # MLflow's path
    slow = dashboard_runs.list_runs(store)
    pd.testing.assert_frame_equal(fast, slow)
    assert list(fast["run_name"]) == [f"run-{i}" for i in (5, 4, 3, 2, 1, 0)]
    assert set(fast["status"]) == {"FINISHED", "FAILED", "RUNNING"}


def test_an_unknown_schema_or_workspace_is_left_to_mlflow(store, tmp_path):
    path = tmp_path / "copy.db"
    shutil.copy(sqlite_runs.database_path(store), path)
    uri = f"sqlite:///{path}"
    assert sqlite_runs.search_runs(uri) is not None
    with sqlite3.connect(path) as db:
        db.execute("UPDATE experiments SET workspace = 'team' WHERE name = 'beta'")
    assert sqlite_runs.search_runs(uri) is None
    with sqlite3.connect(path) as db:
        db.execute("UPDATE experiments SET workspace = 'default'")
        db.execute("UPDATE alembic_version SET version_num = 'a_future_revision'")
    assert sqlite_runs.search_runs(uri) is None


def test_the_known_revision_is_the_pinned_mlflow_head(tmp_path):
    """A new MLflow release migrates the schema: this fails until its revision has been checked and added."""
    uri = f"sqlite:///{tmp_path}/fresh.db"
    MlflowClient(uri).search_experiments()  # creates the tables
    with sqlite3.connect(tmp_path / "fresh.db") as db:
        (revision,) = db.execute("SELECT version_num FROM alembic_version").fetchone()
    assert revision in sqlite_runs.KNOWN_REVISIONS


def test_other_uris_are_left_to_mlflow(tmp_path):
    assert sqlite_runs.search_runs(f"sqlite:///{tmp_path}/missing.db") is None  # no file yet: MLflow creates it
    assert sqlite_runs.search_runs("http://127.0.0.1:5000") is None
    assert sqlite_runs.search_runs("postgresql://u@localhost/db") is None


def test_a_file_that_is_no_database_is_a_store_error(tmp_path):
    path = tmp_path / "broken.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(dashboard_runs.StoreError, match="tracking store") as err:
        dashboard_runs.list_runs(f"sqlite:///{path}")
    assert str(err.value).endswith(f"DatabaseError: {path} is not a SQLite database")  # one line, the file named
