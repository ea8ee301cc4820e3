r"""Predictive sampling and pure reductions over the sample dimension.

Sampled predictions are tensors with the Monte Carlo samples first:
class probabilities ``[S, B, C]``, or regression means and noise standard deviations
``[S, B, D]`` each. The reductions below are pure functions of those tensors.

Uncertainty decomposition for classification (Depeweg et al. 2018; Gal 2016):

.. math::
    \underbrace{H\big[\tfrac1S\sum_s p_s\big]}_{\text{predictive entropy}}
    = \underbrace{\tfrac1S\sum_s H[p_s]}_{\text{aleatoric (expected entropy)}}
    + \underbrace{I[y; w \mid x]}_{\text{epistemic (mutual information)}}

and for regression, with the predictive a mixture of S Gaussians N(m_s, s_s^2):
total variance = mean_s s_s^2 (aleatoric) + var_s m_s (epistemic).
"""

from __future__ import annotations

import math

import torch
from torch import nn

#: largest number of output elements (S x B x k) drawn in one chunk when sampling
MAX_CHUNK_ELEMENTS = 8_000_000
#: largest S the sampling functions accept
MAX_SAMPLES = 10_000


def check_num_samples(num_samples: object, field: str = "num_samples") -> int:
    """Validate a Monte Carlo sample count, naming ``field`` in the error."""
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or not 1 <= num_samples <= MAX_SAMPLES:
        raise ValueError(f"{field} must be an integer between 1 and {MAX_SAMPLES}, got {num_samples!r}")
    return num_samples


@torch.no_grad()
def sample_outputs(
    network: nn.Module, x: torch.Tensor, num_samples: int, chunk_size: int | None = None
) -> torch.Tensor:
    """Draw ``num_samples`` outputs of ``network`` for inputs ``x``: ``[S, B, k]``.

    Samples are drawn in a few batched calls (chunks over S) so that memory stays
    bounded by :data:`MAX_CHUNK_ELEMENTS` output elements per chunk times the width
    of the widest layer, whatever S is.
    """
    check_num_samples(num_samples)
    if chunk_size is None:
        width = _output_width(network)
        if width is None:  # not a stack of layers with out_features: ask the network itself
            width = network(x[:1], 1).shape[-1]
        per_sample = max(1, x.shape[0] * width * 64)
        chunk_size = max(1, min(num_samples, MAX_CHUNK_ELEMENTS // per_sample))
    chunks = []
    remaining = num_samples
    while remaining > 0:
        n = min(chunk_size, remaining)
        chunks.append(network(x, n))
        remaining -= n
    return chunks[0] if len(chunks) == 1 else torch.cat(chunks, dim=0)


def _output_width(network: nn.Module) -> int | None:
    """Output width of a network whose last weight layer has ``out_features`` (no forward pass)."""
    width = getattr(network, "output_width", None)
    if isinstance(width, int):  # a converted user network, whose module order need not be its data flow
        return width
    for module in reversed(list(network.modules())):
        width = getattr(module, "out_features", None)
        if isinstance(width, int):
            return width
        if isinstance(module, nn.modules.conv._ConvNd):
            return None
    return None


def _entropy(probs: torch.Tensor) -> torch.Tensor:
    return -(probs * torch.log(probs.clamp_min(1e-12))).sum(dim=-1)


def predictive_entropy(probs: torch.Tensor) -> torch.Tensor:
    r"""H[mean_s p_s] = -\sum_c \bar p_c \log \bar p_c for probs [S, B, C]; returns [B] (nats)."""
    return _entropy(probs.mean(dim=0))


def expected_entropy(probs: torch.Tensor) -> torch.Tensor:
    r"""Aleatoric part: \frac1S \sum_s H[p_s] for probs [S, B, C]; returns [B] (nats)."""
    return _entropy(probs).mean(dim=0)


def mutual_information(probs: torch.Tensor) -> torch.Tensor:
    r"""Epistemic part: I[y; w | x] = H[\bar p] - \frac1S\sum_s H[p_s], clamped at 0; returns [B]."""
    return (predictive_entropy(probs) - expected_entropy(probs)).clamp_min(0.0)


def regression_moments(mean: torch.Tensor, std: torch.Tensor) -> dict[str, torch.Tensor]:
    """Moments of the predictive mixture of N(mean_s, std_s^2), inputs [S, B, D].

    Returns:
        ``mean`` [B, D]; ``std`` (total), ``aleatoric_std`` = sqrt(mean_s std_s^2) and
        ``epistemic_std`` = std_s(mean_s) (population std over samples), each [B, D].
    """
    aleatoric_var = std.square().mean(dim=0)
    epistemic_var = mean.var(dim=0, unbiased=False) if mean.shape[0] > 1 else torch.zeros_like(mean[0])
    return {
        "mean": mean.mean(dim=0),
        "std": (aleatoric_var + epistemic_var).sqrt(),
        "aleatoric_std": aleatoric_var.sqrt(),
        "epistemic_std": epistemic_var.sqrt(),
    }


def normal_quantile(level: float) -> float:
    """Two-sided z value of a central interval: 1.95996... for level 0.95."""
    return math.sqrt(2.0) * torch.special.erfinv(torch.tensor(level, dtype=torch.float64)).item()


def central_interval(mean: torch.Tensor, std: torch.Tensor, level: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian central interval mean -+ z * std (z = 1.96 for 95%)."""
    z = normal_quantile(level)
    return mean - z * std, mean + z * std


def mixture_log_likelihood(mean: torch.Tensor, std: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    r"""Log p(y | x) = log \frac1S \sum_s N(y; m_s, s_s^2) summed over D; inputs [S, B, D], target [B, D]."""
    log_n = -torch.log(std) - 0.5 * math.log(2 * math.pi) - 0.5 * ((target.unsqueeze(0) - mean) / std).square()
    return torch.logsumexp(log_n.sum(dim=-1), dim=0) - math.log(mean.shape[0])
