"""MLflow: where runs are stored, the logger, params and tags, and loading a run back.

**Store.** The location is decided here and nowhere else: an explicit URI (CLI option
``--mlflow.tracking_uri``), else ``MLFLOW_TRACKING_URI``, else the local SQLite store
``sqlite:///mlruns/mlflow.db``. For a SQLite store, new experiments keep their
artifacts in ``<store folder>/artifacts/<experiment>/`` and Lightning checkpoints go to
``<store folder>/checkpoints/<experiment id>/<run id>/checkpoints/``; for a server
(``http(s)://``) or another database, artifacts go where the server puts them and
checkpoints to ``./mlruns/checkpoints/``.

**What a run records**: :mod:`lightning_bnn.tracking.recorder` (the callback and the artifact writers).

**Lifecycle.** A run that raises ends ``FAILED`` with the error in the tags ``error``
and ``error.type``. Ctrl-C (SIGINT) or SIGTERM ends it ``KILLED``, with the last
checkpoint logged as ``checkpoints/last.ckpt``. Every checkpoint carries the id of
its run, so ``fit --ckpt_path CKPT`` resumes *the same run* (status back to
``RUNNING``, metrics continue at the checkpoint's step); if that run is not in the
current store, a new run is started with the tag ``resumed_from_run``. A SIGKILLed run
stays ``RUNNING``; its heartbeat (:mod:`lightning_bnn.tracking.heartbeat`) lets ``runs``
and the dashboard show it ``STALLED`` and ``runs --mark-stalled`` end it. Only global
rank 0 writes to MLflow.
"""

from __future__ import annotations

import contextlib
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import torch
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from lightning_bnn.tracking import artifacts
from lightning_bnn.tracking.serialization import ModelLoadError, load_model_dir
from lightning_bnn.tracking.uri import (  # noqa: F401 - re-exported: the store's location is decided in uri.py
    DEFAULT_STORE_DIR,
    DEFAULT_TRACKING_URI,
    resolve_tracking_uri,
)

MODEL_ARTIFACT_DIR = artifacts.MODEL_DIR
CONFIG_ARTIFACT = artifacts.CONFIG
#: key of the run information stored inside every Lightning checkpoint
CHECKPOINT_KEY = "lightning_bnn_mlflow"


# -- store -----------------------------------------------------------------------------------------
def store_folder(tracking_uri: str) -> Path | None:
    """The folder holding a SQLite store's database file; None for servers and other databases."""
    if tracking_uri.startswith("sqlite:///"):
        return Path(tracking_uri[len("sqlite:///") :]).parent
    return None


def artifact_root(tracking_uri: str) -> str | None:
    """Artifact location for new experiments: ``<store folder>/artifacts`` for SQLite, server default otherwise."""
    folder = store_folder(tracking_uri)
    return (folder / "artifacts").as_uri() if folder is not None else None


def checkpoint_root(tracking_uri: str) -> Path:
    """Lightning's ``default_root_dir``: ``<store folder>/checkpoints`` for SQLite, else ``./mlruns/checkpoints``."""
    folder = store_folder(tracking_uri)
    return (folder if folder is not None else Path.cwd() / DEFAULT_STORE_DIR) / "checkpoints"


def ensure_experiment(client: Any, name: str, tracking_uri: str) -> str:
    """Id of experiment ``name``, created (with artifacts under the store folder) if needed."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        return experiment.experiment_id
    root = artifact_root(tracking_uri)
    location = f"{root}/{name}" if root else None
    try:
        return client.create_experiment(name, artifact_location=location)
    except Exception:  # noqa: BLE001 - another job created it meanwhile (concurrent starts)
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


#: SQLite stores this process has prepared (see :func:`prepare_sqlite_store`)
_PREPARED_STORES: set[str] = set()


def prepare_sqlite_store(tracking_uri: str) -> None:
    """Make a local SQLite store safe for several jobs writing at once (no-op for other stores).

    MLflow creates a new store's tables on first use without a lock, so jobs started
    together on a fresh store race in the schema migration ("table _alembic_tmp_...
    already exists"). Here one process at a time opens the store under an exclusive
    file lock (``<db>.lock``), so the first creates the tables and the others find
    them; the database is switched to WAL journaling, in which readers (the dashboard,
    ``mlflow ui``) never block a writer. MLflow's sessions wait up to 20 s for a lock
    (``busy_timeout``). WAL needs a local file system (not NFS).
    """
    if not tracking_uri.startswith("sqlite:///") or tracking_uri in _PREPARED_STORES:
        return
    import sqlite3

    from mlflow import MlflowClient

    db = Path(tracking_uri[len("sqlite:///") :].split("?")[0])
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; MLflow's own behaviour
        fcntl = None
    with open(f"{db}.lock", "a") as lock:
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            with contextlib.suppress(sqlite3.Error), contextlib.closing(sqlite3.connect(db, timeout=30)) as con:
                con.execute("PRAGMA journal_mode=WAL")
            MlflowClient(tracking_uri).search_experiments(max_results=1)  # creates the tables, once
        finally:
            if fcntl is not None:
                fcntl.flock(lock, fcntl.LOCK_UN)
    _PREPARED_STORES.add(tracking_uri)


@contextlib.contextmanager
def using_tracking_uri(uri: str) -> Iterator[None]:
    """Make ``uri`` MLflow's tracking URI inside the block, and restore the previous one after.

    For the few MLflow calls that take no store argument (``mlflow.pyfunc.log_model`` and the
    LoggedModel it finalizes): everything else here names its store through ``MlflowClient(uri)``.
    """
    import mlflow

    previous = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)


def is_interruption(exception: BaseException | None) -> bool:
    """True for Ctrl-C (KeyboardInterrupt) and SIGTERM (Lightning's SIGTERMException, a SystemExit)."""
    return isinstance(exception, (KeyboardInterrupt, SystemExit))


class BNNMLFlowLogger(MLFlowLogger):
    """Lightning's MLFlowLogger with the run's end status decided by how it ended.

    Lightning finalizes every exception, Ctrl-C included, as ``failed``; this logger
    ends the run ``KILLED`` when :class:`MlflowRunCallback` saw an interruption.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.interrupted = False

    @rank_zero_only
    def finalize(self, status: str = "success") -> None:
        if status == "failed" and self.interrupted:
            status = "KILLED"
        super().finalize(status)


def default_run_name(hparams: dict, dataset: str) -> str:
    """A readable run name: data set, layer type, prior and start time, e.g. ``digits-bayes-gaussian-1127-041503``.

    MLflow's own random names come from Python's ``random``, which ``seed_everything``
    has just seeded, so every run of a config would get the same name.
    """
    import datetime

    prior = (hparams.get("prior") or {}).get("name", "")
    layer_type = str(hparams.get("layer_type", "model"))
    parts = [dataset, layer_type, prior if layer_type == "bayes" else ""]
    stamp = datetime.datetime.now().strftime("%m%d-%H%M%S")
    return "-".join(p for p in (*parts, stamp) if p)


def make_logger(
    experiment: str,
    tracking_uri: str | None = None,
    run_name: str | None = None,
    tags: dict | None = None,
    run_id: str | None = None,
) -> BNNMLFlowLogger:
    """A logger on the resolved store; its experiment created (by rank 0) with a proper artifact location.

    ``run_id`` continues an existing run instead of starting a new one.
    """
    from mlflow import MlflowClient

    uri = resolve_tracking_uri(tracking_uri)
    prepare_sqlite_store(uri)
    if rank_zero_only.rank == 0 and run_id is None:
        ensure_experiment(MlflowClient(uri), experiment, uri)
    return BNNMLFlowLogger(experiment_name=experiment, tracking_uri=uri, run_name=run_name, tags=tags, run_id=run_id)


# -- params and tags -------------------------------------------------------------------------------
def flatten_params(config: dict, prefix: str = "") -> dict[str, str]:
    """Flatten a nested config into ``a.b.c`` keys with string values, dropping internal keys.

    Keys starting with ``_`` (``_instantiator``, ``__path__``) are internal; enums become
    their value and tuples lists, so ``hidden_sizes`` reads ``[128, 128]``.
    """
    out: dict[str, str] = {}
    for key, value in config.items():
        key = str(key)
        if key.startswith("_") or key == "config":
            continue
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten_params(value, f"{name}."))
            continue
        if hasattr(value, "value") and not isinstance(value, (int, float)):
            value = value.value
        if isinstance(value, tuple):
            value = list(value)
        out[name] = str(value)[:6000]
    return out


def code_version() -> str | None:
    """Git commit of the package's checkout, with ``-dirty`` if it has local changes; None outside git."""
    root = Path(__file__).resolve().parents[2]
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


# -- checkpoints -------------------------------------------------------------------------------------
def checkpoint_run_info(path: str | Path) -> dict[str, str] | None:
    """The MLflow run recorded in a Lightning checkpoint (``run_id``, ``experiment_id``, ``tracking_uri``).

    Reads the checkpoint with ``torch.load(weights_only=True)`` (memory-mapped, so the
    tensors are not read). Returns None for a checkpoint written without MLflow.
    """
    try:
        checkpoint = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except FileNotFoundError:
        raise
    except Exception:  # noqa: BLE001 - an old (non-zip) or foreign checkpoint: no run to continue
        return None
    info = checkpoint.get(CHECKPOINT_KEY) if isinstance(checkpoint, dict) else None
    return dict(info) if isinstance(info, dict) and info.get("run_id") else None


def is_active_run(run_id: str, tracking_uri: str) -> bool:
    """True if the store holds the run ``run_id`` and it is not deleted (a run ``fit --ckpt_path`` can continue)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        run = MlflowClient(tracking_uri).get_run(run_id)
    except MlflowException:
        return False
    return run.info.lifecycle_stage == "active"


def download_run_artifact(artifact_uri: str, target: str | Path, tracking_uri: str) -> str:
    """Download ``runs:/<run_id>/<path>`` into the folder ``target``; return the local path.

    Raises:
        Exception: whatever MLflow raises for an unknown run or a missing artifact.
    """
    import mlflow

    return mlflow.artifacts.download_artifacts(
        artifact_uri=artifact_uri, dst_path=str(target), tracking_uri=tracking_uri
    )


# -- loading a run back ------------------------------------------------------------------------------
def parse_run(run: str) -> str:
    """The run id in ``run`` (an id or a ``runs:/<run_id>[/path]`` URI)."""
    if not isinstance(run, str) or not run.strip():
        raise ModelLoadError(f"expected a run id or 'runs:/<run_id>', got {run!r}")
    run_id = run.strip()
    if run_id.startswith("runs:/"):
        run_id = run_id[len("runs:/") :].strip("/").split("/")[0]
    if not run_id or not run_id.replace("-", "").isalnum():
        raise ModelLoadError(f"{run!r} is not a run id or 'runs:/<run_id>' URI")
    return run_id


def load_model(run: str, tracking_uri: str | None = None, trusted_modules: Iterable[str] | None = None):
    """Rebuild the final model of an MLflow run, ready to sample (``eval()`` mode).

    Only ``model/weights.safetensors`` and ``model/model.json`` are read: nothing is
    unpickled, and nothing in the store is changed.

    Args:
        run: a run id, a ``runs:/<run_id>`` URI, or a model URI: ``models:/m-<model id>`` (the run's
            LoggedModel), ``models:/NAME/VERSION``, ``models:/NAME/latest`` or ``models:/NAME@ALIAS``
            (the registry), each read back from the run that trained the model
            (:func:`lightning_bnn.tracking.registry.resolve_model_uri`).
        tracking_uri: the store; defaults as in :func:`resolve_tracking_uri`.
        trusted_modules: modules whose network classes may be imported for a model trained on the
            user's own network (``lightning_bnn`` and those in ``LIGHTNING_BNN_TRUSTED_MODULES`` always
            are); a class path outside them is refused, and nothing is imported.

    Returns:
        The :class:`~lightning_bnn.training.module.BNNModule` with the run's weights.

    Raises:
        ModelLoadError: for an unknown run or model, a run without weights, or weights that are
            corrupted or do not match the model config.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    uri = resolve_tracking_uri(tracking_uri)
    client = MlflowClient(uri)
    if isinstance(run, str) and run.strip().startswith("models:/"):
        from lightning_bnn.tracking.registry import resolve_model_uri

        run_id = resolve_model_uri(run.strip(), client)
    else:
        run_id = parse_run(run)
    try:
        info = client.get_run(run_id).info
    except MlflowException as err:
        if err.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise ModelLoadError(f"no run {run_id!r} in the store {uri}") from err
        raise ModelLoadError(f"could not read run {run_id!r} from {uri}: {err.message}") from err
    if info.lifecycle_stage == "deleted":
        raise ModelLoadError(f"run {run_id} in {uri} is deleted; restore it first")
    try:
        present = {Path(f.path).name for f in client.list_artifacts(run_id, artifacts.MODEL_DIR)}
    except (MlflowException, OSError) as err:
        raise ModelLoadError(f"could not list the artifacts of run {run_id}: {err}") from err
    needed = [artifacts.WEIGHTS, artifacts.MODEL_CONFIG]
    missing = [p for p in needed if Path(p).name not in present]
    if missing:
        raise ModelLoadError(
            f"run {run_id} has no saved model (missing {', '.join(missing)}; the run's status is {info.status}, "
            "and only runs that finish training save their final weights)"
        )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        folder.mkdir()
        for path in needed:
            try:
                local = client.download_artifacts(run_id, path, tmp)
            except (MlflowException, OSError) as err:
                raise ModelLoadError(f"could not download {path} of run {run_id}: {err}") from err
            shutil.move(local, folder / Path(path).name)
        try:
            return load_model_dir(folder, trusted_modules)
        except ModelLoadError as err:
            raise ModelLoadError(f"run {run_id}: {err}") from err
