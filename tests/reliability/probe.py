"""A callback that parks a training job at a known point, so a test can signal it mid-epoch.

Used as ``--trainer.callbacks+=tests.reliability.probe.ParkAt`` on the real CLI: at
batch ``batch`` of epoch ``epoch`` it writes ``marker`` and then waits (up to
``seconds``) for the test's signal, returning early if Lightning received SIGTERM so
that Lightning's own handling runs.
"""

from __future__ import annotations

import time
from pathlib import Path

import lightning.pytorch as L


class ParkAt(L.Callback):
    """Write ``marker`` at (epoch, batch), then wait there for a signal."""

    def __init__(self, marker: str, epoch: int = 1, batch: int = 3, seconds: float = 600.0) -> None:
        self.marker = marker
        self.epoch = epoch
        self.batch = batch
        self.seconds = seconds

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.current_epoch != self.epoch or batch_idx != self.batch:
            return
        Path(self.marker).write_text(f"epoch {trainer.current_epoch} batch {batch_idx}\n")
        deadline = time.monotonic() + self.seconds
        while time.monotonic() < deadline and not trainer.received_sigterm:
            time.sleep(0.02)
