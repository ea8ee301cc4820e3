"""MLflow -> DataFrames against real stores (the shared digits run plus synthetic runs and a sweep)."""

from __future__ import annotations

import time

import pandas as pd
import pytest
from mlflow import MlflowClient

from dashboard import runs


def test_list_runs_has_one_row_per_run_with_final_metrics(rich_store):
    uri = rich_store["uri"]
    table = runs.list_runs(uri)
    assert len(table) == 6  # digits + fake + sweep parent + 3 trials
    row = table.set_index("run_id").loc[rich_store["digits"]]
    real = MlflowClient(uri).get_run(rich_store["digits"]).data.metrics
    assert row["test/acc"] == pytest.approx(real["test/acc"])
    assert row["status"] == "FINISHED" and row["dataset"] == "digits" and row["experiment"] == "digits"
    assert row["prior"] == "gaussian(σ=1.0)" and row["estimator"] == "local"
    assert row["samples_eval"] == 20 and row["epochs"] == 3
    assert row["duration_s"] > 0
    assert "test/rmse" not in table  # no run logged it


def test_filter_runs(rich_store):
    table = runs.list_runs(rich_store["uri"])
    assert list(runs.filter_runs(table, "FLIPOUT")["run_id"]) == [rich_store["fake"]]
    assert len(runs.filter_runs(table, "trial-")) == 3
    assert len(runs.filter_runs(table, statuses=["RUNNING"])) == 0


def test_metric_history_and_keys(rich_store):
    uri, digits = rich_store["uri"], rich_store["digits"]
    history = runs.metric_history(uri, [digits, rich_store["fake"]], "val/acc")
    assert history.groupby("run_id").size().to_dict() == {digits: 3, rich_store["fake"]: 3}
    assert list(history[history.run_id == digits]["epoch"]) == [0.0, 1.0, 2.0]
    assert "val/acc" in runs.metric_keys(uri, [digits]) and "epoch" not in runs.metric_keys(uri, [digits])
    assert runs.metric_history(uri, [digits], "no/such").empty


def test_params_diff_keeps_only_differing_params(rich_store):
    params = runs.run_params(rich_store["uri"], [rich_store["digits"], rich_store["fake"]])
    diff = runs.params_diff(params)
    assert {"lr", "estimator", "prior.sigma"} <= set(diff.index)
    assert "dataset" not in diff.index  # both digits
    assert diff.loc["lr", rich_store["digits"]] == "0.003" and diff.loc["lr", rich_store["fake"]] == "0.01"


def test_sweeps(rich_store):
    sweeps = runs.list_sweeps(rich_store["uri"])
    assert list(sweeps["run_id"]) == [rich_store["sweep"]]
    assert sweeps.iloc[0]["swept_fields"] == ["lr", "prior.sigma"]
    trials = runs.sweep_trials(rich_store["uri"], rich_store["sweep"], ["lr", "prior.sigma"])
    assert sorted(trials["lr"]) == [0.001, 0.003, 0.01]
    assert sorted(trials["test/acc"]) == pytest.approx([0.7 * 1.0, 0.75, 0.8])


def test_missing_artifacts_and_model(rich_store):
    uri, fake = rich_store["uri"], rich_store["fake"]
    with pytest.raises(runs.ArtifactMissing, match="'posterior/summary.json' was not logged for this run"):
        runs.read_json_artifact(uri, fake, "posterior/summary.json")
    with pytest.raises(runs.ArtifactMissing, match="not logged"):
        runs.read_train_sample(uri, fake)
    with pytest.raises(runs.RunLoadError, match="has no saved model"):
        runs.load_run_model(uri, fake)
    assert "data:" in runs.read_text_artifact(uri, rich_store["digits"], "config.yaml")


def test_unreachable_server_fails_fast(closed_port_uri):
    start = time.monotonic()
    with pytest.raises(runs.StoreError, match="could not reach the tracking server"):
        runs.list_runs(closed_port_uri)
    assert time.monotonic() - start < 5


def test_bad_uri():
    with pytest.raises(runs.StoreError, match="plain file store"):
        runs.resolve_uri("file:./mlruns")
    with pytest.raises(runs.StoreError, match="plain file store"):
        runs.resolve_uri("/some/folder")


def test_empty_store(tracking_uri):
    assert runs.list_runs(tracking_uri).empty
    assert runs.list_sweeps(tracking_uri).empty


def test_runs_without_a_weight_posterior_show_no_prior_or_estimator(tmp_path):
    """Every run logs its whole config, prior included; only a Bayesian run's prior means something."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    experiment = client.create_experiment("e")
    for layer_type in ("bayes", "deterministic", "mc_dropout"):
        run_id = client.create_run(experiment, run_name=layer_type).info.run_id
        for key, value in (("layer_type", layer_type), ("prior.name", "gaussian"), ("prior.sigma", "1.0")):
            client.log_param(run_id, key, value)
        client.log_param(run_id, "estimator", "local")
        client.set_terminated(run_id)
    table = runs.list_runs(uri).set_index("run_name")
    assert table.loc["bayes", "prior"] == "gaussian(σ=1.0)" and table.loc["bayes", "estimator"] == "local"
    for name in ("deterministic", "mc_dropout"):
        assert pd.isna(table.loc[name, "prior"]) and pd.isna(table.loc[name, "estimator"])
