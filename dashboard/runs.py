"""MLflow store -> pandas DataFrames and parsed artifacts, for the dashboard (no Streamlit calls).

Every function takes the tracking URI explicitly and opens its own ``MlflowClient``;
the pages cache the results. Problems the user can act on raise:

* :class:`StoreError`: the store cannot be reached or the URI is not usable;
* :class:`ArtifactMissing`: a run did not log the artifact a chart needs;
* :class:`RunLoadError`: a run's model cannot be loaded.

Sweep convention (shared with ``lightning_bnn sweep``): a sweep's parent run has tag
``lightning_bnn.sweep = "true"`` and tag ``swept_fields`` (a JSON list of param names);
its trials carry ``mlflow.parentRunId`` = the parent's run id. A sweep run on Optuna also
names its study: tags ``lightning_bnn.optuna_study`` and ``lightning_bnn.optuna_storage``
(the storage URL without its password); each trial's user attribute ``mlflow_run_id``
links it to its run.

A ``RUNNING`` run with no heartbeat for ``stalled_after_min`` minutes has the status
``STALLED`` in :func:`list_runs` (:mod:`lightning_bnn.tracking.heartbeat`).
"""

from __future__ import annotations

import json
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pandas as pd

from lightning_bnn.tracking import artifacts, heartbeat, sqlite_runs

#: seconds to wait for a tracking server's /health before calling it unreachable
HEALTH_TIMEOUT_S = 3.0
#: final metrics shown as columns of the runs table (those a run logged)
KEY_METRICS = (
    "test/acc",
    "test/ece",
    "test/nll",
    "test/rmse",
    "test/picp95",
    "val/acc",
    "val/ece",
    "val/nll",
    "val/rmse",
    "val/picp95",
)
#: ``layer_type`` params of runs without a weight posterior (no prior, no estimator to show)
NOT_BAYESIAN = ("deterministic", "mc_dropout")
#: the status of a RUNNING run with no recent heartbeat
STALLED = heartbeat.STALLED
SWEEP_TAG = "lightning_bnn.sweep"
SWEPT_FIELDS_TAG = "swept_fields"
PARENT_TAG = "mlflow.parentRunId"
STUDY_TAG = "lightning_bnn.optuna_study"
STORAGE_TAG = "lightning_bnn.optuna_storage"
SWEEP_COLUMNS = ["run_id", "run_name", "experiment", "swept_fields", "study", "storage", "metric", "start_time"]
#: columns of :func:`registered_models`
REGISTRY_COLUMNS = ["label", "name", "version", "alias", "run_id"]
#: largest artifact (bytes) the dashboard parses
MAX_ARTIFACT_BYTES = 50 * 1024 * 1024
RUN_COLUMNS = [
    "run_id",
    "run_name",
    "experiment",
    "status",
    "dataset",
    "task",
    "prior",
    "estimator",
    "samples_train",
    "samples_eval",
    "epochs",
    "start_time",
    "duration_s",
    "heartbeat",
]


class StoreError(RuntimeError):
    """The tracking store cannot be used (unreachable server, bad URI, broken database)."""


class ArtifactMissing(LookupError):
    """A run did not log the artifact that was asked for."""


class RunLoadError(RuntimeError):
    """A run's model could not be loaded."""


def resolve_uri(uri: str | None) -> str:
    """Resolved tracking URI (see :func:`lightning_bnn.tracking.uri.resolve_tracking_uri`), as a StoreError if bad."""
    from lightning_bnn.tracking.uri import resolve_tracking_uri

    try:
        return resolve_tracking_uri((uri or "").strip() or None)
    except (ValueError, OSError) as err:
        raise StoreError(str(err)) from None


def check_reachable(uri: str, timeout: float = HEALTH_TIMEOUT_S) -> None:
    """For an ``http(s)://`` store, probe ``/health`` quickly (MLflow itself retries for minutes).

    Raises:
        StoreError: the server did not answer in ``timeout`` seconds.
    """
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as response:  # noqa: S310
            response.read(100)
    except (urllib.error.URLError, OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise StoreError(
            f"could not reach the tracking server at {uri} ({reason}). Is `mlflow server` running? "
            "Change the tracking URI in the sidebar."
        ) from None


def client(uri: str):
    """An ``MlflowClient`` on ``uri`` after checking the server answers."""
    from mlflow import MlflowClient

    check_reachable(uri)
    return MlflowClient(uri)


def _wrap(uri: str, call):
    try:
        return call()
    except StoreError:
        raise
    except Exception as err:  # noqa: BLE001 - database or network errors of any driver
        exceptions = sys.modules.get("mlflow.exceptions")  # not imported on the first screen's fast path
        if exceptions is not None and isinstance(err, exceptions.MlflowException):
            raise StoreError(f"the tracking store {uri} answered with an error: {err.message}") from None
        raise StoreError(f"could not read the tracking store {uri}: {type(err).__name__}: {err}") from None


def _ms_to_time(ms: int | None) -> pd.Timestamp | None:
    return pd.Timestamp(ms, unit="ms") if ms else None


def _prior_label(params: dict[str, str]) -> str | None:
    """The prior in short, for a Bayesian run (a deterministic or MC-dropout run has none, whatever its config)."""
    name = params.get("prior.name")
    if name is None or params.get("layer_type") in NOT_BAYESIAN:
        return None
    if name == "gaussian":
        return f"gaussian(σ={params.get('prior.sigma')})"
    if name == "scale_mixture":
        return f"mixture(π={params.get('prior.pi')}, σ1={params.get('prior.sigma1')}, σ2={params.get('prior.sigma2')})"
    if name == "laplace":
        return f"laplace(b={params.get('prior.scale')})"
    return name


def _run_row(
    run: Any,
    experiment_names: dict[str, str],
    now_ms: int,
    stalled_after_min: float = heartbeat.DEFAULT_STALLED_AFTER_MIN,
) -> dict[str, Any]:
    info, data = run.info, run.data
    params, tags, metrics = data.params, data.tags, data.metrics
    end = info.end_time or None
    duration = ((end or 0) - info.start_time) / 1000.0 if end and info.start_time else None
    row: dict[str, Any] = {
        "run_id": info.run_id,
        "run_name": info.run_name or tags.get("mlflow.runName") or info.run_id[:8],
        "experiment": experiment_names.get(info.experiment_id, info.experiment_id),
        "status": heartbeat.STALLED if heartbeat.run_is_stalled(run, now_ms, stalled_after_min) else info.status,
        "dataset": tags.get("dataset") or params.get("dataset"),
        "task": tags.get("task"),
        "prior": _prior_label(params),
        "estimator": None if params.get("layer_type") in NOT_BAYESIAN else params.get("estimator"),
        "samples_train": _to_number(params.get("num_samples_train")),
        "samples_eval": _to_number(params.get("num_samples_eval")),
        "epochs": metrics.get("epoch"),
        "start_time": _ms_to_time(info.start_time),
        "duration_s": duration,
        "heartbeat": _ms_to_time(heartbeat.parse_heartbeat(tags.get(heartbeat.HEARTBEAT_TAG))),
        "sweep": tags.get(SWEEP_TAG) == "true",
        "parent_run_id": tags.get(PARENT_TAG),
    }
    for key in KEY_METRICS:
        row[key] = metrics.get(key)
    return row


def _to_number(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def list_runs(
    uri: str, max_results: int = 1000, stalled_after_min: float = heartbeat.DEFAULT_STALLED_AFTER_MIN
) -> pd.DataFrame:
    """All runs of all active experiments, newest first, one row each.

    Columns: :data:`RUN_COLUMNS`, ``sweep``, ``parent_run_id`` and the logged :data:`KEY_METRICS`.
    Metric columns no run logged are dropped. ``status`` is MLflow's, or ``STALLED`` for a
    ``RUNNING`` run with no heartbeat for ``stalled_after_min`` minutes; ``heartbeat`` is the
    time of the run's last heartbeat (UTC; empty for runs that record none).
    """
    stalled_after_min = heartbeat.check_stalled_after(stalled_after_min)

    def read() -> pd.DataFrame:
        found = sqlite_runs.search_runs(uri, max_results)  # a local store without importing MLflow
        if found is None:
            c = client(uri)
            names = {e.experiment_id: e.name for e in c.search_experiments()}
            runs = []
            if names:
                runs = c.search_runs(list(names), max_results=max_results, order_by=["attributes.start_time DESC"])
        else:
            names, runs = found
        if not names:
            return pd.DataFrame(columns=RUN_COLUMNS)
        now = heartbeat.now_ms()
        rows = [_run_row(r, names, now, stalled_after_min) for r in runs]
        if not rows:
            return pd.DataFrame(columns=RUN_COLUMNS)
        frame = pd.DataFrame(rows)
        metrics = [k for k in KEY_METRICS if frame[k].notna().any()]
        first = ["run_name", "status", "experiment", "dataset", "task"]
        rest = [c for c in frame.columns if c not in first and c not in KEY_METRICS and c != "run_id"]
        return frame[[*first, *metrics, *rest, "run_id"]]

    return _wrap(uri, read)


def filter_runs(frame: pd.DataFrame, text: str = "", statuses: list[str] | None = None) -> pd.DataFrame:
    """Rows whose name, id, experiment, dataset, prior or estimator contain ``text`` (case-insensitive)."""
    out = frame
    if statuses:
        out = out[out["status"].isin(statuses)]
    text = text.strip().lower()
    if text:
        columns = [c for c in ("run_name", "run_id", "experiment", "dataset", "prior", "estimator") if c in out]
        hay = [
            " ".join(str(v) for v in row if isinstance(v, str)).lower() for row in out[columns].itertuples(index=False)
        ]
        out = out[[text in h for h in hay]]
    return out


def metric_keys(uri: str, run_ids: list[str]) -> list[str]:
    """Sorted metric names logged by any of ``run_ids`` (excluding ``epoch``)."""

    def read() -> list[str]:
        c = client(uri)
        keys: set[str] = set()
        for run_id in run_ids:
            keys.update(c.get_run(run_id).data.metrics)
        keys.discard("epoch")
        return sorted(keys)

    return _wrap(uri, read)


def metric_history(uri: str, run_ids: list[str], key: str) -> pd.DataFrame:
    """Long table of one metric's history: columns run_id, run_name, step, epoch, value.

    ``epoch`` is the number of epochs completed when the value was logged, matched by
    step against the run's ``epoch`` metric (NaN where it was not logged).
    """

    def read() -> pd.DataFrame:
        c = client(uri)
        frames = []
        for run_id in run_ids:
            run = c.get_run(run_id)
            history = c.get_metric_history(run_id, key)
            if not history:
                continue
            epochs = {m.step: m.value for m in c.get_metric_history(run_id, "epoch")}
            frames.append(
                pd.DataFrame(
                    {
                        "run_id": run_id,
                        "run_name": run.info.run_name or run_id[:8],
                        "step": [m.step for m in history],
                        "epoch": [epochs.get(m.step) for m in history],
                        "value": [m.value for m in history],
                    }
                )
            )
        if not frames:
            return pd.DataFrame(columns=["run_id", "run_name", "step", "epoch", "value"])
        return pd.concat(frames, ignore_index=True).sort_values(["run_id", "step"], ignore_index=True)

    return _wrap(uri, read)


def run_params(uri: str, run_ids: list[str]) -> pd.DataFrame:
    """Params of several runs: one row per param, one column per run id."""

    def read() -> pd.DataFrame:
        c = client(uri)
        columns = {}
        for run_id in run_ids:
            columns[run_id] = pd.Series(c.get_run(run_id).data.params, dtype=object)
        frame = pd.DataFrame(columns)
        frame.index.name = "param"
        return frame.sort_index()

    return _wrap(uri, read)


def params_diff(params: pd.DataFrame) -> pd.DataFrame:
    """Only the rows of a params table (see :func:`run_params`) whose values differ between runs."""
    if params.shape[1] < 2:
        return params
    filled = params.fillna("—").astype(str)
    return params[filled.nunique(axis=1) > 1]


def run_info(uri: str, run_id: str) -> dict[str, Any]:
    """One run: ``{"run_id", "run_name", "status", "experiment", "params": DataFrame, "tags": DataFrame,
    "metrics": DataFrame, "start_time", "duration_s", "heartbeat", "artifact_uri"}`` (status as in :func:`list_runs`).
    """  # noqa: D205

    def read() -> dict[str, Any]:
        c = client(uri)
        run = c.get_run(run_id)
        experiment = c.get_experiment(run.info.experiment_id)
        row = _run_row(run, {experiment.experiment_id: experiment.name}, heartbeat.now_ms())
        return {
            **row,
            "artifact_uri": run.info.artifact_uri,
            "params": pd.DataFrame(sorted(run.data.params.items()), columns=["param", "value"]),
            "tags": pd.DataFrame(
                sorted((k, v) for k, v in run.data.tags.items() if not k.startswith("mlflow.log-model")),
                columns=["tag", "value"],
            ),
            "metrics": pd.DataFrame(sorted(run.data.metrics.items()), columns=["metric", "final value"]),
        }

    return _wrap(uri, read)


def download_artifact(uri: str, run_id: str, path: str, directory: str | Path) -> Path:
    """Download one artifact of a run into ``directory``.

    Raises:
        ArtifactMissing: the run did not log ``path``.
        StoreError: the store cannot be read.
    """
    from mlflow.exceptions import MlflowException

    c = _wrap(uri, lambda: client(uri))
    try:
        local = Path(c.download_artifacts(run_id, path, str(directory)))
    except (MlflowException, OSError, FileNotFoundError):
        raise ArtifactMissing(f"'{path}' was not logged for this run") from None
    if not local.exists():
        raise ArtifactMissing(f"'{path}' was not logged for this run")
    return local


def read_text_artifact(uri: str, run_id: str, path: str) -> str:
    """The text of a run's artifact (UTF-8).

    Raises:
        ArtifactMissing: not logged, or not a readable text file of a sane size.
    """
    with tempfile.TemporaryDirectory() as tmp:
        local = download_artifact(uri, run_id, path, tmp)
        if not local.is_file():
            raise ArtifactMissing(f"'{path}' is not a file in this run's artifacts")
        if local.stat().st_size > MAX_ARTIFACT_BYTES:
            raise ArtifactMissing(f"'{path}' is larger than {MAX_ARTIFACT_BYTES // 2**20} MB; not shown")
        try:
            return local.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ArtifactMissing(f"'{path}' is not UTF-8 text") from None


def read_json_artifact(uri: str, run_id: str, path: str) -> Any:
    """A run's JSON artifact, parsed.

    Raises:
        ArtifactMissing: not logged, or not valid JSON.
    """
    text = read_text_artifact(uri, run_id, path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ArtifactMissing(f"'{path}' is not valid JSON ({err})") from None


def read_train_sample(uri: str, run_id: str) -> pd.DataFrame:
    """The run's logged training points (``data/train_sample.csv``) as a DataFrame."""
    import io

    text = read_text_artifact(uri, run_id, artifacts.TRAIN_SAMPLE)
    try:
        return pd.read_csv(io.StringIO(text))
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as err:
        raise ArtifactMissing(f"'{artifacts.TRAIN_SAMPLE}' is not a readable CSV ({err})") from None


def load_run_model(uri: str, run_id: str):
    """The run's final model (safetensors + JSON, no pickle), in eval mode.

    Raises:
        RunLoadError: with the loader's message (missing or broken model artifacts).
        StoreError: the store cannot be reached.
    """
    from lightning_bnn import load_model
    from lightning_bnn.tracking.serialization import ModelLoadError

    check_reachable(uri)
    try:
        return load_model(run_id, tracking_uri=uri)
    except ModelLoadError as err:
        raise RunLoadError(f"cannot load the model of run {run_id}: {err}") from None


def model_labels(table: pd.DataFrame, run_ids: list[str]) -> dict[str, str]:
    """Short, distinct labels of runs for charts and tables: ``run name (first 6 of the id)``."""
    names = dict(zip(table["run_id"], table["run_name"]))
    return {run_id: f"{names.get(run_id, 'run')} ({run_id[:6]})" for run_id in run_ids}


def registered_models(uri: str, max_results: int = 1000) -> pd.DataFrame:
    """The store's registered model versions as choices, each with the run that logged it.

    One row per alias (label ``NAME@alias``), then one per version, newest first (``NAME vN``).
    Versions that name no run (registered from a path outside any run) are left out: the dashboard
    loads a model from its run. Columns: :data:`REGISTRY_COLUMNS`.
    """

    def read() -> pd.DataFrame:
        c = client(uri)
        versions = {(v.name, str(v.version)): v.run_id for v in c.search_model_versions(max_results=max_results)}
        aliased, numbered = [], []
        for model in sorted(c.search_registered_models(max_results=max_results), key=lambda m: m.name):
            for alias, version in sorted((model.aliases or {}).items()):
                run_id = versions.get((model.name, str(version)))
                aliased.append([f"{model.name}@{alias}", model.name, str(version), alias, run_id])
            for (name, version), run_id in sorted(versions.items(), key=lambda kv: -int(kv[0][1])):
                if name == model.name:
                    numbered.append([f"{name} v{version}", name, version, None, run_id])
        frame = pd.DataFrame(aliased + numbered, columns=REGISTRY_COLUMNS)
        return frame[frame["run_id"].notna() & (frame["run_id"] != "")].reset_index(drop=True)

    return _wrap(uri, read)


def list_sweeps(uri: str) -> pd.DataFrame:
    """Sweep parent runs: columns :data:`SWEEP_COLUMNS` (``study``/``storage`` None for sweeps without a study)."""

    def read() -> pd.DataFrame:
        c = client(uri)
        experiments = {e.experiment_id: e.name for e in c.search_experiments()}
        if not experiments:
            return pd.DataFrame(columns=SWEEP_COLUMNS)
        parents = c.search_runs(list(experiments), filter_string=f"tags.`{SWEEP_TAG}` = 'true'", max_results=500)
        rows = []
        for run in parents:
            try:
                fields = json.loads(run.data.tags.get(SWEPT_FIELDS_TAG, "[]"))
            except json.JSONDecodeError:
                fields = []
            rows.append(
                {
                    "run_id": run.info.run_id,
                    "run_name": run.info.run_name or run.info.run_id[:8],
                    "experiment": experiments.get(run.info.experiment_id),
                    "swept_fields": [str(f) for f in fields] if isinstance(fields, list) else [],
                    "study": run.data.tags.get(STUDY_TAG),
                    "storage": run.data.tags.get(STORAGE_TAG),
                    "metric": run.data.tags.get("lightning_bnn.sweep_metric"),
                    "start_time": _ms_to_time(run.info.start_time),
                }
            )
        return pd.DataFrame(rows, columns=SWEEP_COLUMNS)

    return _wrap(uri, read)


def sweep_trials(uri: str, parent_run_id: str, fields: list[str]) -> pd.DataFrame:
    """Trials of a sweep: run_id, run_name, status, each swept field (numeric where possible), final metrics."""

    def read() -> pd.DataFrame:
        c = client(uri)
        parent = c.get_run(parent_run_id)
        trials = c.search_runs(
            [parent.info.experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent_run_id}'", max_results=1000
        )
        rows = []
        for run in trials:
            row: dict[str, Any] = {
                "run_id": run.info.run_id,
                "run_name": run.info.run_name,
                "status": run.info.status,
            }
            for field in fields:
                value = run.data.params.get(field)
                number = _to_number(value)
                row[field] = number if number is not None else value
            row.update({k: v for k, v in run.data.metrics.items() if k != "epoch"})
            rows.append(row)
        return pd.DataFrame(rows)

    return _wrap(uri, read)


def load_study(storage: str, study: str):
    """The Optuna study ``study`` in ``storage`` (read for its trials and figures).

    Raises:
        StoreError: the storage cannot be opened or holds no such study.
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        return optuna.load_study(study_name=study, storage=storage)
    except KeyError:
        raise StoreError(f"the Optuna storage {storage} holds no study {study!r}") from None
    except Exception as err:  # noqa: BLE001 - database errors of any driver
        raise StoreError(f"could not open the Optuna storage {storage}: {type(err).__name__}: {err}") from None


def study_trials(study) -> pd.DataFrame:
    """A study's trials: number, state, value, each param, run_id (its MLflow run), duration_s."""
    rows = []
    for trial in study.get_trials(deepcopy=False):
        if trial.user_attrs.get("lightning_bnn.surplus"):  # a grid worker's trial that found no point left
            continue
        duration = trial.duration.total_seconds() if trial.duration is not None else None
        rows.append(
            {
                "number": trial.number,
                "state": trial.state.name,
                "value": trial.value if trial.values else None,
                **trial.params,
                "run_id": trial.user_attrs.get("mlflow_run_id"),
                "duration_s": duration,
            }
        )
    return pd.DataFrame(rows)
