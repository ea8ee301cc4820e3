"""Command line: ``python -m lightning_bnn fit --config CONFIG.yaml`` (LightningCLI).

``fit``, ``validate``, ``test`` and ``predict`` are LightningCLI subcommands. Every
run is recorded in MLflow (see :mod:`lightning_bnn.tracking.store`); ``fit`` also tests
the final model (``--test_after_fit false`` to skip).

Extra options:
    --mlflow.tracking_uri URI   store (default $MLFLOW_TRACKING_URI or sqlite:///mlruns/mlflow.db)
    --mlflow.experiment NAME    experiment (default: the data set's name)
    --mlflow.run_name NAME      run name
    --mlflow.enabled false      do not record the run
"""

from __future__ import annotations

import contextlib
import pickle
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.loggers import MLFlowLogger
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from lightning_bnn.data.base import BaseDataModule
from lightning_bnn.nn.custom import NetworkSpec
from lightning_bnn.tracking.artifacts import WEIGHTS
from lightning_bnn.tracking.ood_callback import OODCallback
from lightning_bnn.tracking.recorder import MlflowRunCallback
from lightning_bnn.tracking.store import (
    checkpoint_root,
    checkpoint_run_info,
    default_run_name,
    download_run_artifact,
    flatten_params,
    is_active_run,
    make_logger,
    parse_run,
    resolve_tracking_uri,
)
from lightning_bnn.training.checkpoints import BestValidationCheckpoint, ModelCheckpointChoice, RestoreBestWeights
from lightning_bnn.training.module import INIT_SOURCE, BNNModule


class BNNCLI(LightningCLI):
    """LightningCLI wired to MLflow, with the data module's shape linked into the model."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        for attribute in ("input_shape", "num_outputs", "task", "preprocessing"):
            parser.link_arguments(f"data.{attribute}", f"model.{attribute}", apply_on="instantiate")
        parser.add_argument("--mlflow.enabled", type=bool, default=True, help="record the run in MLflow")
        parser.add_argument("--mlflow.tracking_uri", type=str | None, default=None, help="MLflow tracking URI")
        parser.add_argument("--mlflow.experiment", type=str | None, default=None, help="experiment name")
        parser.add_argument("--mlflow.run_name", type=str | None, default=None, help="run name")
        parser.add_argument("--test_after_fit", type=bool, default=True, help="test the kept model after fit")
        parser.add_argument(
            "--model_checkpoint",
            type=ModelCheckpointChoice,
            default=ModelCheckpointChoice.best,
            help="the weights a fit keeps, logs and tests: best (lowest val/nll) or last",
        )

    def _parse_ckpt_path(self) -> None:
        # LightningCLI reads --ckpt_path's hyperparameters with torch.load(weights_only=True); a
        # checkpoint holding pickled code is refused there. Say so plainly (torch's own message
        # suggests retrying with weights_only=False, which would run the code).
        try:
            super()._parse_ckpt_path()
        except pickle.UnpicklingError as err:
            self._refuse_pickled(self.config[self.config.subcommand].get("ckpt_path"), err)

    def _refuse_pickled(self, path: Any, err: pickle.UnpicklingError) -> None:
        """Exit with a clear message for a checkpoint that torch.load(weights_only=True) refused."""
        reason = str(err).split("WeightsUnpickler error:")[-1].strip().split(". ")[0]
        self.parser.error(
            f"--ckpt_path {path}: refusing to load this checkpoint: it holds pickled objects other than "
            f"tensors and plain data ({reason}). lightning_bnn only loads checkpoints with "
            "torch.load(weights_only=True) and never runs code from a file.",
            ex=err,
        )

    def _prepare_subcommand_kwargs(self, subcommand: str) -> dict[str, Any]:
        kwargs = super()._prepare_subcommand_kwargs(subcommand)
        if "weights_only" in self._subcommand_method_arguments[subcommand]:
            kwargs["weights_only"] = True  # whatever --weights_only or TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD say
        return kwargs

    def instantiate_classes(self) -> None:
        config = self.config.get(str(self.subcommand), self.config)
        uri = (config.get("mlflow") or {}).get("tracking_uri")
        token = INIT_SOURCE.set(lambda source: self._init_weights(source, uri))
        try:
            super().instantiate_classes()
            if self.subcommand in (None, "fit"):  # the epochs to train are a fit's
                self.model.check_schedule(self.trainer)
        except (ValueError, MisconfigurationException) as err:
            # A bad config value (refused by a constructor, or by the Trainer, e.g. max_epochs=-3):
            # exit with the message, which names the field, as for a parse error, not a traceback.
            self.parser.error(f"invalid configuration: {err}", ex=err)
        finally:
            INIT_SOURCE.reset(token)

    @staticmethod
    def _init_weights(source: str, tracking_uri: str | None) -> str:
        """``model.init_from`` given as a run id (or ``runs:/ID``): that run's weights, fetched from the store."""
        uri = resolve_tracking_uri(tracking_uri)
        try:
            run_id = parse_run(source)
        except ValueError:
            raise ValueError(f"init_from {source!r}: neither a weights file nor an MLflow run id") from None
        try:
            return _fetch(f"runs:/{run_id}/{WEIGHTS}", uri)
        except Exception as err:  # an unknown run, or a run without weights
            raise ValueError(f"init_from {source!r}: no such file, and no run weights in {uri}: {err}") from err

    def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
        config = self.config.get(str(self.subcommand), self.config)
        mlflow_cfg = config.get("mlflow") or {}
        trainer_cfg = config.get("trainer") or {}
        if trainer_cfg.get("default_root_dir") is None and not mlflow_cfg.get("enabled", True):
            # no run to record, but checkpoints and Lightning's own logs still go beside the store
            with contextlib.suppress(ValueError):
                kwargs["default_root_dir"] = str(checkpoint_root(resolve_tracking_uri(mlflow_cfg.get("tracking_uri"))))
        if mlflow_cfg.get("enabled", True) and trainer_cfg.get("logger") in (None, True):
            uri = resolve_tracking_uri(mlflow_cfg.get("tracking_uri"))
            if trainer_cfg.get("default_root_dir") is None:
                kwargs["default_root_dir"] = str(checkpoint_root(uri))
            experiment = mlflow_cfg.get("experiment") or getattr(self.datamodule, "name", "lightning_bnn")
            resumed_from, previous_run, run_id = self._resumed_run(config, uri)
            tags = None
            if resumed_from and run_id is None:  # the checkpoint's run is not in this store: a new, linked run
                tags = {"resumed_from_checkpoint": resumed_from, "resumed_from_run": previous_run or "unknown"}
            dataset = getattr(self.datamodule, "name", "data")
            run_name = mlflow_cfg.get("run_name") or default_run_name(dict(self.model.hparams), dataset)
            kwargs["logger"] = make_logger(experiment, uri, run_name, tags=tags, run_id=run_id)
            plain = self._parser(self.subcommand).dump(config, format="yaml", skip_none=False)
            params = _readable_params(config, self.datamodule)
            record = MlflowRunCallback(
                config=params,
                config_yaml=plain,
                resumed_from=resumed_from if run_id else None,
                seed=int(config.get("seed_everything") or 0),
            )
            kwargs["callbacks"] = self._callbacks(trainer_cfg, [*self._restore(config), record, OODCallback()])
        elif self._restore(config):  # no run to record: still keep the best checkpoint's weights, if any is saved
            kwargs["callbacks"] = self._callbacks(trainer_cfg, self._restore(config), default_checkpoint=False)
        trainer = super().instantiate_trainer(**kwargs)
        if trainer.fast_dev_run and isinstance(kwargs.get("logger"), MLFlowLogger):
            # fast_dev_run swaps every logger for a DummyLogger; a run is still recorded in MLflow.
            trainer.loggers = [kwargs["logger"]]
        return trainer

    def _resumed_run(self, config: Any, uri: str) -> tuple[str | None, str | None, str | None]:
        """(checkpoint, its run id, run id to continue) for ``fit --ckpt_path CKPT``.

        The run id comes from the checkpoint itself (:func:`checkpoint_run_info`). The run
        is continued only if it exists (not deleted) in the store ``uri``.
        """
        ckpt_path = config.get("ckpt_path") if self.subcommand == "fit" else None
        if isinstance(ckpt_path, str) and ckpt_path.startswith("runs:/"):
            ckpt_path = self._download_checkpoint(ckpt_path, uri)
        if not ckpt_path or not Path(str(ckpt_path)).is_file():
            return None, None, None
        info = checkpoint_run_info(ckpt_path) or {}
        previous = info.get("run_id")
        if previous is None or rank_zero_only.rank != 0:
            return str(ckpt_path), previous, None
        return str(ckpt_path), previous, (previous if is_active_run(previous, uri) else None)

    def _download_checkpoint(self, ckpt_uri: str, uri: str) -> str:
        """Fetch ``runs:/<id>/<path>.ckpt`` into ``<checkpoint root>/downloads/<id>/`` and fit from that file."""
        try:
            local = _fetch(ckpt_uri, uri)
        except Exception as err:  # an unknown run or a missing artifact: say which, as for a bad option
            self.parser.error(f"--ckpt_path {ckpt_uri}: cannot download it from {uri}: {err}", ex=err)
        try:  # a file from a store is untrusted: refuse pickled code now, with a clear message
            torch.load(local, map_location="cpu", weights_only=True, mmap=True)
        except pickle.UnpicklingError as err:
            self._refuse_pickled(ckpt_uri, err)
        self.config_init[self.subcommand]["ckpt_path"] = local  # what trainer.fit receives
        return local

    def _restore(self, config: Any) -> list[L.Callback]:
        """[RestoreBestWeights] for a ``fit`` that keeps its best validation epoch (``--model_checkpoint best``)."""
        keep = config.get("model_checkpoint", ModelCheckpointChoice.best)
        return [RestoreBestWeights()] if self.subcommand == "fit" and keep == ModelCheckpointChoice.best else []

    def _callbacks(
        self, trainer_cfg: dict, extra: list[L.Callback], default_checkpoint: bool = True
    ) -> list[L.Callback]:
        """The config's callbacks, then ``extra`` (in order), then the default checkpoint if the config has none."""
        callbacks = self._get(self.config_init, "trainer", default={}).get("callbacks") or []
        callbacks = list(callbacks) if isinstance(callbacks, list) else [callbacks]
        has_checkpoint = any(isinstance(c, ModelCheckpoint) for c in callbacks) or not default_checkpoint
        return [*callbacks, *extra, *([] if has_checkpoint else self._default_checkpoint(trainer_cfg))]

    @staticmethod
    def _default_checkpoint(trainer_cfg: dict) -> list[L.Callback]:
        if trainer_cfg.get("enable_checkpointing") is False:
            return []
        return [BestValidationCheckpoint(monitor="val/nll", mode="min", save_last=True, filename="best-{epoch}")]

    def after_fit(self) -> None:
        config = self.config.get("fit", self.config)
        if config.get("test_after_fit", True) and not self.trainer.interrupted:
            self.trainer.test(self.model, datamodule=self.datamodule, verbose=True)


def _fetch(artifact_uri: str, tracking_uri: str) -> str:
    """Download ``runs:/<id>/<path>`` into ``<checkpoint root>/downloads/<id>/``; return the local file."""
    run_id = artifact_uri[len("runs:/") :].strip("/").split("/")[0]
    target = checkpoint_root(tracking_uri) / "downloads" / run_id
    target.mkdir(parents=True, exist_ok=True)
    return download_run_artifact(artifact_uri, target, tracking_uri)


def _readable_params(config: Any, datamodule: BaseDataModule | None) -> dict:
    """The resolved config as readable params: model fields unprefixed, data.* and trainer.* prefixed."""
    as_dict = config.as_dict() if hasattr(config, "as_dict") else dict(config)
    model = dict(as_dict.get("model") or {})
    if isinstance(model.get("init_args"), dict):
        model = model["init_args"]
    for linked in ("preprocessing",):
        model.pop(linked, None)
    network = NetworkSpec.from_value(model.pop("network", None))
    if network is not None:  # the class path as one readable param, its init args as network.<arg>
        model["network"] = network.class_path
        model.update({f"network.{k}": v for k, v in network.init_args.items()})
    data = dict(as_dict.get("data") or {})
    data_args = data.get("init_args", data) if isinstance(data.get("init_args"), dict) else data
    trainer = {
        k: v for k, v in (as_dict.get("trainer") or {}).items() if isinstance(v, (int, float, str, bool)) or v is None
    }
    params = {**flatten_params(model)}
    params.update(flatten_params(data_args, "data."))
    params.update(flatten_params(trainer, "trainer."))
    params["dataset"] = getattr(datamodule, "name", "unknown")
    params["data.class"] = str(data.get("class_path", type(datamodule).__name__))
    params["seed"] = str(as_dict.get("seed_everything"))
    params["batch_size"] = str(data_args.get("batch_size"))
    return params


def main(args: list[str] | None = None) -> BNNCLI:
    """Run the LightningCLI (``args`` default to the command line)."""
    return BNNCLI(
        BNNModule,
        BaseDataModule,
        subclass_mode_data=True,
        save_config_callback=None,
        seed_everything_default=0,
        trainer_defaults={"max_epochs": 10},
        args=args,
        auto_configure_optimizers=False,
    )
