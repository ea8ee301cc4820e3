"""Weight priors, built as ``torch.distributions`` objects from a small typed config.

Three families are supported:

* ``gaussian``: p(w) = N(w; 0, sigma^2).
* ``scale_mixture``: the prior of Blundell et al. (2015, eq. 7),
  p(w) = pi N(w; 0, sigma1^2) + (1 - pi) N(w; 0, sigma2^2), built as a
  ``MixtureSameFamily`` so that its log-density is a ``logsumexp`` and stays finite
  far in the tails (never ``log(exp(a) + exp(b) + eps)``).
* ``laplace``: p(w) = Laplace(w; 0, scale).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from enum import StrEnum

import torch
from torch import distributions as D


class PriorName(StrEnum):
    """Names of the supported prior families."""

    gaussian = "gaussian"
    scale_mixture = "scale_mixture"
    laplace = "laplace"


@dataclass(frozen=True)
class PriorConfig:
    """Configuration of a weight prior.

    Only the fields of the chosen family are used: ``sigma`` for ``gaussian``;
    ``pi``, ``sigma1`` and ``sigma2`` for ``scale_mixture``; ``scale`` for ``laplace``.
    The mixture defaults are the paper's best MNIST setting
    (pi = 1/2, -log sigma1 = 0, -log sigma2 = 6).

    Args:
        name: prior family.
        sigma: standard deviation of the Gaussian prior.
        pi: weight of the first (wide) component of the scale mixture.
        sigma1: standard deviation of the first mixture component.
        sigma2: standard deviation of the second mixture component.
        scale: scale b of the Laplace prior.
    """

    name: PriorName = PriorName.gaussian
    sigma: float = 1.0
    pi: float = 0.5
    sigma1: float = 1.0
    sigma2: float = math.exp(-6.0)
    scale: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", parse_prior_name(self.name))  # frozen: a safe default argument
        self.validate()

    def validate(self) -> None:
        """Refuse values that do not define a proper prior.

        Raises:
            ValueError: naming the field and the value.
        """
        checks = {
            PriorName.gaussian: ("sigma",),
            PriorName.scale_mixture: ("sigma1", "sigma2"),
            PriorName.laplace: ("scale",),
        }[self.name]
        for field in checks:
            value = getattr(self, field)
            if not _is_finite_number(value) or value <= 0:
                raise ValueError(f"prior.{field} must be a finite number > 0, got {value!r}")
        if self.name is PriorName.scale_mixture:
            if not _is_finite_number(self.pi) or not 0.0 < self.pi < 1.0:
                raise ValueError(f"prior.pi must lie strictly between 0 and 1, got {self.pi!r}")

    def to_dict(self) -> dict:
        """Plain-JSON form (enum as its string value)."""
        out = asdict(self)
        out["name"] = self.name.value
        return out

    @property
    def has_closed_form_kl(self) -> bool:
        """Whether KL(N(mu, sigma^2) || prior) has a closed form we implement."""
        return self.name in (PriorName.gaussian, PriorName.laplace)


def _is_finite_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def parse_prior_name(name: object) -> PriorName:
    """Turn a string into a :class:`PriorName`, with a clear error for unknown names."""
    if isinstance(name, PriorName):
        return name
    try:
        return PriorName(str(name))
    except ValueError:
        valid = ", ".join(p.value for p in PriorName)
        raise ValueError(f"prior.name must be one of {valid}; got {name!r}") from None


def make_prior(
    config: PriorConfig,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> D.Distribution:
    """Build the prior distribution of one scalar weight.

    Args:
        config: validated prior configuration.
        device: device of the distribution's parameters.
        dtype: floating point type of the parameters.

    Returns:
        A scalar ``torch.distributions.Distribution`` whose ``log_prob`` broadcasts
        over weight tensors of any shape.
    """

    def t(value: float | list[float]) -> torch.Tensor:
        return torch.as_tensor(value, device=device, dtype=dtype)

    if config.name is PriorName.gaussian:
        return D.Normal(t(0.0), t(config.sigma), validate_args=False)
    if config.name is PriorName.laplace:
        return D.Laplace(t(0.0), t(config.scale), validate_args=False)
    mixing = D.Categorical(probs=t([config.pi, 1.0 - config.pi]), validate_args=False)
    components = D.Normal(t([0.0, 0.0]), t([config.sigma1, config.sigma2]), validate_args=False)
    return D.MixtureSameFamily(mixing, components, validate_args=False)
