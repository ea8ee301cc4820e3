"""The trial side of an Optuna sweep: opening the study's storage, and the pruning callback.

A sweep runs each trial as ``python -m lightning_bnn fit ...`` in a subprocess and adds
``--trainer.callbacks+=lightning_bnn.cli.sweep_trial.OptunaPruning``. The callback finds its
trial through the environment variable :data:`TRIAL_ENV` (JSON: storage URL, study
name, trial id, metric, pruner), reports the metric after every validation epoch and,
when the pruner says so, records :data:`PRUNED_ATTR` on the trial and stops training.
The fit then ends normally; the sweep reads the mark and ends the trial ``PRUNED``.

This module imports Lightning, Optuna and :mod:`lightning_bnn.cli.sweep_spec` (for the pruner) only.
"""

from __future__ import annotations

import json
import os
from typing import Any

import lightning.pytorch as L

#: environment variable carrying the trial's coordinates into the fit subprocess
TRIAL_ENV = "LIGHTNING_BNN_OPTUNA_TRIAL"
#: trial user attribute set by :class:`OptunaPruning` when the pruner stopped the trial (value: the epoch)
PRUNED_ATTR = "lightning_bnn.pruned_at_epoch"
#: seconds a SQLite connection waits for another worker's write before giving up
SQLITE_TIMEOUT_S = 60


def open_storage(url: str, heartbeat_interval: int | None = None, grace_period: int | None = None) -> Any:
    """An Optuna RDB storage for ``url``; on SQLite, every transaction takes the write lock first.

    Optuna pops an enqueued trial by reading it and then marking it ``RUNNING``. PostgreSQL
    makes that atomic with ``SELECT ... FOR UPDATE``; SQLite ignores ``FOR UPDATE`` and the
    Python driver only starts a transaction at the first write, so two workers could pop
    the same trial. ``BEGIN IMMEDIATE`` (SQLAlchemy's recipe for pysqlite) serialises
    them. With ``heartbeat_interval``, a trial whose worker stops beating for
    ``grace_period`` seconds fails and is enqueued again (:class:`RetryHeartbeatStaleTrialCallback`).
    """
    import optuna
    from sqlalchemy import event

    sqlite = url.startswith("sqlite")
    engine_kwargs = {"connect_args": {"timeout": SQLITE_TIMEOUT_S, "isolation_level": None}} if sqlite else {}
    if sqlite and url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
        from pathlib import Path

        Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    retry = None
    if heartbeat_interval is not None:
        retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3)
    storage = optuna.storages.RDBStorage(
        url,
        engine_kwargs=engine_kwargs,
        heartbeat_interval=heartbeat_interval,
        grace_period=grace_period,
        heartbeat_stale_trial_callback=retry,
    )
    if sqlite:

        @event.listens_for(storage.engine, "begin")
        def _begin_immediate(connection: Any) -> None:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

    return storage


def trial_env(storage: str, study: str, trial_id: int, metric: str, pruner: str | None, pruner_args: dict) -> str:
    """The value of :data:`TRIAL_ENV` for one trial."""
    payload = {
        "storage": storage,
        "study": study,
        "trial_id": trial_id,
        "metric": metric,
        "pruner": pruner,
        "pruner_args": pruner_args,
    }
    return json.dumps(payload)


class OptunaPruning(L.Callback):
    """Report the sweep's metric to the Optuna trial each validation epoch; stop the fit when pruned.

    Does nothing outside a sweep (without :data:`TRIAL_ENV`). The decision is the study's
    pruner's (median, Hyperband, threshold), evaluated here against the other trials'
    reports in the shared storage.
    """

    def __init__(self) -> None:
        super().__init__()
        raw = os.environ.get(TRIAL_ENV)
        self.coordinates = json.loads(raw) if raw else None
        self._trial: Any = None
        self.pruned_at: int | None = None

    def _open(self) -> Any:
        if self._trial is None:
            import optuna

            from lightning_bnn.cli.sweep_spec import make_pruner

            c = self.coordinates
            study = optuna.load_study(
                study_name=c["study"],
                storage=open_storage(c["storage"]),
                pruner=make_pruner(c["pruner"], c["pruner_args"]),
            )
            self._trial = optuna.trial.Trial(study, int(c["trial_id"]))
        return self._trial

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.coordinates is None or trainer.sanity_checking or not trainer.is_global_zero:
            return
        value = trainer.callback_metrics.get(self.coordinates["metric"])
        if value is None:
            return
        trial = self._open()
        epoch = int(trainer.current_epoch)
        trial.report(float(value), step=epoch)
        if trial.should_prune():
            trial.set_user_attr(PRUNED_ATTR, epoch)
            self.pruned_at = epoch
            trainer.should_stop = True
