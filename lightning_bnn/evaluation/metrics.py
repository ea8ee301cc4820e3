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

from typing import Any

import torch
from torch import nn
from torchmetrics import MeanMetric, MeanSquaredError, Metric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassCalibrationError
from torchmetrics.utilities import dim_zero_cat

from lightning_bnn.nn.likelihoods import CategoricalLikelihood, GaussianLikelihood
from lightning_bnn.nn.predictive import (
    central_interval,
    mixture_log_likelihood,
    mutual_information,
    predictive_entropy,
    regression_moments,
)

ECE_BINS = 15


def _mean_probs(probs: torch.Tensor) -> torch.Tensor:
    # clamped so that torchmetrics never mistakes rounding above 1 for logits (it would softmax them)
    return probs.mean(dim=0).clamp(0.0, 1.0)


# -- classification: each metric takes sampled probabilities [S, B, C] and class indices [B] -------
class SampledAccuracy(MulticlassAccuracy):
    """Accuracy of the predictive mean's argmax (micro)."""

    def __init__(self, num_classes: int, **kwargs: Any) -> None:
        super().__init__(num_classes, average="micro", **kwargs)

    def update(self, probs: torch.Tensor, target: torch.Tensor) -> None:
        super().update(_mean_probs(probs), target)


class SampledCalibrationError(MulticlassCalibrationError):
    """Expected calibration error of the predictive mean, :data:`ECE_BINS` equal-width bins, l1."""

    def __init__(self, num_classes: int, **kwargs: Any) -> None:
        super().__init__(num_classes, n_bins=ECE_BINS, norm="l1", **kwargs)

    def update(self, probs: torch.Tensor, target: torch.Tensor) -> None:
        super().update(_mean_probs(probs), target)


class PredictiveNLL(MeanMetric):
    r"""Mean of -log \bar p_y (probabilities clamped at 1e-12)."""

    def update(self, probs: torch.Tensor, target: torch.Tensor) -> None:
        mean = _mean_probs(probs)
        super().update(-torch.log(mean.gather(1, target[:, None]).squeeze(1).clamp_min(1e-12)))


class Brier(MeanMetric):
    r"""Mean of sum_c (\bar p_c - [y = c])^2."""

    def update(self, probs: torch.Tensor, target: torch.Tensor) -> None:
        mean = _mean_probs(probs)
        onehot = nn.functional.one_hot(target, mean.shape[-1]).to(mean.dtype)
        super().update((mean - onehot).square().sum(dim=1))


class MeanPredictiveEntropy(MeanMetric):
    r"""Mean predictive entropy H[\bar p] (nats)."""

    def update(self, probs: torch.Tensor, target: torch.Tensor) -> None:
        super().update(predictive_entropy(probs))


class MeanMutualInformation(MeanMetric):
    """Mean mutual information (epistemic part, nats)."""

    def update(self, probs: torch.Tensor, target: torch.Tensor) -> None:
        super().update(mutual_information(probs))


def risk_coverage(uncertainty: torch.Tensor, correct: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The risk-coverage curve of selective prediction (Geifman & El-Yaniv 2017).

    Inputs are sorted by ``uncertainty``, most certain first (ties keep their order); at coverage
    k/N the model answers the k most certain inputs and refuses the rest, and the risk is the
    error rate among the answered ones: risk(k) = rac1k \sum_{i \le k} [	ext{wrong}_i].

    Returns:
        (coverage ``[N]`` = k/N for k = 1..N, risk ``[N]``).
    """
    order = torch.argsort(uncertainty.detach().to(torch.float64), stable=True)
    wrong = 1.0 - correct.detach().to(torch.float64)[order]
    k = torch.arange(1, wrong.numel() + 1, dtype=torch.float64)
    return k / max(wrong.numel(), 1), wrong.cumsum(0) / k


class SelectiveRisk(Metric):
    r"""AURC: the area under the risk-coverage curve, ranking inputs by predictive entropy H[\bar p].

    AURC = \frac1N \sum_{k=1}^N risk(k) (:func:`risk_coverage`); lower is better: the model's
    errors sit among the inputs it is least sure of. Its floor is the AURC of a perfect ranking
    at the same accuracy.
    """

    full_state_update = False
    higher_is_better = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("uncertainty", default=[], dist_reduce_fx="cat")
        self.add_state("correct", default=[], dist_reduce_fx="cat")

    def update(self, probs: torch.Tensor, target: torch.Tensor) -> None:
        mean = _mean_probs(probs)
        self.uncertainty.append(predictive_entropy(probs))
        self.correct.append((mean.argmax(dim=-1) == target).to(mean.dtype))

    def compute(self) -> torch.Tensor:
        uncertainty = dim_zero_cat(self.uncertainty)
        correct = dim_zero_cat(self.correct)
        return risk_coverage(uncertainty, correct)[1].mean().to(torch.float32)


def classification_metrics(num_classes: int) -> MetricCollection:
    r"""Accuracy, NLL, Brier, ECE, entropy and mutual information of sampled class probabilities.

    For N examples with targets y_n and predictive \bar p_n = \frac1S \sum_s p_{s,n}:

    * ``acc`` = \frac1N \sum_n [\arg\max_c \bar p_{n,c} = y_n];
    * ``nll`` = -\frac1N \sum_n \log \bar p_{n,y_n} (probabilities clamped at 1e-12);
    * ``brier`` = \frac1N \sum_n \sum_c (\bar p_{n,c} - [y_n = c])^2 (Brier 1950; in [0, 2]);
    * ``ece`` = \sum_{b=1}^{15} \frac{|B_b|}{N} |acc(B_b) - conf(B_b)|, where B_b holds the
      examples whose confidence \max_c \bar p_{n,c} falls in [(b-1)/15, b/15) (Naeini et al. 2015,
      Guo et al. 2017; torchmetrics ``MulticlassCalibrationError(n_bins=15, norm="l1")``);
    * ``entropy`` = \frac1N \sum_n H[\bar p_n] and ``mi`` = \frac1N \sum_n (H[\bar p_n] -
      \frac1S \sum_s H[p_{s,n}]), in nats (:func:`~lightning_bnn.nn.predictive.mutual_information`);
    * ``aurc``: area under the risk-coverage curve, inputs ranked by predictive entropy
      (:class:`SelectiveRisk`; the user-facing form of "knows when it does not know").

    Each metric's ``update`` takes sampled probabilities ``[S, B, C]`` and class indices ``[B]``.
    """
    return MetricCollection(
        {
            "acc": SampledAccuracy(num_classes),
            "nll": PredictiveNLL(),
            "brier": Brier(),
            "ece": SampledCalibrationError(num_classes),
            "entropy": MeanPredictiveEntropy(),
            "mi": MeanMutualInformation(),
            "aurc": SelectiveRisk(),
        },
        compute_groups=False,
    )


# -- regression: each metric takes per-sample (mean, std) [S, B, D] each and targets [B, D] ----------
def _flat(target: torch.Tensor) -> torch.Tensor:
    return target.reshape(target.shape[0], -1)


class MixtureRMSE(MeanSquaredError):
    """RMSE of the mixture mean."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(squared=False, **kwargs)

    def update(self, predictive: tuple[torch.Tensor, torch.Tensor], target: torch.Tensor) -> None:
        super().update(predictive[0].mean(dim=0), _flat(target))


class MixtureNLL(MeanMetric):
    """Mean of -log (1/S) sum_s N(y; m_s, s_s^2)."""

    def update(self, predictive: tuple[torch.Tensor, torch.Tensor], target: torch.Tensor) -> None:
        super().update(-mixture_log_likelihood(*predictive, _flat(target)))


def _interval(predictive: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    moments = regression_moments(*predictive)
    return central_interval(moments["mean"], moments["std"], 0.95)


class IntervalCoverage(MeanMetric):
    """Fraction of targets inside the mixture moments' central 95% interval."""

    def update(self, predictive: tuple[torch.Tensor, torch.Tensor], target: torch.Tensor) -> None:
        target = _flat(target)
        low, high = _interval(predictive)
        super().update(((target >= low) & (target <= high)).to(low.dtype))


class IntervalWidth(MeanMetric):
    """Mean width of the central 95% interval."""

    def update(self, predictive: tuple[torch.Tensor, torch.Tensor], target: torch.Tensor) -> None:
        low, high = _interval(predictive)
        super().update(high - low)


def regression_metrics() -> MetricCollection:
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

    Each metric's ``update`` takes the per-sample ``(mean, std)`` ``[S, B, D]`` and targets ``[B, D]``.
    """
    return MetricCollection(
        {"rmse": MixtureRMSE(), "nll": MixtureNLL(), "picp95": IntervalCoverage(), "width95": IntervalWidth()},
        compute_groups=False,
    )


#: the metrics of each likelihood (dispatch by type: no branch on the task)
METRICS = {
    CategoricalLikelihood: lambda likelihood: classification_metrics(likelihood.num_classes),
    GaussianLikelihood: lambda likelihood: regression_metrics(),
}


def make_metrics(likelihood: nn.Module) -> MetricCollection:
    """The metric collection of ``likelihood`` (see :data:`METRICS`); ``.clone(prefix="val/")`` per stage."""
    for cls, factory in METRICS.items():
        if isinstance(likelihood, cls):
            return factory(likelihood)
    raise TypeError(f"no metrics registered for {type(likelihood).__name__}")
