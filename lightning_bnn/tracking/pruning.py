"""Pruning a run (:mod:`lightning_bnn.evaluation.prune`): load it, prune its model, log a child run.

The child run of RUN_ID (tag ``mlflow.parentRunId``, in its experiment) holds the params
``parent_run_id``, ``fractions``, ``criterion`` and ``total_weights``; the metrics
``prune/test_error`` (or ``prune/test_rmse``) and ``prune/weights_left`` with step = the
fraction removed in per mille; and the artifacts ``pruning/table.json`` (MLflow table),
``pruning/table.md``, ``pruning/snr.json`` and ``pruning/snr.html``
(:mod:`lightning_bnn.tracking.artifacts`).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from lightning_bnn.evaluation.prune import (
    PruneError,
    check_fraction,
    point_metric,
    prune_and_evaluate,
    snr_record,
    table_markdown,
)
from lightning_bnn.tracking.artifacts import CONFIG, PRUNING_SNR, PRUNING_SNR_CHART, PRUNING_TABLE, PRUNING_TABLE_MD
from lightning_bnn.tracking.figures import snr_figure

#: what the child run's ``criterion`` param says
CRITERION = "snr = |mu| / sigma, global over all Bayesian weight tensors"


def load_run(run_id: str, tracking_uri: str | None = None) -> tuple[Any, Any, Any, str]:
    """(model, data module, MlflowClient, resolved URI) of an MLflow run.

    Raises:
        ModelLoadError: if the run or its model cannot be loaded.
        PruneError: if the run has no ``config.yaml`` or its data module cannot be rebuilt.
    """
    import yaml
    from mlflow import MlflowClient

    from lightning_bnn.data.stored import StoredDataError, datamodule_from_config
    from lightning_bnn.tracking.store import load_model, resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    model = load_model(run_id, tracking_uri=uri)
    client = MlflowClient(uri)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = client.download_artifacts(run_id, CONFIG, tmp)
        except Exception as err:  # noqa: BLE001 - any failure means the config is missing
            raise PruneError(f"run {run_id} has no config.yaml artifact to rebuild its test set") from err
        config = yaml.safe_load(Path(local).read_text())
    try:
        datamodule = datamodule_from_config(config)
    except StoredDataError as err:
        raise PruneError(str(err)) from None
    return model, datamodule, client, uri


def prune_run(
    run_id: str,
    fractions: Sequence[float],
    tracking_uri: str | None = None,
    save_dir: str | Path | None = None,
) -> dict:
    """Prune a run at each fraction, evaluate, and log a child run; return the rows and the child run id.

    Args:
        run_id: a Bayes-by-Backprop run.
        fractions: fractions of the weights to remove, each in [0, 1].
        tracking_uri: the store (default as for training).
        save_dir: keep the ``pruned-<percent>.safetensors`` files and the run's ``model.json`` here.

    Returns:
        ``{"child_run_id", "total_weights", "rows": [{"fraction", "weights_left",
        "test_error" | "test_rmse", "file_bytes"}]}``.
    """
    fractions = [check_fraction(f) for f in fractions]
    model, datamodule, client, _ = load_run(run_id, tracking_uri)
    if model.hparams.layer_type != "bayes":
        raise PruneError(
            f"run {run_id} has layer_type {model.hparams.layer_type!r}: SNR pruning needs a Bayes-by-Backprop run"
        )
    datamodule.setup("test")
    loader = datamodule.test_dataloader()
    if save_dir is not None:
        from lightning_bnn.tracking.serialization import CONFIG_FILE, model_config

        save_dir = Path(save_dir)
        save_dir.mkdir(parents=True, exist_ok=True)
        (save_dir / CONFIG_FILE).write_text(json.dumps(model_config(model), indent=2, sort_keys=True))
        rows, snr = prune_and_evaluate(model, loader, fractions, save_dir)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            rows, snr = prune_and_evaluate(model, loader, fractions, Path(tmp))
    total = sum(v.numel() for v in snr.values())
    child = log_pruning_run(client, run_id, rows, snr, total)
    return {"child_run_id": child, "total_weights": total, "rows": rows}


def log_pruning_run(client: Any, run_id: str, rows: list[dict], snr: dict[str, torch.Tensor], total: int) -> str:
    """Log the pruning results as a child run of ``run_id`` (see the module docstring); return its id.

    The child run ends ``FINISHED``, or ``FAILED`` if logging raises.
    """
    parent = client.get_run(run_id)
    tags = {"mlflow.parentRunId": run_id, "kind": "pruning"}
    for key in ("task", "dataset", "layer_type", "model_family"):
        if key in parent.data.tags:
            tags[key] = parent.data.tags[key]
    child = client.create_run(
        parent.info.experiment_id, run_name=f"{parent.info.run_name or run_id[:8]}-prune", tags=tags
    )
    child_id = child.info.run_id
    try:
        client.log_param(child_id, "parent_run_id", run_id)
        client.log_param(child_id, "fractions", json.dumps([r["fraction"] for r in rows]))
        client.log_param(child_id, "criterion", CRITERION)
        client.log_param(child_id, "total_weights", total)
        metric = point_metric(rows)
        for r in rows:
            step = int(round(r["fraction"] * 1000))
            client.log_metric(child_id, f"prune/{metric}", r[metric], step=step)
            client.log_metric(child_id, "prune/weights_left", r["weights_left"], step=step)
        client.log_table(child_id, {k: [r[k] for r in rows] for k in rows[0]}, PRUNING_TABLE)
        client.log_text(child_id, table_markdown(rows), PRUNING_TABLE_MD)
        record = snr_record(snr)
        client.log_dict(child_id, record, PRUNING_SNR)
        client.log_figure(child_id, snr_figure(record), PRUNING_SNR_CHART)
    except Exception:
        client.set_terminated(child_id, "FAILED")
        raise
    client.set_terminated(child_id, "FINISHED")
    return child_id
