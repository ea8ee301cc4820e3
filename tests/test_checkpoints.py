"""A fit keeps, logs and tests the weights of its best validation epoch (lowest val/nll), or its last ones."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
import torch
from bnn_testing import CONFIGS, train
from mlflow import MlflowClient

from lightning_bnn import load_model
from lightning_bnn.tracking import artifacts

# a rate high enough that digits' val/nll is not monotonic over 5 epochs (seed 0), so the best epoch is not the last
FIT = ("--trainer.max_epochs", "5", "--model.hidden_sizes", "[16]", "--model.lr", "0.05", "--test_after_fit", "true")


def _checkpoint_state(uri: str, run_id: str, name: str, tmp: Path) -> dict[str, torch.Tensor]:
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=f"runs:/{run_id}/checkpoints/{name}", dst_path=str(tmp), tracking_uri=uri
    )
    return torch.load(local, map_location="cpu", weights_only=True)["state_dict"]


@pytest.mark.parametrize("keep", ["best", "last"])
def test_fit_keeps_the_chosen_checkpoint(tracking_uri, tmp_path, keep):
    cli = train(CONFIGS / "digits.yaml", tracking_uri, *FIT, "--model_checkpoint", keep)
    run_id = cli.trainer.logger.run_id
    client = MlflowClient(tracking_uri)
    history = client.get_metric_history(run_id, "val/nll")
    best_epoch = min(range(len(history)), key=lambda i: history[i].value)
    tag = client.get_run(run_id).data.tags["model_checkpoint"]
    logged = load_model(run_id, tracking_uri=tracking_uri).state_dict()
    best = _checkpoint_state(tracking_uri, run_id, Path(artifacts.BEST_CHECKPOINT).name, tmp_path)
    same_as_best = all(torch.equal(logged[key], tensor) for key, tensor in best.items())
    assert best_epoch < len(history) - 1  # the case needs a best epoch before the last one
    if keep == "best":
        # the logged model (and so the tested one: test runs on the model in memory) is the best epoch's
        assert tag == f"best (epoch {best_epoch})" and same_as_best
    else:
        assert tag == "last" and not same_as_best
    assert "test/nll" in client.get_run(run_id).data.metrics
