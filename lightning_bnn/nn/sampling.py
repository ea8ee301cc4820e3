"""Per-call sampling choices: the prediction estimator and the random generator.

A prediction call chooses how the Bayesian layers sample (``estimator``: the posterior-mean
point estimate, whole-function weight draws, ...) and which random generator draws the noise.
These are arguments of the call (:meth:`~lightning_bnn.training.module.BNNModule.sample_predictions`),
never attributes set on a model that other callers share: the call enters :func:`sampling`,
which holds the choice in a :class:`contextvars.ContextVar` for the duration of the call,
private to the calling thread (each dashboard session runs in its own), and the layers read it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, replace
from enum import Enum, StrEnum

import torch


class PredictEstimator(StrEnum):
    """How a layer samples at prediction time (``eval()`` mode).

    ``auto`` picks per layer and batch size (local reparameterisation for small batches and
    for inputs shared by every sample, weight samples for large batches); ``mean`` uses the
    posterior means (the point estimate: every sample equal).
    """

    auto = "auto"
    reparameterization = "reparameterization"
    local = "local"
    flipout = "flipout"
    mean = "mean"


def parse_enum(enum_cls: type[Enum], value: object, field: str) -> Enum:
    """Convert ``value`` to ``enum_cls`` or raise a ValueError naming ``field``."""
    if isinstance(value, enum_cls):
        return value
    try:
        return enum_cls(str(value.value if isinstance(value, Enum) else value))
    except ValueError:
        valid = ", ".join(e.value for e in enum_cls)
        raise ValueError(f"{field} must be one of {valid}; got {value!r}") from None


@dataclass(frozen=True)
class SamplingChoice:
    """The estimator (None: each layer's ``auto``) and generator (None: torch's default) of one call.

    ``folded_samples`` is the number of Monte Carlo samples a converted network's call folded into
    the batch dimension (see :func:`folded`).
    """

    estimator: PredictEstimator | None = None
    generator: torch.Generator | None = None
    folded_samples: int = 1


_DEFAULT = SamplingChoice()
_CHOICE: ContextVar[SamplingChoice | None] = ContextVar("lightning_bnn_sampling", default=None)


@contextlib.contextmanager
def sampling(
    estimator: PredictEstimator | str | None = None, generator: torch.Generator | None = None
) -> Iterator[SamplingChoice]:
    """Sample with ``estimator`` and ``generator`` inside the block (this thread only)."""
    if estimator is not None:
        estimator = parse_enum(PredictEstimator, estimator, "estimator")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    choice = SamplingChoice(estimator, generator, current().folded_samples)
    token = _CHOICE.set(choice)
    try:
        yield choice
    finally:
        _CHOICE.reset(token)


@contextlib.contextmanager
def folded(num_samples: int) -> Iterator[SamplingChoice]:
    """Inside the block, inputs of ``folded`` Bayesian layers hold ``num_samples`` samples folded into the batch.

    A network converted by :func:`~lightning_bnn.nn.convert.bayesianize` runs the user's module once
    on ``[S * B, ...]`` (sample-major); each converted layer reads S here to draw one weight sample per
    Monte Carlo sample. The estimator and generator in force are kept.
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive integer, got {num_samples!r}")
    choice = replace(current(), folded_samples=num_samples)
    token = _CHOICE.set(choice)
    try:
        yield choice
    finally:
        _CHOICE.reset(token)


def current() -> SamplingChoice:
    """The sampling choice in force (the defaults outside :func:`sampling`)."""
    return _CHOICE.get() or _DEFAULT


def randn(shape: tuple[int, ...] | torch.Size, like: torch.Tensor) -> torch.Tensor:
    """Standard normal noise of ``shape`` on ``like``'s device and dtype, from the call's generator."""
    return torch.randn(tuple(shape), device=like.device, dtype=like.dtype, generator=current().generator)


def random_signs(shape: tuple[int, ...] | torch.Size, like: torch.Tensor) -> torch.Tensor:
    """Independent +-1 with probability 1/2 each, from the call's generator."""
    out = torch.empty(tuple(shape), device=like.device, dtype=like.dtype)
    return out.bernoulli_(0.5, generator=current().generator).mul_(2.0).sub_(1.0)


def bernoulli_mask(like: torch.Tensor, keep: float) -> torch.Tensor:
    """A 0/1 mask shaped like ``like`` with P(1) = ``keep``, from the call's generator."""
    return torch.empty_like(like).bernoulli_(keep, generator=current().generator)
