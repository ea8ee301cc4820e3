"""Bayes-by-Backprop layers: ``BayesLinear`` and ``BayesConv2d``.

Both hold a :class:`~lightning_bnn.nn.posterior.GaussianPosterior` for their weight and
bias and share every line of sampling, estimator and KL code. They differ only in
the function they apply (``F.linear`` or ``F.conv2d``) and in how they apply it with a
different weight per Monte Carlo sample.

**Samples are a dimension.** A layer takes an input of shape ``[S, B, *features]``
and returns ``[S, B, *out]``: one output per Monte Carlo sample, all drawn in one
batched computation. An input without the sample dimension (``[B, *features]``)
is treated as one sample and returned without it, so a layer can stand in for
``nn.Linear``/``nn.Conv2d``. If the input is the same for every sample (an
``expand``-ed tensor, as at a network's first layer), the local estimator computes
the mean and variance once and only draws S noise tensors.

**Estimators** (``estimator=``):

* ``reparameterization``: one weight sample per Monte Carlo sample
  (Blundell et al. 2015): w_s = mu + sigma * eps_s.
* ``local``: the local reparameterisation trick (Kingma et al. 2015): sample the
  pre-activations b ~ N(x mu, x^2 sigma^2) directly; lower variance and no S copies
  of the weights.
* ``flipout`` (Wen et al. 2018): one weight perturbation per sample, decorrelated
  across the batch by random sign flips:
  y = x mu + ((x * r) (sigma * eps_s)) * s with r, s random signs.

At prediction time all three give the same marginal predictive distribution for
each input, so the prediction estimator (default ``auto``; chosen per call, see
:mod:`lightning_bnn.nn.sampling`) picks the fastest one per layer: the local trick
where the input is shared by all samples (a network's first layer: mean and variance
computed once, S noise draws) and for small batches, one weight sample per Monte Carlo
sample for large ones (from 192 inputs for a linear layer on CPU, 16 otherwise).
``reparameterization`` gives samples of whole functions (coherent across the inputs of a
batch), and ``mean`` uses the posterior mean weights.
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from lightning_bnn.nn import sampling
from lightning_bnn.nn.fused import LocalLinearGaussian, LocalLinearMixtureBound
from lightning_bnn.nn.posterior import GaussianPosterior, KLMethod, resolve_kl_method
from lightning_bnn.nn.priors import PriorConfig, PriorName
from lightning_bnn.nn.sampling import PredictEstimator, parse_enum

#: Above this many inputs per batch, ``auto`` prediction samples weights instead of pre-activations.
AUTO_WEIGHT_SAMPLING_MIN_BATCH = 16
#: The same for a fully connected layer on CPU, where one normal draw costs about as much as a
#: hundred multiply-adds: for a 400x400 layer and S = 100 the local trick is cheaper up to about
#: 180 inputs (9x cheaper at 16). ``python -m benchmarks`` measures the regimes.
AUTO_WEIGHT_SAMPLING_MIN_BATCH_CPU_LINEAR = 192


class Estimator(StrEnum):
    """Gradient estimators used in training."""

    reparameterization = "reparameterization"
    local = "local"
    flipout = "flipout"


class BayesianModule(nn.Module):
    """Marker base class: a module that contributes a KL term to the ELBO."""

    def kl(self) -> torch.Tensor:  # pragma: no cover - abstract
        """KL(q || p) summed over this module's own weights."""
        raise NotImplementedError

    def forward_and_kl(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(self(x), self.kl())`` in one call; layers override it to share work between the two."""
        return self(x), self.kl()


def _full_precision(like: torch.Tensor) -> torch.autocast:
    """Autocast switched off on ``like``'s device: the ops inside run in the inputs' dtype (float32).

    Mixed precision (``--trainer.precision bf16-mixed``/``16-mixed``) runs matrix products
    in 16 bits; the posterior's variances and sampled weights need float32.
    """
    return torch.autocast(device_type=like.device.type, enabled=False)


def _widen(x: torch.Tensor) -> torch.Tensor:
    """``x`` as float32 if it is a 16-bit float (the output of an autocast op), else unchanged."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


class _Moments(NamedTuple):
    """sigma and sigma^2 of a layer's weight and bias, computed once per forward pass."""

    w_sigma: torch.Tensor
    w_var: torch.Tensor
    b_sigma: torch.Tensor | None
    b_var: torch.Tensor | None


class _BayesLayer(BayesianModule):
    """Shared machinery; subclasses define ``_op`` and ``_op_per_sample``."""

    #: number of feature dimensions of one input example (1 for linear, 3 for conv2d)
    feature_dims: int = 1

    def __init__(
        self,
        weight_shape: tuple[int, ...],
        bias_shape: tuple[int, ...] | None,
        fan_in: int,
        prior: PriorConfig | None = None,
        estimator: Estimator | str = Estimator.local,
        kl: KLMethod | str = KLMethod.auto,
        mu_init_scale: float = 1.0,
        rho_init: float = -5.0,
        num_kl_samples: int = 1,
        folded: bool = False,
    ) -> None:
        super().__init__()
        #: inputs carry the samples folded into the batch (``[S * B, ...]``, as in a network converted by
        #: :func:`~lightning_bnn.nn.convert.bayesianize`), S given per call by :func:`.sampling.folded`
        self.folded = bool(folded)
        self.prior = prior if prior is not None else PriorConfig()
        self.estimator = parse_enum(Estimator, estimator, "estimator")
        self.kl_method = resolve_kl_method(kl, self.prior)
        if not (isinstance(mu_init_scale, (int, float)) and math.isfinite(mu_init_scale) and mu_init_scale >= 0):
            raise ValueError(f"mu_init_scale must be a finite number >= 0, got {mu_init_scale!r}")
        if not (isinstance(rho_init, (int, float)) and math.isfinite(rho_init)):
            raise ValueError(f"rho_init must be a finite number, got {rho_init!r}")
        if not isinstance(num_kl_samples, int) or num_kl_samples < 1:
            raise ValueError(f"num_kl_samples must be an integer >= 1, got {num_kl_samples!r}")
        self.num_kl_samples = num_kl_samples
        bound = mu_init_scale / math.sqrt(fan_in)
        self.weight = GaussianPosterior(weight_shape, bound, rho_init)
        self.bias = GaussianPosterior(bias_shape, bound, rho_init) if bias_shape is not None else None
        self._moments_cache: tuple[tuple, _Moments] | None = None

    # -- the two functions a subclass defines -------------------------------------------------
    def _op(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """Apply the layer to x [N, *features] with one weight."""
        raise NotImplementedError

    def _op_per_sample(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """Apply sample s's weight [S, *w] (and bias [S, *b]) to x[s], x [S, B, *features]."""
        raise NotImplementedError

    # -- shared ---------------------------------------------------------------------------------
    def _op_folded(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        s, b = x.shape[:2]
        out = self._op(x.reshape(s * b, *x.shape[2:]), weight, bias)
        return out.reshape(s, b, *out.shape[1:])

    def _unfold(self, x: torch.Tensor, s: int) -> tuple[torch.Tensor, tuple[int, ...]]:
        """A folded input ``[S * B, ...]`` as ``[S, B', *features]``, and the leading shape of the output."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Sampled output ``[S, B, *out]`` for input ``[S, B, *features]`` (or ``[B, *features]``).

        A ``folded`` layer takes ``[S * B, ...]`` instead (sample-major: rows s*B .. s*B + B - 1 are
        sample s) and returns ``[S * B, ...]``; S is the number of samples the call folded into the
        batch (:func:`lightning_bnn.nn.sampling.folded`, 1 outside it).
        """
        return self._run(x, None)

    def _run(self, x: torch.Tensor, moments: _Moments | None) -> torch.Tensor:
        if not self.folded:
            return self._sampled(x, moments)
        s = sampling.current().folded_samples
        if x.dim() < 2 or x.shape[0] % s:
            raise ValueError(
                f"{type(self).__name__} expects a batch of {s} folded samples times B examples, got shape "
                f"{tuple(x.shape)}"
            )
        h, lead = self._unfold(x, s)
        out = self._sampled(h, moments)
        return out.reshape(*lead, *out.shape[2:])

    def forward_and_kl(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(self(x), self.kl())`` with sigma = softplus(rho) computed once for both.

        A training step needs both; sharing sigma (and, for the Gaussian prior, one fused
        backward through the softplus, see :class:`~lightning_bnn.nn.posterior.GaussianPosterior`)
        removes most of the per-weight work that is not a matrix product.
        """
        w_sigma, w_var, kl = self.weight.moments_and_kl(self.prior, self.kl_method, self.num_kl_samples)
        b_sigma = b_var = None
        if self.bias is not None:
            b_sigma, b_var, b_kl = self.bias.moments_and_kl(self.prior, self.kl_method, self.num_kl_samples)
            kl = kl + b_kl
        return self._run(x, _Moments(w_sigma, w_var, b_sigma, b_var)), kl

    def _moments(self) -> _Moments:
        """Sigma and sigma^2 without the KL (one softplus per tensor).

        In ``eval()`` mode without autograd (prediction under ``torch.no_grad()`` or
        ``inference_mode()``) they are kept between calls: repeated sampling of one model (the
        dashboard's sample slider) skips a softplus over every weight. They are recomputed when
        the layer switches between ``train()`` and ``eval()`` (as Lightning does around every
        validation) and when any ``rho`` changes identity, storage or version counter (in-place
        changes: ``load_state_dict``, ``reset_parameters``, ``.to()``, most optimizers). Two kinds
        of change bypass the version counter: writes through ``.data`` and PyTorch's *fused*
        optimizers (``Adam(fused=True)``, which :func:`~lightning_bnn.training.module.make_adam` uses);
        an optimizer step taken in ``eval()`` mode, or a ``.data`` write, needs
        :meth:`clear_moments_cache` (or a ``train()``/``eval()`` round trip) before predicting.
        """
        if torch.is_grad_enabled() or self.training:
            return self._compute_moments()
        key = tuple((id(p.rho), p.rho.data_ptr(), p.rho._version) for p in (self.weight, self.bias) if p is not None)
        if self._moments_cache is None or self._moments_cache[0] != key:
            self._moments_cache = (key, self._compute_moments())
        return self._moments_cache[1]

    def train(self, mode: bool = True) -> _BayesLayer:
        """Switch mode (see ``nn.Module.train``), forgetting the sigma kept for prediction."""
        self.clear_moments_cache()
        return super().train(mode)

    def _compute_moments(self) -> _Moments:
        w_sigma = self.weight.sigma
        b_sigma = self.bias.sigma if self.bias is not None else None
        return _Moments(w_sigma, w_sigma.square(), b_sigma, None if b_sigma is None else b_sigma.square())

    def clear_moments_cache(self) -> None:
        """Forget the sigma kept for prediction (see :meth:`_moments`)."""
        self._moments_cache = None

    def _sampled(self, x: torch.Tensor, moments: _Moments | None) -> torch.Tensor:
        if x.dim() == self.feature_dims + 1:
            return self._sampled(x.unsqueeze(0), moments).squeeze(0)
        if x.dim() != self.feature_dims + 2:
            raise ValueError(
                f"{type(self).__name__} expects input [S, B, *features] with {self.feature_dims} feature "
                f"dimension(s), got shape {tuple(x.shape)}"
            )
        mode = self._mode(x)
        if moments is None and mode is not PredictEstimator.mean:
            moments = self._moments()  # kept between prediction calls (see _moments)
        if mode is PredictEstimator.mean:
            bias = self.bias.mu if self.bias is not None else None
            if x.stride(0) == 0:
                return (
                    self._op(x[0], self.weight.mu, bias)
                    .unsqueeze(0)
                    .expand(x.shape[0], -1, *([-1] * self.feature_dims))
                )
            return self._op_folded(x, self.weight.mu, bias)
        if mode is PredictEstimator.local:
            return self._local(x, moments)
        if mode is PredictEstimator.flipout:
            return self._flipout(x, moments)
        return self._reparameterization(x, moments)

    def _mode(self, x: torch.Tensor) -> PredictEstimator:
        if self.training:
            if sampling.current().estimator is PredictEstimator.mean:
                return PredictEstimator.mean  # the means trained alone, as a point estimate (pretraining)
            return PredictEstimator(self.estimator.value)
        chosen = sampling.current().estimator
        if chosen is not None and chosen is not PredictEstimator.auto:
            return chosen
        if x.stride(0) == 0 and x.shape[0] > 1:
            # the same input for every sample (a network's first layer): the local trick
            # computes the pre-activations' mean and variance once and only draws S noises
            return PredictEstimator.local
        return PredictEstimator.reparameterization if x.shape[1] >= self._auto_min_batch(x) else PredictEstimator.local

    def _auto_min_batch(self, x: torch.Tensor) -> int:
        """Batch size from which ``auto`` samples weights rather than pre-activations."""
        return AUTO_WEIGHT_SAMPLING_MIN_BATCH

    def _local(self, x: torch.Tensor, moments: _Moments | None = None) -> torch.Tensor:
        """Local reparameterisation: b = x mu + sqrt(x^2 sigma^2) * eps."""
        shared = x.stride(0) == 0 and x.shape[0] > 1
        xin = x[0] if shared else x.reshape(-1, *x.shape[2:])
        moments = moments or self._moments()
        w_var = moments.w_var
        bias_mu = bias_var = None
        if self.bias is not None:
            bias_mu, bias_var = self.bias.mu, moments.b_var
        mean = self._op(xin, self.weight.mu, bias_mu)
        with _full_precision(xin):  # x^2 sigma^2 spans many decades: keep it float32 under autocast
            var = self._op(_widen(xin).square(), w_var, bias_var)
        std = var.clamp_min(1e-16).sqrt()
        s = x.shape[0]
        if shared:
            noise = sampling.randn((s, *mean.shape), mean)
            return torch.addcmul(mean, std, noise)
        out = torch.addcmul(mean, std, sampling.randn(mean.shape, mean))
        return out.reshape(s, x.shape[1], *out.shape[1:])

    def _reparameterization(self, x: torch.Tensor, moments: _Moments | None = None) -> torch.Tensor:
        """One weight sample per Monte Carlo sample, shared across the batch."""
        s = x.shape[0]
        weight = self.weight.sample(s, None if moments is None else moments.w_sigma)
        bias = None
        if self.bias is not None:
            bias = self.bias.sample(s, None if moments is None else moments.b_sigma)
        # A bfloat16 copy of w = mu + sigma * eps would round away perturbations below
        # 2^-9 |mu|: under autocast this estimator applies its sampled weights in float32.
        with _full_precision(x):
            x = _widen(x)
            if s == 1:
                out = self._op(x[0], weight[0], None if bias is None else bias[0])
                return out.unsqueeze(0)
            return self._op_per_sample(x, weight, bias)

    def _flipout(self, x: torch.Tensor, moments: _Moments | None = None) -> torch.Tensor:
        """Flipout: shared perturbation per sample, sign-flipped per example."""
        s = x.shape[0]
        w_sigma = self.weight.sigma if moments is None else moments.w_sigma
        bias = None
        if self.bias is not None:
            bias = self.bias.sample(s, None if moments is None else moments.b_sigma)
        mean = self._op_folded(x, self.weight.mu, None)
        eps = sampling.randn((s, *self.weight.mu.shape), x)
        delta = w_sigma * eps
        sign_in = sampling.random_signs(x.shape, x)
        perturbation = self._op_per_sample(x * sign_in, delta, None)
        sign_out = sampling.random_signs(perturbation.shape, perturbation)
        # under autocast, add the small perturbation to the mean in float32, not 16 bits
        out = torch.addcmul(_widen(mean), _widen(perturbation), sign_out)
        if bias is not None:
            out = out + bias.reshape(s, 1, bias.shape[1], *([1] * (out.dim() - 3)))
        return out

    def kl(self) -> torch.Tensor:
        """KL(q || p) summed over weight and bias (closed form or MC, per ``kl``)."""
        total = self.weight.kl(self.prior, self.kl_method, self.num_kl_samples)
        if self.bias is not None:
            total = total + self.bias.kl(self.prior, self.kl_method, self.num_kl_samples)
        return total


class BayesLinear(_BayesLayer):
    """Fully connected Bayes-by-Backprop layer, y = x W^T + b with W, b ~ q.

    Args:
        in_features: size of each input example.
        out_features: size of each output example.
        bias: whether to learn a (Bayesian) bias.
        prior: weight prior configuration (default N(0, 1)).
        estimator: ``local`` (default), ``reparameterization`` or ``flipout``.
        kl: ``auto`` (closed form where it exists, else the bound), ``exact``, ``mc`` or ``bound`` (scale mixture).
        mu_init_scale: mu starts uniform in +-mu_init_scale / sqrt(in_features).
        rho_init: starting rho; sigma starts at softplus(rho_init).
        num_kl_samples: Monte Carlo samples for the KL estimate when ``kl`` is ``mc``.
        folded: take inputs ``[S * B, *, in_features]`` with the samples folded into the batch
            (see :meth:`forward`), as ``nn.Linear`` takes ``[N, *, in_features]``.
    """

    feature_dims = 1

    def __init__(self, in_features: int, out_features: int, bias: bool = True, **kwargs) -> None:
        for name, value in (("in_features", in_features), ("out_features", out_features)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        super().__init__((out_features, in_features), (out_features,) if bias else None, in_features, **kwargs)
        self.in_features = in_features
        self.out_features = out_features

    def _op(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return F.linear(x, weight, bias)

    def forward_and_kl(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(self(x), self.kl())``, as one fused autograd node where it applies.

        In training with the local estimator and the closed-form KL to a Gaussian prior (the
        defaults), :class:`~lightning_bnn.nn.fused.LocalLinearGaussian` computes both; with the
        scale-mixture prior and ``kl='bound'``, :class:`~lightning_bnn.nn.fused.LocalLinearMixtureBound`;
        otherwise the general path of :meth:`_BayesLayer.forward_and_kl`.
        """
        gaussian = self.kl_method is KLMethod.exact and self.prior.name is PriorName.gaussian
        bound = self.kl_method is KLMethod.bound and self.prior.name is PriorName.scale_mixture
        fused = (
            self.training
            and not self.folded
            and self.estimator is Estimator.local
            and (gaussian or bound)
            and x.dim() in (2, 3)
            and not torch.is_autocast_enabled(x.device.type)
        )
        if not fused:
            return super().forward_and_kl(x)
        b_mu, b_rho = (self.bias.mu, self.bias.rho) if self.bias is not None else (None, None)
        x3 = x.unsqueeze(0) if x.dim() == 2 else x
        if x3.shape[-1] != self.in_features:
            return super().forward_and_kl(x)  # the general path raises the shape error
        args = (x3, self.weight.mu, self.weight.rho, b_mu, b_rho)
        if gaussian:
            out, kl = LocalLinearGaussian.apply(*args, float(self.prior.sigma))
        else:
            p = self.prior
            out, kl = LocalLinearMixtureBound.apply(*args, float(p.pi), float(p.sigma1), float(p.sigma2))
        return (out.squeeze(0) if x.dim() == 2 else out), kl

    def _unfold(self, x: torch.Tensor, s: int) -> tuple[torch.Tensor, tuple[int, ...]]:
        # nn.Linear acts on the last dimension of [N, *, F]: the middle dimensions join the batch
        return x.reshape(s, -1, x.shape[-1]), tuple(x.shape[:-1])

    def _auto_min_batch(self, x: torch.Tensor) -> int:
        return AUTO_WEIGHT_SAMPLING_MIN_BATCH_CPU_LINEAR if x.device.type == "cpu" else AUTO_WEIGHT_SAMPLING_MIN_BATCH

    def _op_per_sample(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if bias is None:
            return torch.matmul(x, weight.transpose(1, 2))
        return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, estimator={self.estimator.value}"


def _tuple(value: int | tuple[int, ...], dims: int, name: str, minimum: int) -> tuple[int, ...]:
    """``value`` as a ``dims``-tuple of integers >= ``minimum``, or a ValueError naming ``name``."""
    values = (value,) * dims if isinstance(value, int) and not isinstance(value, bool) else tuple(value)
    if len(values) != dims or any(isinstance(v, bool) or not isinstance(v, int) or v < minimum for v in values):
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        if isinstance(value, int):
            raise ValueError(f"{name} must be {kind}, got {value!r}")
        raise ValueError(f"{name} must be {kind} or a tuple of {dims} of them, got {value!r}")
    return values


class _BayesConvNd(_BayesLayer):
    """N-d convolution with Bayes-by-Backprop weights (``dims`` = 1, 2 or 3).

    The options of ``nn.ConvNd`` (stride, padding as numbers or ``"same"``/``"valid"``,
    dilation, groups, padding_mode) mean the same here, so :func:`~lightning_bnn.nn.convert.bayesianize`
    can replace any ``nn.Conv1d``/``nn.Conv2d``/``nn.Conv3d``.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: kernel size (one number for every dimension, or a tuple).
        stride: convolution stride.
        padding: zero padding (a number, a tuple, ``"same"`` or ``"valid"``).
        dilation: kernel dilation.
        groups: blocked connections from input to output channels.
        bias: whether to learn a (Bayesian) bias.
        padding_mode: ``zeros``, ``reflect``, ``replicate`` or ``circular``.
        **kwargs: prior, estimator, kl, mu_init_scale, rho_init, num_kl_samples, folded as in
            :class:`BayesLinear`.
    """

    dims: int = 2

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, ...],
        stride: int | tuple[int, ...] = 1,
        padding: int | tuple[int, ...] | str = 0,
        dilation: int | tuple[int, ...] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        **kwargs,
    ) -> None:
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("groups", groups)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"in_channels ({in_channels}) and out_channels ({out_channels}) must divide by groups")
        kernel = _tuple(kernel_size, self.dims, "kernel_size", 1)
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"padding must be a number, a tuple, 'same' or 'valid', got {padding!r}")
        else:
            padding = _tuple(padding, self.dims, "padding", 0)
        if padding_mode not in ("zeros", "reflect", "replicate", "circular"):
            raise ValueError(f"padding_mode must be zeros, reflect, replicate or circular, got {padding_mode!r}")
        fan_in = in_channels // groups * math.prod(kernel)
        super().__init__(
            (out_channels, in_channels // groups, *kernel), (out_channels,) if bias else None, fan_in, **kwargs
        )
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = kernel_size if isinstance(kernel_size, int) else kernel
        self.stride = stride if isinstance(stride, int) else _tuple(stride, self.dims, "stride", 1)
        self.padding = padding
        self.dilation = dilation if isinstance(dilation, int) else _tuple(dilation, self.dims, "dilation", 1)
        self.padding_mode = padding_mode
        self._conv = (F.conv1d, F.conv2d, F.conv3d)[self.dims - 1]

    def _pad(self, x: torch.Tensor) -> tuple[torch.Tensor, int | tuple[int, ...] | str]:
        """Non-zero padding applied explicitly (as ``nn.ConvNd`` does), and the padding left for the conv."""
        if self.padding_mode == "zeros" or isinstance(self.padding, str):
            return x, self.padding
        pad = [p for p in reversed(self.padding) for _ in range(2)]
        return F.pad(x, pad, mode=self.padding_mode), 0

    def _op(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        x, padding = self._pad(x)
        return self._conv(x, weight, bias, self.stride, padding, self.dilation, self.groups)

    def _op_per_sample(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        # One grouped convolution: sample s's channels form groups s*G .. s*G + G - 1.
        s, b, c = x.shape[:3]
        grouped, padding = self._pad(x.transpose(0, 1).reshape(b, s * c, *x.shape[3:]))
        out = self._conv(
            grouped,
            weight.reshape(s * self.out_channels, *weight.shape[2:]),
            None if bias is None else bias.reshape(-1),
            self.stride,
            padding,
            self.dilation,
            s * self.groups,
        )
        return out.reshape(b, s, self.out_channels, *out.shape[2:]).transpose(0, 1)

    def _unfold(self, x: torch.Tensor, s: int) -> tuple[torch.Tensor, tuple[int, ...]]:
        return x.reshape(s, x.shape[0] // s, *x.shape[1:]), (x.shape[0],)

    def extra_repr(self) -> str:
        extra = "" if self.groups == 1 else f", groups={self.groups}"
        extra += "" if self.dilation == 1 else f", dilation={self.dilation}"
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}{extra}, estimator={self.estimator.value}"
        )


class BayesConv1d(_BayesConvNd):
    """1-D convolution with Bayes-by-Backprop weights (arguments as :class:`_BayesConvNd`)."""

    dims = 1
    feature_dims = 2


class BayesConv2d(_BayesConvNd):
    """2-D convolution with Bayes-by-Backprop weights (arguments as :class:`_BayesConvNd`)."""

    dims = 2
    feature_dims = 3


class BayesConv3d(_BayesConvNd):
    """3-D convolution with Bayes-by-Backprop weights (arguments as :class:`_BayesConvNd`)."""

    dims = 3
    feature_dims = 4


def total_kl(model: nn.Module) -> torch.Tensor:
    """Total KL(q || p) of a model: the sum of ``kl()`` over its Bayesian modules."""
    terms = [m.kl() for m in model.modules() if isinstance(m, BayesianModule)]
    if not terms:
        return torch.zeros(())
    return torch.stack(terms).sum()


def clear_moments_cache(model: nn.Module) -> None:
    """Forget the sigma every Bayesian layer of ``model`` keeps for prediction (see ``_BayesLayer._moments``)."""
    for m in model.modules():
        if isinstance(m, _BayesLayer):
            m.clear_moments_cache()
