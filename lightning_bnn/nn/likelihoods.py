"""Likelihoods p(y | x, w): categorical for classification, Gaussian for regression.

A likelihood owns everything that depends on the task, so that no other module branches on
it. It maps the network's sampled outputs ``[S, B, k]`` to

* a negative log-likelihood, for the ELBO (:meth:`nll`);
* per-sample predictive parameters (:meth:`predictive`), in original units given the data's
  :class:`~lightning_bnn.data.preprocessing.Preprocessing` (:meth:`to_original_units`);
* a typed summary of those samples (:meth:`summarise`: :class:`ClassificationSummary` or
  :class:`RegressionSummary`), with the uncertainty split of :mod:`.predictive`.

The metrics of each likelihood are registered in :mod:`lightning_bnn.evaluation.metrics`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lightning_bnn.nn.predictive import (
    central_interval,
    expected_entropy,
    mutual_information,
    predictive_entropy,
    regression_moments,
)

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_MIN_STD = 1e-4


class Task(StrEnum):
    """What the model predicts."""

    classification = "classification"
    regression = "regression"


class NoiseModel(StrEnum):
    """Observation noise of the Gaussian likelihood.

    ``fixed``: sigma_y = ``noise_std``; ``learned``: one learned sigma_y per target
    (homoscedastic); ``heteroscedastic``: the network outputs sigma_y(x) too.
    """

    fixed = "fixed"
    learned = "learned"
    heteroscedastic = "heteroscedastic"


@dataclass(frozen=True)
class ClassificationSummary:
    r"""Sampled class probabilities of B inputs and their summaries (tensors on the CPU or the model's device).

    Attributes:
        samples: sampled probabilities p_s ``[S, B, C]``.
        probs: predictive \bar p = mean_s p_s ``[B, C]``; ``probs_std``: std over the samples.
        predicted: argmax of ``probs`` ``[B]``.
        entropy: predictive entropy H[\bar p] (nats) ``[B]``, split into ``aleatoric`` (expected
            entropy) and ``mutual_information`` (epistemic).
    """

    samples: torch.Tensor
    probs: torch.Tensor
    probs_std: torch.Tensor
    predicted: torch.Tensor
    entropy: torch.Tensor
    aleatoric: torch.Tensor
    mutual_information: torch.Tensor

    def tensors(self) -> dict[str, torch.Tensor]:
        """The per-input summary (``predict_step``'s output)."""
        return {"probs": self.probs, "entropy": self.entropy, "mutual_information": self.mutual_information}

    def columns(self, names: list[str]) -> dict[str, np.ndarray]:
        """Table columns: ``prob_<class>``, ``predicted`` (a class name), ``entropy``, ``mutual_information``."""
        probs = self.probs.detach().cpu().numpy()
        out: dict[str, Any] = {f"prob_{name}": probs[:, c] for c, name in enumerate(names)}
        out["predicted"] = np.asarray(names, dtype=object)[self.predicted.cpu().numpy()]
        out["entropy"] = self.entropy.cpu().numpy()
        out["mutual_information"] = self.mutual_information.cpu().numpy()
        return out


@dataclass(frozen=True)
class RegressionSummary:
    r"""Sampled Gaussian predictions of B inputs (D targets each) and the moments of their mixture.

    Attributes:
        sample_mean, sample_std: per-sample predictive mean and noise std ``[S, B, D]``.
        mean: mixture mean ``[B, D]``; ``std``: total std, split into ``aleatoric_std``
            (sqrt of the mean noise variance) and ``epistemic_std`` (std of the sample means).
        lower, upper: the central interval mean -+ z std at ``level``.
    """

    sample_mean: torch.Tensor
    sample_std: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    aleatoric_std: torch.Tensor
    epistemic_std: torch.Tensor
    lower: torch.Tensor
    upper: torch.Tensor
    level: float = 0.95

    def tensors(self) -> dict[str, torch.Tensor]:
        """The per-input summary (``predict_step``'s output)."""
        return {
            "mean": self.mean,
            "std": self.std,
            "aleatoric_std": self.aleatoric_std,
            "epistemic_std": self.epistemic_std,
        }

    def columns(self, names: list[str]) -> dict[str, np.ndarray]:
        """Table columns per target ``t``: ``t_mean``, ``t_std``, its two parts, ``t_lower``, ``t_upper``."""
        out = {}
        parts = {**self.tensors(), "lower": self.lower, "upper": self.upper}
        for d, name in enumerate(names):
            for key, value in parts.items():
                out[f"{name}_{key}"] = value[:, d].detach().cpu().numpy()
        return out


class CategoricalLikelihood(nn.Module):
    """Categorical likelihood over ``num_classes`` logits."""

    task = Task.classification
    #: artifacts a run of this likelihood records beside the model (see :mod:`lightning_bnn.tracking.recorder`)
    run_artifacts: tuple[str, ...] = ("reliability", "ood_entropy")
    #: the type :meth:`summarise` returns
    summary_type = ClassificationSummary

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes

    def network_outputs(self) -> int:
        """Width of the network's last layer."""
        return self.num_classes

    def nll(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """-log p(y | x, w_s) summed over the batch and averaged over the S samples.

        Args:
            output: logits [S, B, C].
            target: class indices [B].
        """
        s = output.shape[0]
        flat = output.reshape(-1, output.shape[-1])
        return F.cross_entropy(flat, target.repeat(s), reduction="sum") / s

    def predictive(self, output: torch.Tensor) -> torch.Tensor:
        """Per-sample class probabilities [S, B, C]."""
        return output.softmax(dim=-1)

    def to_original_units(self, predictive: torch.Tensor, preprocessing: Any) -> torch.Tensor:
        """Class probabilities have no units: unchanged."""
        return predictive

    def target_in_original_units(self, target: torch.Tensor, preprocessing: Any) -> torch.Tensor:
        """Class indices: unchanged."""
        return target

    def output_names(self, preprocessing: Any) -> list[str]:
        """Class names from the preprocessing, or ``0..C-1``."""
        names = list(preprocessing.class_names)
        return names if len(names) == self.num_classes else [str(i) for i in range(self.num_classes)]

    def summarise(self, predictive: torch.Tensor, level: float = 0.95) -> ClassificationSummary:
        """Summaries of sampled probabilities ``[S, B, C]`` (``level`` is unused: no interval)."""
        probs = predictive.mean(dim=0)
        return ClassificationSummary(
            samples=predictive,
            probs=probs,
            probs_std=predictive.std(dim=0, unbiased=False),
            predicted=probs.argmax(dim=-1),
            entropy=predictive_entropy(predictive),
            aleatoric=expected_entropy(predictive),
            mutual_information=mutual_information(predictive),
        )


class GaussianLikelihood(nn.Module):
    """Gaussian likelihood N(y; f(x), sigma_y^2) for ``num_targets`` real targets.

    Args:
        num_targets: dimension of y.
        noise: the :class:`NoiseModel`.
        noise_std: the fixed sigma_y, or the starting value of the learned one.
    """

    task = Task.regression
    #: artifacts a run of this likelihood records beside the model (see :mod:`lightning_bnn.tracking.recorder`)
    run_artifacts: tuple[str, ...] = ("predictive_band", "train_sample")
    #: the type :meth:`summarise` returns
    summary_type = RegressionSummary

    def __init__(self, num_targets: int, noise: NoiseModel = NoiseModel.learned, noise_std: float = 0.1) -> None:
        super().__init__()
        self.num_targets = num_targets
        self.noise = NoiseModel(noise)
        if not (math.isfinite(noise_std) and noise_std > 0):
            raise ValueError(f"noise_std must be a finite number > 0, got {noise_std!r}")
        self.noise_std = noise_std
        if self.noise is NoiseModel.learned:
            self.log_noise_std = nn.Parameter(torch.full((num_targets,), math.log(noise_std)))

    def network_outputs(self) -> int:
        """Width of the network's last layer (twice the targets when heteroscedastic)."""
        return 2 * self.num_targets if self.noise is NoiseModel.heteroscedastic else self.num_targets

    def predictive(self, output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample mean and noise std, each [S, B, D]."""
        d = self.num_targets
        mean = output[..., :d]
        if self.noise is NoiseModel.heteroscedastic:
            std = F.softplus(output[..., d:]) + _MIN_STD
        elif self.noise is NoiseModel.learned:
            std = self.log_noise_std.exp().clamp_min(_MIN_STD).expand_as(mean)
        else:
            std = torch.full_like(mean, self.noise_std)
        return mean, std

    def nll(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        r"""Gaussian NLL summed over batch and targets, averaged over the S samples.

        .. math:: -\log N(y; m, s^2) = \log s + \tfrac12\log 2\pi + \frac{(y - m)^2}{2 s^2}
        """
        mean, std = self.predictive(output)
        target = target.reshape(1, target.shape[0], -1)
        nll = torch.log(std) + _HALF_LOG_2PI + 0.5 * ((target - mean) / std).square()
        return nll.sum() / output.shape[0]

    def to_original_units(
        self, predictive: tuple[torch.Tensor, torch.Tensor], preprocessing: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample mean and std from standardised to original target units (``preprocessing.inverse``)."""
        return preprocessing.inverse(*predictive)

    def target_in_original_units(self, target: torch.Tensor, preprocessing: Any) -> torch.Tensor:
        """Standardised targets ``[B, D]`` -> original units."""
        return preprocessing.inverse_target(target)

    def output_names(self, preprocessing: Any) -> list[str]:
        """Target names from the preprocessing, or ``y`` (``y0``, ``y1``, ... for several targets)."""
        names = list(getattr(preprocessing, "target_names", ()))
        if len(names) == self.num_targets:
            return names
        return ["y"] if self.num_targets == 1 else [f"y{i}" for i in range(self.num_targets)]

    def summarise(self, predictive: tuple[torch.Tensor, torch.Tensor], level: float = 0.95) -> RegressionSummary:
        """Moments of the predictive mixture of per-sample N(mean_s, std_s^2) ``[S, B, D]`` and its interval."""
        mean, std = predictive
        moments = regression_moments(mean, std)
        lower, upper = central_interval(moments["mean"], moments["std"], level)
        return RegressionSummary(mean, std, **moments, lower=lower, upper=upper, level=level)


def make_likelihood(
    task: Task, num_outputs: int, noise: NoiseModel = NoiseModel.learned, noise_std: float = 0.1
) -> CategoricalLikelihood | GaussianLikelihood:
    """Likelihood for a task: ``num_outputs`` classes or regression targets."""
    if Task(task) is Task.classification:
        return CategoricalLikelihood(num_outputs)
    return GaussianLikelihood(num_outputs, noise, noise_std)
