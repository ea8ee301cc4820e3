"""The mean-field Gaussian posterior q(w) = N(mu, sigma^2), sigma = log(1 + exp(rho)).

One class owns the variational parameters of one weight tensor: sampling, the
log-density and the KL divergence to a prior (Blundell et al. 2015, section 3.2).
Layers hold one of these per weight tensor and differ only in the function they
apply (see :mod:`lightning_bnn.nn.layers`).
"""

from __future__ import annotations

import math
from enum import StrEnum

import torch
import torch.nn.functional as F
from torch import nn

from lightning_bnn.nn import sampling
from lightning_bnn.nn.backward import rho_gradient
from lightning_bnn.nn.mixture_kl import SoftplusMixtureKLBound, SoftplusMixtureMCKL, scale_mixture_kl_bound
from lightning_bnn.nn.priors import PriorConfig, PriorName, make_prior

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


class KLMethod(StrEnum):
    """How KL(q || p) is computed.

    ``exact`` uses a closed form (Gaussian and Laplace priors), ``mc`` a Monte Carlo
    estimate of E_q[log q(w) - log p(w)], ``bound`` the closed-form upper bound of the KL to
    the scale-mixture prior (:func:`scale_mixture_kl_bound`, scale mixture only), ``auto``
    the closed form where it exists and otherwise :data:`AUTO_SCALE_MIXTURE`.
    """

    auto = "auto"
    exact = "exact"
    mc = "mc"
    bound = "bound"


#: What ``kl='auto'`` computes for the scale-mixture prior (no closed form): the bound, chosen
#: from the speed and quality measured in docs/performance.md ("KL for the scale-mixture
#: prior"): the cheapest KL there (no noise draw), zero variance, and on digits (3 seeds)
#: validation NLL and accuracy no worse than the Monte Carlo estimate's.
AUTO_SCALE_MIXTURE = KLMethod.bound


def resolve_kl_method(method: KLMethod | str, prior: PriorConfig) -> KLMethod:
    """Pick the KL computation for a prior, refusing ``exact`` where no closed form exists.

    ``bound`` is accepted for the scale-mixture prior only: for a Gaussian or Laplace prior
    the KL has a closed form (``exact``), and a bound is not needed.

    Raises:
        ValueError: for an unknown method, ``exact`` with the scale-mixture prior, or
            ``bound`` with another prior (each message names ``kl`` and ``prior.name``).
    """
    try:
        method = KLMethod(method)
    except ValueError:
        valid = ", ".join(m.value for m in KLMethod)
        raise ValueError(f"kl must be one of {valid}; got {method!r}") from None
    if method is KLMethod.auto:
        return KLMethod.exact if prior.has_closed_form_kl else AUTO_SCALE_MIXTURE
    if method is KLMethod.exact and not prior.has_closed_form_kl:
        raise ValueError(
            f"kl='exact' has no closed form for prior.name={prior.name.value!r}; use kl='bound', 'mc' or 'auto'"
        )
    if method is KLMethod.bound and prior.name is not PriorName.scale_mixture:
        raise ValueError(
            f"kl='bound' applies to prior.name='scale_mixture' only, got prior.name={prior.name.value!r}; "
            "use kl='exact' or 'auto' (closed form)"
        )
    return method


def sigma_from_rho(rho: torch.Tensor) -> torch.Tensor:
    """Sigma = log(1 + exp(rho)), computed stably (softplus)."""
    return F.softplus(rho)


def rho_from_sigma(sigma: float) -> float:
    """Inverse of the softplus: rho = log(exp(sigma) - 1)."""
    return math.log(math.expm1(sigma))


def gaussian_kl_to_gaussian(mu: torch.Tensor, sigma: torch.Tensor, prior_sigma: float) -> torch.Tensor:
    r"""Closed-form KL(N(mu, sigma^2) || N(0, s^2)), summed over all elements.

    .. math:: \mathrm{KL} = \sum_i \log\frac{s}{\sigma_i} + \frac{\sigma_i^2 + \mu_i^2}{2 s^2} - \frac12
    """
    inv_var = 1.0 / (prior_sigma * prior_sigma)
    n = mu.numel()
    return (
        n * (math.log(prior_sigma) - 0.5)
        - torch.log(sigma).sum()
        + 0.5 * inv_var * (sigma.square().sum() + mu.square().sum())
    )


def gaussian_kl_to_laplace(mu: torch.Tensor, sigma: torch.Tensor, scale: float) -> torch.Tensor:
    r"""Closed-form KL(N(mu, sigma^2) || Laplace(0, b)), summed over all elements.

    KL = -H[q] - E_q[log p] with E_q|w| the mean of a folded normal:

    .. math::
        \mathrm{KL} = \sum_i -\tfrac12\log(2\pi e\,\sigma_i^2) + \log(2b)
        + \frac{1}{b}\Big(\sigma_i\sqrt{2/\pi}\,e^{-\mu_i^2/2\sigma_i^2}
        + \mu_i\,\mathrm{erf}\big(\mu_i/(\sigma_i\sqrt2)\big)\Big)
    """
    abs_mean = sigma * math.sqrt(2.0 / math.pi) * torch.exp(-0.5 * (mu / sigma).square()) + mu * torch.erf(
        mu / (sigma * math.sqrt(2.0))
    )
    n = mu.numel()
    return n * (math.log(2.0 * scale) - 0.5 - _HALF_LOG_2PI) - torch.log(sigma).sum() + abs_mean.sum() / scale


def softplus_moments_and_gaussian_kl(
    mu: torch.Tensor, rho: torch.Tensor, prior_sigma: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sigma = softplus(rho), sigma^2 and KL(N(mu, sigma^2) || N(0, s^2)) from one softplus, without autograd.

    The same numbers as :func:`sigma_from_rho` and :func:`gaussian_kl_to_gaussian`; the
    forward pass of the fused training functions (:class:`_SoftplusGaussianKL` and
    :class:`~lightning_bnn.nn.fused.LocalLinearGaussian`).
    """
    sigma = F.softplus(rho)
    buffer = torch.log(sigma)
    log_sum = buffer.sum()
    var = torch.mul(sigma, sigma, out=buffer)  # the log's buffer, reused
    flat_mu = mu.reshape(-1)
    inv_var = 1.0 / (prior_sigma * prior_sigma)
    kl = (
        mu.numel() * (math.log(prior_sigma) - 0.5) - log_sum + 0.5 * inv_var * (var.sum() + torch.dot(flat_mu, flat_mu))
    )
    return sigma, var, kl


class _SoftplusGaussianKL(torch.autograd.Function):
    r"""sigma = softplus(rho), sigma^2 and KL(N(mu, sigma^2) || N(0, s^2)) from one softplus.

    The same numbers as :func:`sigma_from_rho` and :func:`gaussian_kl_to_gaussian`, with a
    hand-written backward that applies the chain rule through the softplus once for all
    three outputs. With L depending on them through g_sigma, g_var and g_kl:

    .. math::
        \frac{\partial L}{\partial \rho} = \Big(g_\sigma + 2\sigma g_{\sigma^2}
        + g_{KL}\big(\frac{\sigma}{s^2} - \frac{1}{\sigma}\big)\Big)\,\mathrm{sigmoid}(\rho),
        \qquad \frac{\partial L}{\partial \mu} = g_{KL}\,\frac{\mu}{s^2}

    A training step needs sigma (or sigma^2) for the forward pass and the KL for the loss;
    computing them together saves a second softplus and a chain of small backward ops over
    every weight, the per-weight work that dominates a Bayes-by-Backprop step at batch 128.
    """

    @staticmethod
    def forward(ctx, mu: torch.Tensor, rho: torch.Tensor, prior_sigma: float):  # noqa: D102
        ctx.set_materialize_grads(False)
        with torch.autocast(device_type=rho.device.type, enabled=False):
            sigma, var, kl = softplus_moments_and_gaussian_kl(mu, rho, prior_sigma)
        ctx.save_for_backward(mu, rho, sigma, var)
        ctx.inv_var = 1.0 / (prior_sigma * prior_sigma)
        return sigma, var, kl

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_sigma, g_var, g_kl):  # noqa: D102
        mu, rho, sigma, var = ctx.saved_tensors
        grad_mu = grad_rho = None
        # d/dsigma, written as (sigma^2 (2 g_var + g_kl / s^2) - g_kl) / sigma + g_sigma
        if g_kl is not None:
            if g_var is not None:
                d_sigma = torch.add(g_kl * ctx.inv_var, g_var, alpha=2.0)
                d_sigma = torch.addcmul(-g_kl, var, d_sigma, out=d_sigma)
            else:
                d_sigma = (var * (g_kl * ctx.inv_var)).sub_(g_kl)
            d_sigma = d_sigma.div_(sigma)
        else:
            d_sigma = None
        grad_rho = rho_gradient(rho, sigma, d_sigma, g_var, g_sigma, ctx.needs_input_grad[1])
        if ctx.needs_input_grad[0] and g_kl is not None:
            grad_mu = mu * (g_kl * ctx.inv_var)
        return grad_mu, grad_rho, None


class GaussianPosterior(nn.Module):
    """Mean-field Gaussian over one weight tensor, parameterised by ``mu`` and ``rho``.

    Args:
        shape: shape of the weight tensor.
        mu_init_bound: ``mu`` starts uniform in [-bound, bound] (0 gives zeros).
        rho_init: starting value of ``rho`` (sigma = softplus(rho_init)).
    """

    def __init__(self, shape: tuple[int, ...], mu_init_bound: float, rho_init: float) -> None:
        super().__init__()
        self.mu = nn.Parameter(torch.empty(shape))
        self.rho = nn.Parameter(torch.empty(shape))
        self.mu_init_bound = mu_init_bound
        self.rho_init = rho_init
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-draw ``mu`` and reset ``rho`` to its starting value."""
        with torch.no_grad():
            if self.mu_init_bound > 0:
                self.mu.uniform_(-self.mu_init_bound, self.mu_init_bound)
            else:
                self.mu.zero_()
            self.rho.fill_(self.rho_init)

    @property
    def sigma(self) -> torch.Tensor:
        """Posterior standard deviation, softplus(rho)."""
        return sigma_from_rho(self.rho)

    def sample(self, num_samples: int, sigma: torch.Tensor | None = None) -> torch.Tensor:
        """Draw ``num_samples`` weights, w = mu + sigma * eps, shape [S, *shape]."""
        sigma = self.sigma if sigma is None else sigma
        eps = sampling.randn((num_samples, *self.mu.shape), self.mu)
        return torch.addcmul(self.mu, sigma, eps)

    def kl(self, prior: PriorConfig, method: KLMethod, num_mc_samples: int = 1) -> torch.Tensor:
        r"""KL(q || p) summed over the tensor's elements.

        ``exact`` uses a closed form; ``mc`` the unbiased estimate
        :math:`\frac1K\sum_k \log q(w_k) - \log p(w_k)`, w_k ~ q, with
        reparameterised samples so that it carries gradients (Blundell et al. 2015, eq. 2);
        ``bound`` the closed-form upper bound of :func:`~lightning_bnn.nn.mixture_kl.scale_mixture_kl_bound`
        (scale-mixture prior).
        """
        return self.moments_and_kl(prior, method, num_mc_samples)[2]

    def moments_and_kl(
        self, prior: PriorConfig, method: KLMethod, num_mc_samples: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sigma, sigma^2 and KL(q || p) (as :meth:`kl`), with one softplus for all three.

        This is what a training step needs: sigma or sigma^2 for the forward pass and the
        KL for the loss. For the Gaussian prior's closed form and for both KLs of the scale
        mixture (:mod:`~lightning_bnn.nn.mixture_kl`) all three come from one fused autograd
        function; otherwise the KL is computed from the same sigma (:meth:`kl_from_sigma`).
        The scale mixture's Monte Carlo KL draws its own noise (independent of the layer's
        forward sample), as the general path does.
        """
        if method is KLMethod.exact and prior.name is PriorName.gaussian:
            return _SoftplusGaussianKL.apply(self.mu, self.rho, float(prior.sigma))
        if prior.name is PriorName.scale_mixture and method in (KLMethod.bound, KLMethod.mc):
            mixture = (float(prior.pi), float(prior.sigma1), float(prior.sigma2))
            if method is KLMethod.bound:
                return SoftplusMixtureKLBound.apply(self.mu, self.rho, *mixture)
            eps = sampling.randn((num_mc_samples, *self.mu.shape), self.mu)
            return SoftplusMixtureMCKL.apply(self.mu, self.rho, eps, *mixture)
        sigma = self.sigma
        return sigma, sigma.square(), self.kl_from_sigma(sigma, prior, method, num_mc_samples)

    def kl_from_sigma(
        self, sigma: torch.Tensor, prior: PriorConfig, method: KLMethod, num_mc_samples: int = 1
    ) -> torch.Tensor:
        """KL(q || p) through autograd from a given sigma: the general path.

        The fused functions of :meth:`moments_and_kl` are tested against it, and the benchmark
        times it for the scale mixture's Monte Carlo KL as it was computed before the fused node.
        The Monte Carlo branch draws its noise as :meth:`moments_and_kl` does (same numbers
        under the same seed).
        """
        if method is KLMethod.exact:
            if prior.name is PriorName.gaussian:
                return gaussian_kl_to_gaussian(self.mu, sigma, prior.sigma)
            if prior.name is PriorName.laplace:
                return gaussian_kl_to_laplace(self.mu, sigma, prior.scale)
            raise ValueError(f"no closed-form KL for prior.name={prior.name.value!r}")
        if method is KLMethod.bound:
            if prior.name is not PriorName.scale_mixture:
                raise ValueError(f"kl='bound' applies to prior.name='scale_mixture' only, got {prior.name.value!r}")
            return scale_mixture_kl_bound(self.mu, sigma, prior.pi, prior.sigma1, prior.sigma2)
        eps = sampling.randn((num_mc_samples, *self.mu.shape), self.mu)
        w = torch.addcmul(self.mu, sigma, eps)
        log_q = -torch.log(sigma).sum() * num_mc_samples - 0.5 * eps.square().sum() - w.numel() * _HALF_LOG_2PI
        log_p = make_prior(prior, device=w.device, dtype=w.dtype).log_prob(w).sum()
        return (log_q - log_p) / num_mc_samples
