"""Bring your own network: make some or all of a model's weight layers Bayesian.

:func:`bayesianize` copies a ``torch.nn`` model and replaces each ``nn.Linear``,
``nn.Conv1d``, ``nn.Conv2d`` and ``nn.Conv3d`` chosen by name with the Bayesian layer of the
same kind (:class:`~lightning_bnn.nn.layers.BayesLinear`, ``BayesConv1d/2d/3d``: the same
posterior, estimators and KL as the built-in networks). Everything else (BatchNorm,
LayerNorm, pooling, embeddings, residual connections, attention, the model's own ``forward``)
stays as it is.

**The sample dimension.** The result, a :class:`SampledNetwork`, maps ``x`` ``[B, ...]`` to
``[S, B, ...]``. It runs the user's ``forward`` once on the S copies of the batch folded into
the batch dimension (``[S * B, ...]``, sample-major), so every module sees the batch shapes it
was written for. Each converted layer reads S from the call (:func:`~lightning_bnn.nn.sampling.folded`)
and samples as the built-in layers do, batched over the S samples: the local estimator draws
independent pre-activations per row, ``reparameterization`` and ``flipout`` one weight
sample per Monte Carlo sample applied in one batched matrix product or grouped convolution.
Modules that act per example (activations, pooling, LayerNorm, embeddings, BatchNorm with
running statistics in ``eval()`` mode) are exact under folding. The one exception is a module
whose output mixes the examples of a batch: BatchNorm that normalises with batch statistics
(in ``train()`` mode, or built with ``track_running_stats=False``). Folding would pool its
statistics over the S samples, so there the network **loops** over the S samples, one call
on ``[B, ...]`` each (``folding="auto"``, the default; ``"fold"`` or ``"loop"`` force one).
With one sample per training step (the usual ``num_samples_train=1``) both are the same call.
"""

from __future__ import annotations

import copy
import fnmatch
import math
from collections.abc import Iterable, Sequence
from enum import StrEnum

import torch
from torch import nn

from lightning_bnn.nn import sampling
from lightning_bnn.nn.layers import (
    BayesConv1d,
    BayesConv2d,
    BayesConv3d,
    BayesianModule,
    BayesLinear,
    Estimator,
    _BayesLayer,
    total_kl,
)
from lightning_bnn.nn.posterior import KLMethod
from lightning_bnn.nn.predictive import check_num_samples
from lightning_bnn.nn.priors import PriorConfig
from lightning_bnn.nn.sampling import parse_enum

#: the deterministic layers bayesianize converts, and the Bayesian layer of each
CONVERTIBLE: dict[type[nn.Module], type[_BayesLayer]] = {
    nn.Linear: BayesLinear,
    nn.Conv1d: BayesConv1d,
    nn.Conv2d: BayesConv2d,
    nn.Conv3d: BayesConv3d,
}
#: smallest sigma of a MOPED start (sigma = delta |w| is 0 where w is 0)
MIN_MOPED_SIGMA = 1e-8


class Init(StrEnum):
    """Start of the posterior.

    ``random``: mu as the built-in layers, sigma = softplus(rho_init); ``pretrained``: MOPED
    (Krishnan et al. 2020), mu = w and sigma = delta |w|.
    """

    random = "random"
    pretrained = "pretrained"


class Folding(StrEnum):
    """How a converted network draws S samples: ``auto``, ``fold`` (one call on [S*B, ...]) or ``loop``."""

    auto = "auto"
    fold = "fold"
    loop = "loop"


def _mixes_batch(module: nn.Module) -> bool:
    """Whether ``module`` normalises with the statistics of the batch it is given."""
    return isinstance(module, nn.modules.batchnorm._BatchNorm) and (module.training or not module.track_running_stats)


class SampledNetwork(nn.Module):
    """A converted model that draws Monte Carlo samples: ``x`` [B, ...] -> ``[S, B, ...]``.

    Args:
        module: the converted copy of the user's model (its Bayesian layers are ``folded``).
        folding: ``auto`` (fold S into the batch, loop where a module uses batch statistics),
            ``fold`` or ``loop`` (see the module docstring).
    """

    def __init__(self, module: nn.Module, folding: Folding | str = Folding.auto) -> None:
        super().__init__()
        self.module = module
        self.folding = parse_enum(Folding, folding, "folding")
        #: width of the last output dimension, when known (sizes the chunks of sample_outputs)
        self.output_width: int | None = None

    def loops(self, num_samples: int) -> bool:
        """Whether a call with ``num_samples`` samples loops over them (else one folded call)."""
        if num_samples == 1 or self.folding is Folding.fold:
            return False
        return self.folding is Folding.loop or any(_mixes_batch(m) for m in self.module.modules())

    def forward(self, x: torch.Tensor, num_samples: int = 1) -> torch.Tensor:
        """Sampled outputs ``[num_samples, B, ...]`` of the converted model for inputs ``x`` [B, ...]."""
        s = check_num_samples(num_samples)
        if self.loops(s):
            with sampling.folded(1):
                return torch.stack([self._call(x) for _ in range(s)])
        b = x.shape[0]
        xs = x.unsqueeze(0).expand(s, *x.shape).reshape(s * b, *x.shape[1:])
        with sampling.folded(s):
            out = self._call(xs)
        return out.reshape(s, b, *out.shape[1:])

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        out = self.module(x)
        if not isinstance(out, torch.Tensor):
            raise TypeError(f"a converted model's forward must return one tensor, got {type(out).__name__}")
        return out

    def forward_with_kl(self, x: torch.Tensor, num_samples: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """``(self(x, num_samples), total_kl(self))``: the training step's path."""
        out = self(x, num_samples)
        return out, total_kl(self).to(out.device)


def _matches(name: str, patterns: Sequence[str]) -> list[str]:
    """The patterns that match ``name``: itself, a glob, or a parent module's name."""
    return [p for p in patterns if fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(name, p + ".*")]


def _patterns(value: str | Iterable[str] | None, field: str) -> list[str] | None:
    if value is None:
        return None
    values = [value] if isinstance(value, str) else list(value)
    if not all(isinstance(v, str) and v for v in values):
        raise ValueError(f"{field} must be a list of module names or glob patterns, got {value!r}")
    return values


def moped_rho(weight: torch.Tensor, delta: float) -> torch.Tensor:
    """The rho with softplus(rho) = max(delta |w|, MIN_MOPED_SIGMA) (MOPED, Krishnan et al. 2020)."""
    sigma = (delta * weight.detach().double().abs()).clamp_min(MIN_MOPED_SIGMA)
    return torch.log(torch.expm1(sigma)).to(weight.dtype)


def _convert(layer: nn.Module, cls: type[_BayesLayer], kwargs: dict, init: Init, delta: float) -> _BayesLayer:
    bias = layer.bias is not None
    if isinstance(layer, nn.Linear):
        new = cls(layer.in_features, layer.out_features, bias=bias, **kwargs)
    else:
        new = cls(
            layer.in_channels,
            layer.out_channels,
            tuple(layer.kernel_size),
            stride=tuple(layer.stride),
            padding=layer.padding if isinstance(layer.padding, str) else tuple(layer.padding),
            dilation=tuple(layer.dilation),
            groups=layer.groups,
            bias=bias,
            padding_mode=layer.padding_mode,
            **kwargs,
        )
    new = new.to(device=layer.weight.device, dtype=layer.weight.dtype)
    if init is Init.pretrained:
        moped_init_(new, layer.weight, layer.bias, delta)
    return new


@torch.no_grad()
def moped_init_(layer: _BayesLayer, weight: torch.Tensor, bias: torch.Tensor | None, delta: float) -> None:
    """Start ``layer``'s posterior at trained weights: mu = w, sigma = delta |w| (MOPED, Krishnan et al. 2020).

    Raises:
        ValueError: when the shapes (or the presence of a bias) differ from the layer's.
    """
    pairs = ((layer.weight, weight, "weight"), (layer.bias, bias, "bias"))
    for posterior, tensor, name in pairs:
        if (posterior is None) != (tensor is None):
            has = "has no" if posterior is None else "has a"
            raise ValueError(f"{name}: the layer {has} {name}, the weights do not agree")
        if posterior is None:
            continue
        if tuple(posterior.mu.shape) != tuple(tensor.shape):
            shape, expected = tuple(tensor.shape), tuple(posterior.mu.shape)
            raise ValueError(f"{name}: shape {shape} does not fit the layer's {expected}")
        posterior.mu.copy_(tensor)
        posterior.rho.copy_(moped_rho(tensor, delta))


@torch.no_grad()
def moped_restart_(model: nn.Module, delta: float) -> int:
    """Restart every Bayesian layer's sigma at delta |mu| (MOPED from the current means); return how many.

    The end of ``pretrain_epochs``: the means were trained as a point estimate, the posterior
    scales start from them (Krishnan et al. 2020).
    """
    layers = [m for m in model.modules() if isinstance(m, _BayesLayer)]
    for layer in layers:
        bias = layer.bias.mu.clone() if layer.bias is not None else None
        moped_init_(layer, layer.weight.mu.clone(), bias, delta)
    return len(layers)


def convertible_layers(model: nn.Module) -> list[str]:
    """Qualified names of the layers :func:`bayesianize` can convert, in module order."""
    return [name for name, m in model.named_modules() if type(m) in CONVERTIBLE]


def bayesianize(
    model: nn.Module,
    include: str | Iterable[str] | None = None,
    exclude: str | Iterable[str] | None = None,
    prior: PriorConfig | None = None,
    estimator: Estimator | str = Estimator.local,
    init: Init | str = Init.random,
    delta: float = 0.1,
    rho_init: float = -5.0,
    kl: KLMethod | str = KLMethod.auto,
    mu_init_scale: float = 1.0,
    folding: Folding | str = Folding.auto,
) -> SampledNetwork:
    """A copy of ``model`` with the chosen weight layers Bayesian, drawing samples ``[S, B, ...]``.

    Every ``nn.Linear``, ``nn.Conv1d``, ``nn.Conv2d`` and ``nn.Conv3d`` (those exact types: subclasses
    such as the output projection of ``nn.MultiheadAttention``, whose weights its parent reads directly,
    stay as they are) whose qualified name (as in
    ``model.named_modules()``, e.g. ``"head.0"``) matches ``include`` and not ``exclude`` is replaced by
    the Bayesian layer of the same kind and shape. A pattern is a name, a glob (``"head.*"``,
    ``"blocks.?.conv*"``) or the name of a parent module (``"head"`` means every layer under it).
    ``model`` itself is not changed.

    The samples are batched: the converted copy runs once on the S samples folded into the batch,
    except through BatchNorm that uses batch statistics (training mode), where it loops over them
    (see :mod:`lightning_bnn.nn.convert`). :func:`~lightning_bnn.nn.layers.total_kl` of the result is the
    sum of ``kl()`` over exactly the converted layers (plus any Bayesian layers ``model`` already had).

    Args:
        model: any ``nn.Module`` whose ``forward`` takes a batch and returns one tensor.
        include: the layers to convert (all convertible layers when None).
        exclude: layers to leave deterministic, even if ``include`` names them.
        prior: the weight prior of the converted layers (default N(0, 1)).
        estimator: the training estimator: ``local``, ``reparameterization`` or ``flipout``.
        init: ``random``: mu uniform in +-mu_init_scale / sqrt(fan_in), sigma = softplus(rho_init);
            ``pretrained``: mu = the layer's weights, sigma = delta |w| (MOPED, Krishnan et al. 2020;
            at least :data:`MIN_MOPED_SIGMA`).
        delta: the MOPED scale of ``init="pretrained"``.
        rho_init: the starting rho of ``init="random"``.
        kl: ``auto``, ``exact`` or ``mc``.
        mu_init_scale: the mu scale of ``init="random"``.
        folding: ``auto``, ``fold`` or ``loop``.

    Returns:
        A :class:`SampledNetwork`: call it as ``net(x, num_samples)``; the converted copy is ``net.module``.

    Raises:
        ValueError: a pattern that matches no convertible layer (the message lists them), a selection
            that converts nothing, or a bad option.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    init = parse_enum(Init, init, "init")
    if not (isinstance(delta, (int, float)) and not isinstance(delta, bool) and math.isfinite(delta) and delta >= 0):
        raise ValueError(f"delta must be a finite number >= 0, got {delta!r}")
    include_p = _patterns(include, "include")
    exclude_p = _patterns(exclude, "exclude") or []
    names = convertible_layers(model)
    for field, pats in (("include", include_p or []), ("exclude", exclude_p)):
        for p in pats:
            if not any(_matches(n, [p]) for n in names):
                raise ValueError(
                    f"{field} pattern {p!r} matches no Linear/Conv1d/Conv2d/Conv3d layer; the layers are {names}"
                )
    chosen = [n for n in names if (include_p is None or _matches(n, include_p)) and not _matches(n, exclude_p)]
    if not chosen:
        raise ValueError(f"include={include_p!r} and exclude={exclude_p!r} select no layer of {names}")
    kwargs = dict(
        prior=prior or PriorConfig(),
        estimator=estimator,
        kl=kl,
        mu_init_scale=mu_init_scale,
        rho_init=rho_init,
        folded=True,
    )
    chosen_set = set(chosen)
    converted = copy.deepcopy(model)
    modules = dict(converted.named_modules(remove_duplicate=False))
    replaced: dict[int, _BayesLayer] = {}  # a layer registered under two names stays one layer
    for name, module in list(modules.items()):
        if not name or type(module) not in CONVERTIBLE:
            continue
        if name not in chosen_set and id(module) not in replaced:
            continue
        if id(module) not in replaced:
            replaced[id(module)] = _convert(module, CONVERTIBLE[type(module)], kwargs, init, float(delta))
        parent, _, attr = name.rpartition(".")
        setattr(modules[parent] if parent else converted, attr, replaced[id(module)])
    return SampledNetwork(converted, folding)


def bayesian_layer_names(network: nn.Module) -> list[str]:
    """Qualified names of the Bayesian modules of ``network`` (the ones :func:`total_kl` sums)."""
    return [name for name, m in network.named_modules() if isinstance(m, BayesianModule)]
