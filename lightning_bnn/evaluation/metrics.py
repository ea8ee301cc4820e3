r"""Evaluation metrics over sampled predictions, as torchmetrics (synchronised under DDP).

Classification, from sampled class probabilities p_s [S, B, C] with predictive
\bar p = mean_s p_s:

* ``acc``: fraction with argmax \bar p = y (torchmetrics ``MulticlassAccuracy``, micro).
* ``nll``: mean of -log \bar p_y.
* ``brier``: mean of \sum_c (\bar p_c - [y = c])^2.
* ``ece``: expected calibration error with 15 equal-width confidence bins,
  \sum_b (n_b / n) |acc_b - conf_b| (Guo et al. 2017; torchmetrics
  ``MulticlassCalibrationError``, norm l1).
* ``entropy``: mean predictive entropy H[\bar p]; ``mi``: mean mutual information
  (see :mod:`lightning_bnn.nn.predictive`).

Regression, from the predictive mixture of N(m_s, s_s^2):

* ``rmse``: sqrt(mean (y - mean_s m_s)^2);
* ``nll``: mean of -log (1/S) \sum_s N(y; m_s, s_s^2);
* ``picp95``: fraction of targets inside the central 95% interval mean -+ 1.96 std
  of the mixture's moments (prediction interval coverage probability);
* ``width95``: mean width of that interval.
"""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics import MeanMetric, MeanSquaredError
from torchmetrics.classification import MulticlassAccuracy, MulticlassCalibrationError

from lightning_bnn.nn.predictive import (
    central_interval,
    mixture_log_likelihood,
    mutual_information,
    predictive_entropy,
    regression_moments,
)

ECE_BINS = 15


class ClassificationMetrics(nn.Module):
    r"""Accuracy, NLL, Brier, ECE, entropy and mutual information of sampled class probabilities.

    For N examples with targets y_n and predictive \bar p_n = \frac1S \sum_s p_{s,n}:

    * ``acc`` = \frac1N \sum_n [\arg\max_c \bar p_{n,c} = y_n];
    * ``nll`` = -\frac1N \sum_n \log \bar p_{n,y_n} (probabilities clamped at 1e-12);
    * ``brier`` = \frac1N \sum_n \sum_c (\bar p_{n,c} - [y_n = c])^2 (Brier 1950; in [0, 2]);
    * ``ece`` = \sum_{b=1}^{15} \frac{|B_b|}{N} |acc(B_b) - conf(B_b)|, where B_b holds the
      examples whose confidence \max_c \bar p_{n,c} falls in [(b-1)/15, b/15) (Naeini et al. 2015,
      Guo et al. 2017; torchmetrics ``MulticlassCalibrationError(n_bins=15, norm="l1")``);
    * ``entropy`` = \frac1N \sum_n H[\bar p_n] and ``mi`` = \frac1N \sum_n (H[\bar p_n] -
      \frac1S \sum_s H[p_{s,n}]), in nats (:func:`~lightning_bnn.nn.predictive.mutual_information`).

    Args:
        num_classes: number of classes C.
    """

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.acc = MulticlassAccuracy(num_classes, average="micro")
        self.ece = MulticlassCalibrationError(num_classes, n_bins=ECE_BINS, norm="l1")
        self.nll = MeanMetric()
        self.brier = MeanMetric()
        self.entropy = MeanMetric()
        self.mi = MeanMetric()

    def update(self, probs: torch.Tensor, target: torch.Tensor) -> None:
        """Accumulate a batch: probs [S, B, C], target [B] class indices."""
        # clamped so that torchmetrics never mistakes rounding above 1 for logits (it would softmax them)
        mean = probs.mean(dim=0).clamp(0.0, 1.0)
        self.acc.update(mean, target)
        self.ece.update(mean, target)
        self.nll.update(-torch.log(mean.gather(1, target[:, None]).squeeze(1).clamp_min(1e-12)))
        onehot = nn.functional.one_hot(target, self.num_classes).to(mean.dtype)
        self.brier.update((mean - onehot).square().sum(dim=1))
        self.entropy.update(predictive_entropy(probs))
        self.mi.update(mutual_information(probs))

    def compute(self) -> dict[str, torch.Tensor]:
        """Epoch values, keyed acc, nll, brier, ece, entropy, mi."""
        return {name: getattr(self, name).compute() for name in ("acc", "nll", "brier", "ece", "entropy", "mi")}

    def reset(self) -> None:
        """Clear accumulated state."""
        for name in ("acc", "nll", "brier", "ece", "entropy", "mi"):
            getattr(self, name).reset()


class RegressionMetrics(nn.Module):
    r"""RMSE, predictive NLL, 95% interval coverage and width of a Gaussian predictive mixture.

    For N targets y_n (D values each) and per-sample means m_{s,n} and noise stds
    s_{s,n}, the predictive is the mixture \frac1S \sum_s N(m_{s,n}, s_{s,n}^2) with mean
    \mu_n = \frac1S \sum_s m_{s,n} and variance \sigma_n^2 = \frac1S \sum_s s_{s,n}^2 +
    \mathrm{Var}_s\, m_{s,n}:

    * ``rmse`` = \sqrt{\frac{1}{ND} \sum_{n,d} (y_{n,d} - \mu_{n,d})^2};
    * ``nll`` = -\frac1N \sum_n \log \frac1S \sum_s \prod_d N(y_{n,d}; m_{s,n,d}, s_{s,n,d}^2);
    * ``picp95`` = \frac{1}{ND} \sum_{n,d} [|y_{n,d} - \mu_{n,d}| \le 1.96\, \sigma_{n,d}]
      (coverage of the Gaussian-moment 95% interval; ideal 0.95);
    * ``width95`` = \frac{1}{ND} \sum_{n,d} 2 \cdot 1.96\, \sigma_{n,d}.
    """

    def __init__(self) -> None:
        super().__init__()
        self.rmse = MeanSquaredError(squared=False)
        self.nll = MeanMetric()
        self.picp95 = MeanMetric()
        self.width95 = MeanMetric()

    def update(self, mean: torch.Tensor, std: torch.Tensor, target: torch.Tensor) -> None:
        """Accumulate a batch: per-sample mean and std [S, B, D], target [B, D]."""
        target = target.reshape(target.shape[0], -1)
        moments = regression_moments(mean, std)
        self.rmse.update(moments["mean"], target)
        self.nll.update(-mixture_log_likelihood(mean, std, target))
        low, high = central_interval(moments["mean"], moments["std"], 0.95)
        self.picp95.update(((target >= low) & (target <= high)).to(mean.dtype))
        self.width95.update(high - low)

    def compute(self) -> dict[str, torch.Tensor]:
        """Epoch values, keyed rmse, nll, picp95, width95."""
        return {name: getattr(self, name).compute() for name in ("rmse", "nll", "picp95", "width95")}

    def reset(self) -> None:
        """Clear accumulated state."""
        for name in ("rmse", "nll", "picp95", "width95"):
            getattr(self, name).reset()
