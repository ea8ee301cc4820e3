"""Recording a run in MLflow: the callback and the artifact writers.

:class:`MlflowRunCallback` records a run completely: the resolved config as params
(flattened, readable names) and as ``config.yaml``; tags (task, dataset, model family,
git commit, versions, host); the artifacts of :mod:`lightning_bnn.tracking.artifacts`: final
weights, an MLflow pyfunc model, the best checkpoint by ``val/nll``, the posterior
summary and, after testing, the reliability diagram (classification) or the predictive
band (regression). It also carries the run's lifecycle: while a stage (fit, validate, test)
runs it keeps the run's heartbeat (:mod:`lightning_bnn.tracking.heartbeat`: at the start, after
every training epoch and every minute), a run that raises ends ``FAILED`` with the error in
tags, Ctrl-C or SIGTERM ends it ``KILLED`` with the last checkpoint logged. Only global rank 0
writes. Where runs are stored and how a run is
loaded back live in :mod:`lightning_bnn.tracking.store`.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import torch
from lightning.pytorch.loggers import MLFlowLogger

from lightning_bnn.tracking import artifacts, figures
from lightning_bnn.tracking.heartbeat import KILLED_REASON_TAG, Heartbeat
from lightning_bnn.tracking.serialization import load_model_dir, save_model
from lightning_bnn.tracking.store import (
    CHECKPOINT_KEY,
    BNNMLFlowLogger,
    flatten_params,
    is_interruption,
    run_tags,
)

#: pip requirements of the pyfunc model, pinned to this environment (no slow inference)
PYFUNC_PACKAGES = ("mlflow", "torch", "lightning", "torchmetrics", "safetensors", "numpy", "pandas")


# -- the callback that records a run -----------------------------------------------------------------
class MlflowRunCallback(L.Callback):
    """Records a run completely: params, tags, config, model, checkpoints and report artifacts.

    Args:
        config: the resolved (flattened or nested) configuration to log as params; defaults
            to the module's hyperparameters.
        config_yaml: the resolved config as YAML text, logged as ``config.yaml``.
        resumed_from: checkpoint path this fit resumes from (continuing the logger's run).
        seed: seed of the Monte Carlo draws behind the evaluation artifacts.
    """

    def __init__(
        self,
        config: dict | None = None,
        config_yaml: str | None = None,
        resumed_from: str | None = None,
        seed: int = 0,
    ) -> None:
        self.config = config
        self.config_yaml = config_yaml
        self.resumed_from = resumed_from
        self.seed = seed
        self._recorded = False
        self._heartbeat: Heartbeat | None = None
        #: the LoggedModel of this fit's pyfunc model (set at the end of fit)
        self.model_id: str | None = None

    @staticmethod
    def _logger(trainer: L.Trainer) -> MLFlowLogger | None:
        if trainer.global_rank != 0:
            return None
        for logger in trainer.loggers:
            if isinstance(logger, MLFlowLogger):
                return logger
        return None

    # -- start ----------------------------------------------------------------------------------------
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._record_start(trainer, pl_module)
        self._start_heartbeat(trainer)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._record_start(trainer, pl_module)  # a ``validate`` run: recorded as completely as a fit
        self._start_heartbeat(trainer)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._record_start(trainer, pl_module)  # a ``test`` run
        self._start_heartbeat(trainer)

    # -- heartbeat (see lightning_bnn.tracking.heartbeat) --------------------------------------------
    def _start_heartbeat(self, trainer: L.Trainer) -> None:
        """Beat now and every minute until the stage ends (once per stage; validation inside a fit reuses it)."""
        logger = self._logger(trainer)
        if logger is None or self._heartbeat is not None:
            return
        self._heartbeat = Heartbeat(logger.experiment, logger.run_id).start()

    def _stop_heartbeat(self) -> None:
        heartbeat, self._heartbeat = self._heartbeat, None
        if heartbeat is not None:
            heartbeat.stop()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._heartbeat is not None:
            self._heartbeat.poke()  # written by the heartbeat's thread: the epoch does not wait for the store

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._stop_heartbeat()

    def _record_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Params, tags and ``config.yaml``, once per run (the first of fit, validate or test to start)."""
        logger = self._logger(trainer)
        if logger is None or self._recorded:
            return
        self._recorded = True
        datamodule = trainer.datamodule
        flat = flatten_params(self.config or {"model": dict(pl_module.hparams)})
        if datamodule is not None:
            flat.setdefault("dataset", getattr(datamodule, "name", type(datamodule).__name__))
        client, run_id = logger.experiment, logger.run_id
        tags = run_tags(pl_module, datamodule)
        if self.resumed_from:
            client.update_run(run_id, status="RUNNING")
            previous = client.get_run(run_id).data
            existing = previous.params
            stop = previous.tags.get("error") or previous.tags.get(KILLED_REASON_TAG)
            if stop:  # the stop that is being resumed: kept, but no longer the run's error
                tags["resume.previous_error"] = stop
                for key in ("error", "error.type", KILLED_REASON_TAG):
                    if key in previous.tags:
                        client.delete_tag(run_id, key)
            changed = {k: [existing[k], v] for k, v in flat.items() if k in existing and existing[k] != v}
            flat = {k: v for k, v in flat.items() if k not in existing}
            tags["resumed_from_checkpoint"] = str(self.resumed_from)
            if changed:  # MLflow params are immutable: record what the resumed fit changed
                tags["resume.changed_params"] = json.dumps(changed)[:5000]
        checkpoint_dir = getattr(trainer.checkpoint_callback, "dirpath", None)
        if checkpoint_dir:
            tags["checkpoint_dir"] = str(checkpoint_dir)
        logger.log_hyperparams(flat)
        for key, value in tags.items():
            client.set_tag(run_id, key, value)
        if self.config_yaml:
            client.log_text(run_id, self.config_yaml, artifacts.CONFIG)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        for logger in trainer.loggers:
            if isinstance(logger, MLFlowLogger) and logger._run_id is not None:
                checkpoint[CHECKPOINT_KEY] = {
                    "run_id": str(logger._run_id),
                    "experiment_id": str(logger._experiment_id),
                    "tracking_uri": str(logger._tracking_uri),
                }

    # -- end of fit -----------------------------------------------------------------------------------
    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger = self._logger(trainer)
        if logger is None:
            return
        client, run_id = logger.experiment, logger.run_id
        restored = [c.restored_epoch for c in trainer.callbacks if getattr(c, "restored_epoch", None) is not None]
        client.set_tag(run_id, "model_checkpoint", f"best (epoch {restored[0]})" if restored else "last")
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            model_dir = save_model(pl_module, tmp / "model")
            client.log_artifacts(run_id, str(model_dir), artifacts.MODEL_DIR)
            example = pyfunc_input_example(pl_module, trainer.datamodule)
            if example is not None:
                self.model_id = log_pyfunc_model(client, run_id, model_dir, example, step=trainer.global_step)
            best = getattr(trainer.checkpoint_callback, "best_model_path", "") or ""
            if best and Path(best).is_file():
                _log_file_as(client, run_id, best, artifacts.BEST_CHECKPOINT)
            log_posterior_summary(client, run_id, pl_module)
            if "train_sample" in pl_module.likelihood.run_artifacts:
                log_train_sample(client, run_id, trainer.datamodule)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        logger = self._logger(trainer)
        if logger is None or trainer.datamodule is None:
            return
        # fast_dev_run tests one batch: the report covers that batch too, not the whole test set
        max_batches = int(trainer.fast_dev_run) if trainer.fast_dev_run else None
        log_evaluation(logger.experiment, logger.run_id, pl_module, trainer.datamodule, self.seed, max_batches)
        if self.model_id is not None:  # the test metrics are the model's too
            link_final_metrics(logger.experiment, logger.run_id, self.model_id)

    # -- failures -------------------------------------------------------------------------------------
    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._stop_heartbeat()  # Lightning calls no teardown hook after an exception
        logger = self._logger(trainer)
        if logger is None or logger._run_id is None:
            return
        if isinstance(logger, BNNMLFlowLogger) and is_interruption(exception):
            logger.interrupted = True
        try:
            self._record_exception(trainer, logger, exception)
        except Exception as err:  # noqa: BLE001 - never hide the original error behind a tracking error
            warnings.warn(f"could not record the {type(exception).__name__} in MLflow: {err}", stacklevel=2)

    def _record_exception(self, trainer: L.Trainer, logger: MLFlowLogger, exception: BaseException) -> None:
        client, run_id = logger.experiment, logger.run_id
        client.set_tag(run_id, "error.type", type(exception).__name__)
        client.set_tag(run_id, "error", (f"{type(exception).__name__}: {exception}".strip(": "))[:5000])
        if not is_interruption(exception):
            return
        last = self._last_checkpoint(trainer)
        if last is not None:
            _log_file_as(client, run_id, last, artifacts.LAST_CHECKPOINT)

    @staticmethod
    def _last_checkpoint(trainer: L.Trainer) -> str | None:
        """The newest checkpoint on disk; one is written now if training was stopped before any."""
        callback = trainer.checkpoint_callback
        for path in (getattr(callback, "last_model_path", ""), getattr(callback, "best_model_path", "")):
            if path and Path(path).is_file():
                return path
        if trainer.world_size != 1 or callback is None or getattr(callback, "dirpath", None) is None:
            return None  # a checkpoint now would need every rank (a collective save)
        path = str(Path(callback.dirpath) / "interrupted.ckpt")
        trainer.save_checkpoint(path)
        return path


def _log_file_as(client: Any, run_id: str, source: str | Path, artifact: str) -> None:
    """Log the file ``source`` as the artifact ``artifact`` (folder and file name).

    ``log_artifact`` names an upload after the local file and ``log_text``/``log_dict`` take
    content in memory, so a checkpoint is staged (copied) under the artifact's file name.
    """
    folder, name = os.path.split(artifact)
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / name
        shutil.copyfile(source, staged)
        client.log_artifact(run_id, str(staged), folder or None)


def log_json_and_chart(client: Any, run_id: str, doc: dict, json_path: str, fig: Any, html_path: str) -> None:
    """Log a report document as strict JSON (no NaN or infinity) at ``json_path`` and its plotly chart at ``html_path``.

    ``MlflowClient.log_figure`` writes the chart as HTML that loads plotly.js from its CDN.
    """
    client.log_text(run_id, json.dumps(doc, allow_nan=False), json_path)
    client.log_figure(run_id, fig, html_path)


def log_posterior_summary(client: Any, run_id: str, module: torch.nn.Module) -> dict:
    """Log ``posterior/summary.json`` and ``posterior/posterior.html``; returns the summary."""
    from lightning_bnn.evaluation.reports import posterior_summary

    summary = posterior_summary(module)
    log_json_and_chart(
        client,
        run_id,
        summary,
        artifacts.POSTERIOR_SUMMARY,
        figures.posterior_figure(summary),
        artifacts.POSTERIOR_CHART,
    )
    return summary


def _test_batches(datamodule: Any):
    for batch in datamodule.test_dataloader():
        yield batch[0], batch[1]


def _concat_samples(parts: list) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """Sampled predictions of several batches ([S, B_i, ...], or tuples of them) joined along B."""
    if isinstance(parts[0], tuple):
        return tuple(torch.cat([p[k].cpu() for p in parts], dim=1) for k in range(len(parts[0])))
    return torch.cat([p.cpu() for p in parts], dim=1)


#: test report name -> (JSON artifact, chart artifact, the function of :mod:`.figures` that draws it)
TEST_REPORTS = {
    "reliability": (artifacts.RELIABILITY, artifacts.RELIABILITY_CHART, figures.reliability_figure),
    "predictive_band": (artifacts.PREDICTIVE_BAND, artifacts.PREDICTIVE_BAND_CHART, figures.predictive_band_figure),
    "risk_coverage": (artifacts.RISK_COVERAGE, artifacts.RISK_COVERAGE_CHART, figures.risk_coverage_figure),
}


def log_evaluation(
    client: Any, run_id: str, module: Any, datamodule: Any, seed: int = 0, max_batches: int | None = None
) -> None:
    """Log the test-set report: the reliability diagram (classifier) or predictive band (regression).

    Predictions use ``num_samples_eval`` Monte Carlo samples drawn from a generator seeded with
    ``seed`` (the global random state is untouched); the report is chosen by the likelihood's
    summary (:func:`lightning_bnn.evaluation.reports.test_report`). ``max_batches`` limits the test
    batches (``fast_dev_run``); None: the whole test set.
    """
    from lightning_bnn.evaluation import reports

    was_training = module.training
    module.eval()
    xs, ys, predictions = [], [], []
    generator = torch.Generator(device=module.device).manual_seed(seed)
    try:
        for x, y in itertools.islice(_test_batches(datamodule), max_batches):
            predictions.append(module.sample_predictions(x.to(module.device), generator=generator))
            xs.append(x.cpu())
            ys.append(y.cpu())
    finally:
        module.train(was_training)
    if not ys:
        return
    summary = module.summarise(_concat_samples(predictions))
    for name, doc in reports.test_report(summary, torch.cat(xs), torch.cat(ys), module.preprocessing):
        json_path, html_path, figure = TEST_REPORTS[name]
        log_json_and_chart(client, run_id, doc, json_path, figure(doc), html_path)


def log_train_sample(client: Any, run_id: str, datamodule: Any, limit: int | None = None) -> None:
    """Log ``data/train_sample.csv``: up to ``limit`` training points in original units (regression)."""
    import numpy as np
    import pandas as pd

    from lightning_bnn.evaluation.reports import TRAIN_SAMPLE_MAX

    splits = getattr(datamodule, "splits", None)
    if splits is None:
        return
    limit = limit or TRAIN_SAMPLE_MAX
    n = splits.x_train.shape[0]
    index = np.sort(np.random.default_rng(0).permutation(n)[:limit]) if n > limit else np.arange(n)
    from lightning_bnn.evaluation.reports import original_inputs

    pre = datamodule.preprocessing
    x = original_inputs(splits.x_train[index], pre)
    y = pre.inverse_target(splits.y_train[index].reshape(len(index), -1).to(torch.float64))
    features = list(getattr(pre, "feature_names", ())) or [f"x{i}" for i in range(x.shape[1])]
    targets = list(getattr(pre, "target_names", ())) or (
        ["y"] if y.shape[1] == 1 else [f"y{i}" for i in range(y.shape[1])]
    )
    frame = pd.DataFrame({**dict(zip(features, x.T.numpy())), **dict(zip(targets, y.T.numpy()))})
    client.log_text(run_id, frame.to_csv(index=False), artifacts.TRAIN_SAMPLE)


# -- the MLflow pyfunc model -------------------------------------------------------------------------
def pyfunc_input_example(module: Any, datamodule: Any) -> Any | None:
    """Two training inputs in the pyfunc's input units.

    Model-space images as a float32 array; raw tabular features as a float64 DataFrame with the
    feature names as columns. A DataFrame example gives the signature named columns, so a served
    ``dataframe_split`` request is matched by column name, not by position; float64 because JSON
    numbers arrive as float64, which MLflow does not narrow to a float32 column.
    """
    splits = getattr(datamodule, "splits", None)
    if splits is None:
        return None
    example = module.preprocessing.serving_example(splits.x_train[:2])
    names = list(getattr(module.preprocessing, "feature_names", ()) or ())
    if names and example.ndim == 2 and example.shape[1] == len(names):
        import pandas as pd

        return pd.DataFrame(example.to(torch.float64).numpy(), columns=names)
    return example.to(torch.float32).numpy()


def pip_requirements() -> list[str]:
    """Exact pins of the packages the pyfunc model imports (from this environment)."""
    from importlib.metadata import PackageNotFoundError, version

    pins = []
    for name in PYFUNC_PACKAGES:
        try:
            pins.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            pins.append(name)
    return pins


def _package_source(folder: Path) -> Path:
    """A copy of the ``lightning_bnn`` package's Python files in ``folder/lightning_bnn`` (for ``code_paths``)."""
    source = Path(__file__).resolve().parent.parent
    target = folder / source.name
    for path in source.rglob("*.py"):
        if "__pycache__" not in path.parts:
            destination = target / path.relative_to(source)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, destination)
    return target


def network_package(hparams: Any) -> str | None:
    """The top-level package of a user network's class (None for the built-in networks and lightning_bnn's own)."""
    network = (hparams or {}).get("network") if isinstance(hparams, dict) else getattr(hparams, "network", None)
    if not isinstance(network, dict) or not isinstance(network.get("class_path"), str):
        return None
    package = network["class_path"].split(".")[0]
    return None if package == "lightning_bnn" else package


def _user_source(package: str, folder: Path) -> Path | None:
    """A copy of the user network's top-level module or package (for ``code_paths``), if it is plain source."""
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    origin = Path(spec.origin)
    folder.mkdir(parents=True, exist_ok=True)
    if origin.name == "__init__.py":
        target = folder / package
        shutil.copytree(origin.parent, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        return target
    target = folder / origin.name
    shutil.copyfile(origin, target)
    return target


def log_pyfunc_model(client: Any, run_id: str, model_dir: Path, example: Any, step: int = 0) -> str:
    """Log the run's MLflow pyfunc model as an MLflow 3 *LoggedModel* named ``pyfunc``; returns its model id.

    The LoggedModel is created in the run's experiment with ``source_run_id`` = the run (so
    ``search_logged_models(filter_string="source_run_id = '...'")`` and the run's Models tab find it),
    the run's params, and is recorded as an output of the run at ``step``. Its files are written
    by ``mlflow.pyfunc.log_model`` as a model from code: ``python_model`` is the *path* of
    :mod:`lightning_bnn.tracking.pyfunc_model` (no pickle); the safetensors weights in ``model_dir``
    ride along as its artifact, and the package's Python source as its ``code/`` (about 0.3 MB), so
    the model loads where ``lightning_bnn`` is not installed. The signature (tensor input, DataFrame
    output, params ``num_samples`` and ``seed``) is inferred from a prediction on ``example``.
    ``runs:/<run_id>/pyfunc`` still names it: MLflow 3 resolves a run's model by its name.
    The run's latest metrics are linked to it (:func:`link_final_metrics`).
    """
    import mlflow
    from mlflow.entities import LoggedModelOutput
    from mlflow.models import infer_signature

    from lightning_bnn.tracking import pyfunc_model
    from lightning_bnn.tracking.store import using_tracking_uri

    package = network_package(json.loads((model_dir / "model.json").read_text()).get("hparams"))
    # this process trained the user's network: its package is trusted here (a later load is not)
    module = load_model_dir(model_dir, trusted_modules=[package] if package else None)
    params = {"num_samples": int(module.hparams.num_samples_eval), "seed": 0}
    output = pyfunc_model.predict_frame(module, example, params)
    signature = infer_signature(example, output, params=params)
    run = client.get_run(run_id)
    logged = client.create_logged_model(
        experiment_id=run.info.experiment_id,
        name=artifacts.PYFUNC_MODEL,
        source_run_id=run_id,
        params=dict(run.data.params),
        tags={"lightning_bnn.task": str(module.hparams.get("task"))},
        model_type="lightning_bnn",
    )
    with (
        tempfile.TemporaryDirectory() as staging,
        using_tracking_uri(client.tracking_uri),
        _trusting(package),  # MLflow loads the model once to check the example; this process trained it
    ):
        code = [_package_source(Path(staging))]
        if package:  # the network's source travels too; loading it still needs LIGHTNING_BNN_TRUSTED_MODULES
            user = _user_source(package, Path(staging) / "user")
            code += [user] if user is not None else []
        mlflow.pyfunc.log_model(
            name=artifacts.PYFUNC_MODEL,
            model_id=logged.model_id,
            python_model=pyfunc_model.__file__,
            artifacts={pyfunc_model.MODEL_ARTIFACT: str(model_dir)},
            code_paths=[str(c) for c in code],
            signature=signature,
            input_example=example,
            pip_requirements=pip_requirements(),
        )
    client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step)])
    link_final_metrics(client, run_id, logged.model_id)
    return logged.model_id


@contextlib.contextmanager
def _trusting(package: str | None) -> Iterator[None]:
    """Add ``package`` to ``LIGHTNING_BNN_TRUSTED_MODULES`` inside the block (restored after); None: no change.

    ``mlflow.pyfunc.log_model`` loads the new model once to check its input example, and that load
    follows the trusted-modules rule. The process that trained the user's network has imported
    it already, so trusting it here runs no new code; a later load of the model is not affected.
    """
    from lightning_bnn.nn.custom import TRUSTED_MODULES_ENV

    if not package:
        yield
        return
    previous = os.environ.get(TRUSTED_MODULES_ENV)
    os.environ[TRUSTED_MODULES_ENV] = ",".join(p for p in (previous, package) if p)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(TRUSTED_MODULES_ENV, None)
        else:
            os.environ[TRUSTED_MODULES_ENV] = previous


def link_final_metrics(client: Any, run_id: str, model_id: str) -> int:
    """Link the latest value of each of the run's metrics to the LoggedModel ``model_id``; returns how many.

    The point is logged again with ``model_id`` (``log_batch``): MLflow keeps one copy in the
    run's history (same key, step, timestamp and value) and records it as the model's metric.
    Metrics already linked at the same step and time are skipped, so calling it again after
    testing adds only the new ``test/*`` metrics.
    """
    from mlflow.entities import Metric

    linked = {(m.key, m.step, m.timestamp) for m in (client.get_logged_model(model_id).metrics or [])}
    points = []
    for key in client.get_run(run_id).data.metrics:
        history = client.get_metric_history(run_id, key)
        if not history:
            continue
        last = max(history, key=lambda m: (m.step, m.timestamp))
        if (last.key, last.step, last.timestamp) not in linked:
            points.append(Metric(last.key, last.value, last.timestamp, last.step, run_id=run_id, model_id=model_id))
    if points:
        client.log_batch(run_id, metrics=points)
    return len(points)
