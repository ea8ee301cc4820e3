"""MLflow: where runs are stored, what a run records, and loading a run back.

The store location is decided here and nowhere else: an explicit URI (CLI option
``--mlflow.tracking_uri``), else ``MLFLOW_TRACKING_URI``, else the local SQLite store
``sqlite:///mlruns/mlflow.db`` with artifacts in ``mlruns/artifacts/``.

Artifact layout of a run (read by the dashboard and :func:`load_model`)::

    config.yaml                   the resolved LightningCLI config
    model/weights.safetensors     final weights (no pickle)
    model/model.json              class + hyperparameters to rebuild the model
"""

from __future__ import annotations

import os
import platform
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import lightning.pytorch as L
from lightning.pytorch.loggers import MLFlowLogger

from lightning_bnn.serialization import ModelLoadError, load_model_dir, save_model

DEFAULT_STORE_DIR = "mlruns"
DEFAULT_TRACKING_URI = f"sqlite:///{DEFAULT_STORE_DIR}/mlflow.db"
MODEL_ARTIFACT_DIR = "model"
CONFIG_ARTIFACT = "config.yaml"


def resolve_tracking_uri(uri: str | None = None) -> str:
    """The tracking URI to use: ``uri``, else ``$MLFLOW_TRACKING_URI``, else the local SQLite store.

    Relative SQLite paths are made absolute (against the current folder) and their
    folder is created, so a run's location does not depend on where it is read from.
    """
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    if uri.startswith("file:") or "://" not in uri:
        raise ValueError(
            f"tracking URI {uri!r} is a plain file store, which current MLflow refuses; "
            f"use a database such as {DEFAULT_TRACKING_URI} or an http(s):// server"
        )
    if uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///") :])
        if not path.is_absolute():
            path = Path.cwd() / path
        path.parent.mkdir(parents=True, exist_ok=True)
        uri = f"sqlite:///{path}"
    return uri


def artifact_root(tracking_uri: str) -> str | None:
    """Artifact location for new experiments: ``<store folder>/artifacts`` for SQLite, server default otherwise."""
    if tracking_uri.startswith("sqlite:///"):
        return (Path(tracking_uri[len("sqlite:///") :]).parent / "artifacts").as_uri()
    return None


def ensure_experiment(client: Any, name: str, tracking_uri: str) -> str:
    """Id of experiment ``name``, created (with artifacts under the store folder) if needed."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        return experiment.experiment_id
    root = artifact_root(tracking_uri)
    location = f"{root}/{name}" if root else None
    return client.create_experiment(name, artifact_location=location)


def make_logger(
    experiment: str, tracking_uri: str | None = None, run_name: str | None = None, tags: dict | None = None
) -> MLFlowLogger:
    """An MLFlowLogger on the resolved store, its experiment created with a proper artifact location."""
    from mlflow import MlflowClient

    uri = resolve_tracking_uri(tracking_uri)
    ensure_experiment(MlflowClient(uri), experiment, uri)
    return MLFlowLogger(experiment_name=experiment, tracking_uri=uri, run_name=run_name, tags=tags)


def flatten_params(config: dict, prefix: str = "") -> dict[str, str]:
    """Flatten a nested config into ``a.b.c`` keys with string values, dropping internal keys."""
    out: dict[str, str] = {}
    for key, value in config.items():
        key = str(key)
        if key.startswith("_") or key in ("__path__", "config"):
            continue
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten_params(value, f"{name}."))
        else:
            text = value.value if hasattr(value, "value") and not isinstance(value, (int, float)) else value
            out[name] = str(text)[:6000]
    return out


def code_version() -> str | None:
    """Git commit of the package's checkout, with ``-dirty`` if it has local changes; None outside git."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}-dirty" if dirty else commit


def run_tags(module: L.LightningModule, datamodule: L.LightningDataModule | None) -> dict[str, str]:
    """Tags of a run: task, dataset, model family, code version, package versions, host."""
    import lightning
    import mlflow
    import torch

    hp = module.hparams
    tags = {
        "task": str(hp.get("task")),
        "dataset": getattr(datamodule, "name", "unknown"),
        "model_family": f"{hp.get('layer_type')}-{hp.get('architecture')}",
        "layer_type": str(hp.get("layer_type")),
        "version.torch": torch.__version__,
        "version.lightning": lightning.__version__,
        "version.mlflow": mlflow.__version__,
        "host": platform.node(),
        "python": platform.python_version(),
    }
    commit = code_version()
    if commit:
        tags["git_commit"] = commit
    return tags


class MlflowRunCallback(L.Callback):
    """Records a run completely: params, tags, the resolved config and the final model.

    Args:
        config: the resolved (nested) configuration to log as params; defaults to the
            module's and data module's hyperparameters.
        config_yaml: the resolved config as YAML text, logged as ``config.yaml``.
    """

    def __init__(self, config: dict | None = None, config_yaml: str | None = None) -> None:
        self.config = config
        self.config_yaml = config_yaml

    @staticmethod
    def _mlflow(trainer: L.Trainer) -> MLFlowLogger | None:
        for logger in trainer.loggers:
            if isinstance(logger, MLFlowLogger):
                return logger
        return None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger = self._mlflow(trainer)
        if logger is None or trainer.global_rank != 0:
            return
        datamodule = trainer.datamodule
        params = self.config or {"model": dict(pl_module.hparams)}
        flat = flatten_params(params)
        if datamodule is not None:
            flat.setdefault("dataset", getattr(datamodule, "name", type(datamodule).__name__))
        logger.log_hyperparams(flat)
        client, run_id = logger.experiment, logger.run_id
        for key, value in run_tags(pl_module, datamodule).items():
            client.set_tag(run_id, key, value)
        if self.config_yaml:
            client.log_text(run_id, self.config_yaml, CONFIG_ARTIFACT)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger = self._mlflow(trainer)
        if logger is None or trainer.global_rank != 0:
            return
        with tempfile.TemporaryDirectory() as tmp:
            save_model(pl_module, tmp)
            logger.experiment.log_artifacts(logger.run_id, tmp, MODEL_ARTIFACT_DIR)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        logger = self._mlflow(trainer)
        if logger is None or trainer.global_rank != 0:
            return
        client, run_id = logger.experiment, logger.run_id
        client.set_tag(run_id, "error", f"{type(exception).__name__}: {exception}"[:5000])


def load_model(run: str, tracking_uri: str | None = None):
    """Rebuild the final model of an MLflow run, ready to sample (``eval()`` mode).

    Args:
        run: a run id, or a ``runs:/<run_id>`` URI.
        tracking_uri: the store; defaults as in :func:`resolve_tracking_uri`.

    Returns:
        The :class:`~lightning_bnn.module.BNNModule` with the run's weights.

    Raises:
        ModelLoadError: for an unknown run, a run without weights, or weights that are
            corrupted or do not match the model config.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    run_id = run
    if run.startswith("runs:/"):
        run_id = run[len("runs:/") :].strip("/").split("/")[0]
    uri = resolve_tracking_uri(tracking_uri)
    client = MlflowClient(uri)
    try:
        client.get_run(run_id)
    except MlflowException as err:
        raise ModelLoadError(f"no run {run_id!r} in the store {uri}") from err
    with tempfile.TemporaryDirectory() as tmp:
        try:
            local = client.download_artifacts(run_id, MODEL_ARTIFACT_DIR, tmp)
        except (MlflowException, OSError) as err:
            raise ModelLoadError(f"run {run_id} has no saved model (artifact '{MODEL_ARTIFACT_DIR}/' missing)") from err
        if not Path(local).is_dir():
            raise ModelLoadError(f"run {run_id} has no saved model (artifact '{MODEL_ARTIFACT_DIR}/' missing)")
        return load_model_dir(local)
