"""After ``trainer.test``: the OOD scores of :mod:`lightning_bnn.evaluation.ood`, logged to the run.

Metrics ``test/ood_*`` go to every logger; the histogram record goes to the MLflow run as
``evaluation/ood_entropy.json`` with its chart ``evaluation/ood_entropy.html``
(:mod:`lightning_bnn.tracking.artifacts`).
"""

from __future__ import annotations

import lightning.pytorch as L
from lightning.pytorch.loggers import MLFlowLogger

from lightning_bnn.evaluation.ood import MAX_EXAMPLES, evaluate_ood
from lightning_bnn.tracking.artifacts import OOD_HISTOGRAM, OOD_HISTOGRAM_CHART
from lightning_bnn.tracking.figures import histogram_figure


class OODCallback(L.Callback):
    """After ``trainer.test``: OOD AUROCs as ``test/ood_*`` metrics, entropy histograms as artifacts.

    Scores the first ``max_examples`` test inputs of the data module's ``splits`` and
    the default OOD sets (see :mod:`lightning_bnn.evaluation.ood`). Runs on rank 0 only; does
    nothing for regression or non-image data. The results stay in :attr:`metrics` and
    :attr:`record` for inspection.

    Args:
        max_examples: at most this many inputs per set.
        num_samples: predictive samples (default: the model's ``num_samples_eval``).
        seed: seed of the noise set.
    """

    def __init__(self, max_examples: int = MAX_EXAMPLES, num_samples: int | None = None, seed: int = 0) -> None:
        self.max_examples = max_examples
        self.num_samples = num_samples
        self.seed = seed
        self.metrics: dict[str, float] = {}
        self.record: dict | None = None

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_rank != 0 or trainer.sanity_checking:
            return
        datamodule = trainer.datamodule
        splits = getattr(datamodule, "splits", None)
        if splits is None:
            return
        dataset = getattr(datamodule, "name", "data")
        # fast_dev_run tests a batch or two: score as many inputs, not thousands
        max_examples = min(self.max_examples, 64) if trainer.fast_dev_run else self.max_examples
        self.metrics, self.record = evaluate_ood(
            pl_module, dataset, splits.x_test, self.num_samples, max_examples, self.seed
        )
        if not self.metrics:
            return
        for logger in trainer.loggers:
            logger.log_metrics(self.metrics, step=trainer.global_step)
        for logger in trainer.loggers:
            if isinstance(logger, MLFlowLogger):
                logger.experiment.log_dict(logger.run_id, self.record, OOD_HISTOGRAM)
                logger.experiment.log_figure(logger.run_id, histogram_figure(self.record), OOD_HISTOGRAM_CHART)
