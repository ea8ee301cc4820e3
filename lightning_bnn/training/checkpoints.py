"""The model a run keeps: the weights of its best validation epoch (lowest ``val/nll``), not its last.

Bayesian and point-estimate networks alike are judged at their best validation checkpoint:
a longer run then cannot make a model look worse by overfitting after its best epoch.
:class:`RestoreBestWeights` loads that checkpoint's weights into the model when ``fit`` ends,
before the run's model files are written and before ``test``; ``last.ckpt`` is unchanged, so
a run still resumes from where it stopped.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import lightning.pytorch as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint


class ModelCheckpointChoice(StrEnum):
    """Which weights a finished ``fit`` keeps: ``best`` (lowest validation NLL) or ``last``."""

    best = "best"
    last = "last"


class RestoreBestWeights(L.Callback):
    """At the end of an uninterrupted ``fit``, load the best checkpoint's weights into the model.

    Attributes:
        restored_epoch: the epoch whose weights were loaded (None: the last weights were kept).
    """

    def __init__(self) -> None:
        self.restored_epoch: int | None = None

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        path = getattr(trainer.checkpoint_callback, "best_model_path", "") or ""
        if trainer.interrupted or not path or not Path(path).is_file():
            return
        checkpoint = torch.load(path, map_location=pl_module.device, weights_only=True)
        pl_module.load_state_dict(checkpoint["state_dict"])
        self.restored_epoch = int(checkpoint.get("epoch", -1))


class BestValidationCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose best (top-k) checkpoints skip the model's pretraining epochs.

    A model with ``pretrain_epochs`` trains its means alone first; those epochs are a point
    estimate, not the Bayesian network the run is for, so they never count as its best. ``last``
    checkpoints are saved as usual.
    """

    def _save_topk_checkpoint(self, trainer: L.Trainer, monitor_candidates: dict[str, torch.Tensor]) -> None:
        # Lightning's hook for the top-k save (pinned lightning version; tests/test_pretrain.py checks it)
        if getattr(trainer.lightning_module, "pretraining", False):
            return
        super()._save_topk_checkpoint(trainer, monitor_candidates)
