"""Likelihoods p(y | x, w): categorical for classification, Gaussian for regression.

Each likelihood maps the network's sampled outputs ``[S, B, k]`` to a negative
log-likelihood (for the ELBO) and to per-sample predictive parameters (for prediction).
"""

from __future__ import annotations

import math
from enum import StrEnum

import torch
import torch.nn.functional as F
from torch import nn

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


class CategoricalLikelihood(nn.Module):
    """Categorical likelihood over ``num_classes`` logits."""

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


class GaussianLikelihood(nn.Module):
    """Gaussian likelihood N(y; f(x), sigma_y^2) for ``num_targets`` real targets.

    Args:
        num_targets: dimension of y.
        noise: the :class:`NoiseModel`.
        noise_std: the fixed sigma_y, or the starting value of the learned one.
    """

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


def make_likelihood(
    task: Task, num_outputs: int, noise: NoiseModel = NoiseModel.learned, noise_std: float = 0.1
) -> CategoricalLikelihood | GaussianLikelihood:
    """Likelihood for a task: ``num_outputs`` classes or regression targets."""
    if Task(task) is Task.classification:
        return CategoricalLikelihood(num_outputs)
    return GaussianLikelihood(num_outputs, noise, noise_std)
