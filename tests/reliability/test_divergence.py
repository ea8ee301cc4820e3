"""Must hold 3: a run whose loss becomes non-finite stops at once, FAILED, with a tag saying why.

On the digits MLP, Adam with lr = 10 still gives finite (if useless) losses; lr = 1e4
drives the KL to inf within the first few batches, which is the case guarded here.
"""

from __future__ import annotations

from tests.reliability.jobs import spawn_fit, store_uri, wait


def test_diverging_run_stops_in_first_epoch_and_fails(tmp_path):
    from mlflow import MlflowClient

    proc = spawn_fit(
        tmp_path, "diverge", "--trainer.max_epochs", "5", "--model.hidden_sizes", "[16]", "--model.lr", "1e4"
    )
    code = wait(proc)
    log = (tmp_path / "diverge.log").read_text(errors="replace")
    assert code != 0
    assert "DivergenceError: training loss became" in log
    assert "lower model.lr" in log

    client = MlflowClient(store_uri(tmp_path))
    (run,) = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.info.status == "FAILED"
    assert run.data.tags["error.type"] == "DivergenceError"
    assert "training loss became" in run.data.tags["error"] and "at epoch 0" in run.data.tags["error"]
    # stopped inside epoch 0: no epoch was completed, nothing trained on garbage was saved
    assert "val/nll" not in run.data.metrics and "train/loss" not in run.data.metrics
    assert not [a for a in client.list_artifacts(run.info.run_id) if a.path == "model"]
