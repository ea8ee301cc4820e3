r"""The training step of a local-reparameterisation linear layer, as one autograd node.

:class:`~lightning_bnn.nn.layers.BayesLinear` with ``estimator="local"`` and the closed-form
KL to a N(0, s^2) prior (the defaults) runs :class:`LocalLinearGaussian` in training; with the
scale-mixture prior and ``kl='bound'``, :class:`LocalLinearMixtureBound`, the same node with the
bound of :mod:`lightning_bnn.nn.mixture_kl` as its KL (the constant 1/s^2 below becomes the
per-weight precision k_i of that module). It computes the same numbers
as the general path in :mod:`lightning_bnn.nn.layers` and :mod:`lightning_bnn.nn.posterior`
(``tests/test_fast_paths.py`` checks outputs, KL and gradients against it), with a
hand-written backward:

.. math::
    \sigma = \log(1 + e^{\rho}), \quad
    m = x \mu^\top + \mu_b, \quad v = x^2 (\sigma^2)^\top + \sigma_b^2, \quad
    y = m + \sqrt{v}\,\epsilon, \quad
    \mathrm{KL} = \sum \log\frac{s}{\sigma} + \frac{\sigma^2 + \mu^2}{2 s^2} - \frac12

(Kingma et al. 2015 for the local trick, Blundell et al. 2015 for the rest). With upstream
gradients g (of y) and g_KL, and g_v = g \epsilon / (2\sqrt{v}):

.. math::
    \frac{\partial L}{\partial \mu} = g^\top x + g_{KL}\frac{\mu}{s^2}, \qquad
    \frac{\partial L}{\partial \rho} = \mathrm{sigmoid}(\rho)\,
        \frac{\sigma^2 (2 G + g_{KL}/s^2) - g_{KL}}{\sigma}, \quad G = g_v^\top x^2, \qquad
    \frac{\partial L}{\partial x} = g \mu + 2 x\, (g_v \sigma^2)

Why: at batch 128 a Bayes-by-Backprop step is dominated by work per weight (softplus,
sigma^2, the KL and their gradients over 478k weights for the paper's MNIST MLP), not by the
matrix products. Autograd through the general path runs about ten elementwise passes over
every weight tensor and allocates a temporary for each; here the KL's gradient for mu is
added in place to the matrix product's, and the chain through softplus, sigma^2 and the KL is
applied in place to the matrix product that gives G.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lightning_bnn.nn.mixture_kl import mixture_precision, softplus_moments_and_mixture_bound
from lightning_bnn.nn.posterior import softplus_moments_and_gaussian_kl

#: Pre-activation variances are clamped here before the square root (as in the general path).
MIN_VARIANCE = 1e-16


def _grad_rho(grad_var: torch.Tensor, rho, sigma, var, g_kl, c) -> torch.Tensor:
    """dL/drho from dL/dsigma^2 (``grad_var``, overwritten), in place: see the module docstring.

    ``c`` is g_KL times the KL's prior precision: a scalar (Gaussian prior) or per weight (bound).
    """
    if g_kl is None:
        return grad_var.mul_(2.0).mul_(sigma).mul_(torch.sigmoid(rho))
    grad_var = torch.add(c, grad_var, alpha=2.0, out=grad_var)  # 2 G + g_kl / s^2
    grad_var = torch.addcmul(-g_kl, grad_var, var, out=grad_var)  # sigma^2 (2 G + g_kl / s^2) - g_kl
    return grad_var.mul_(torch.sigmoid(rho).div_(sigma))


def _local_forward(ctx, x, w_mu, w_rho, b_mu, b_rho, moments):
    """Forward of the fused nodes; ``moments(mu, rho)`` gives (sigma, sigma^2, KL, precision state)."""
    ctx.set_materialize_grads(False)
    s = x.shape[0]
    shared = x.stride(0) == 0 and s > 1
    xin = x[0] if shared else x.reshape(-1, x.shape[-1])
    w_sigma, w_var, kl, ctx.w_state = moments(w_mu, w_rho)
    b_sigma = b_var = ctx.b_state = None
    if b_mu is not None:
        b_sigma, b_var, b_kl, ctx.b_state = moments(b_mu, b_rho)
        kl = kl + b_kl
    x2 = xin.square()
    mean = F.linear(xin, w_mu, b_mu)
    v = F.linear(x2, w_var, b_var)
    clamped = v < MIN_VARIANCE
    std = v.clamp_min_(MIN_VARIANCE).sqrt_()
    if shared:
        noise = torch.randn((s, *mean.shape), device=mean.device, dtype=mean.dtype)
        out = torch.addcmul(mean, std, noise)
    else:
        noise = torch.randn_like(mean)
        out = torch.addcmul(mean, std, noise).reshape(s, x.shape[1], -1)
    ctx.save_for_backward(xin, x2, w_mu, w_rho, w_sigma, w_var, std, clamped, noise, b_mu, b_rho, b_sigma, b_var)
    ctx.shared, ctx.x_shape = shared, x.shape
    return out, kl


def _local_backward(ctx, g_out, g_kl, precision):
    """Backward of the fused nodes; ``precision(state)`` is the KL's k (a float or a per-weight tensor)."""
    xin, x2, w_mu, w_rho, w_sigma, w_var, std, clamped, noise, b_mu, b_rho, b_sigma, b_var = ctx.saved_tensors
    need_x, need_wmu, need_wrho, need_bmu, need_brho = ctx.needs_input_grad[:5]
    c_w = c_b = None
    if g_kl is not None:  # g_KL k: the KL's dL/dmu = c mu
        c_w = precision(ctx.w_state) * g_kl
        c_b = None if b_mu is None else precision(ctx.b_state) * g_kl
    grads = [None] * 5
    if g_out is not None:
        if ctx.shared:
            g_mean = g_out.sum(0)
            g_v = (g_out * noise).sum(0)
        else:
            g_mean = g_out.reshape(-1, g_out.shape[-1])
            g_v = g_mean * noise
        # dL/dv = g eps / (2 sqrt(v)), zero where v was clamped
        g_v = g_v.div_(std).mul_(0.5).masked_fill_(clamped, 0.0)
        if need_x:
            gx = torch.addcmul(g_mean @ w_mu, xin, g_v @ w_var, value=2.0)
            if ctx.shared:
                grads[0] = torch.zeros(ctx.x_shape, device=gx.device, dtype=gx.dtype)
                grads[0][0] = gx
            else:
                grads[0] = gx.reshape(ctx.x_shape)
        if need_wmu:
            grads[1] = g_mean.t() @ xin
        if need_wrho:
            grads[2] = _grad_rho(g_v.t() @ x2, w_rho, w_sigma, w_var, g_kl, c_w)
        if b_mu is not None:
            if need_bmu:
                grads[3] = g_mean.sum(0)
            if need_brho:
                grads[4] = _grad_rho(g_v.sum(0), b_rho, b_sigma, b_var, g_kl, c_b)
    if g_kl is not None:
        # the KL's own gradients: c mu for mu; for rho only where no G term carried it above
        for i, (mu, rho, sigma, var, c) in enumerate(
            ((w_mu, w_rho, w_sigma, w_var, c_w), (b_mu, b_rho, b_sigma, b_var, c_b))
        ):
            if mu is None:
                continue
            if ctx.needs_input_grad[1 + 2 * i]:
                grads[1 + 2 * i] = mu * c if grads[1 + 2 * i] is None else grads[1 + 2 * i].addcmul_(mu, c)
            if ctx.needs_input_grad[2 + 2 * i] and grads[2 + 2 * i] is None:
                grads[2 + 2 * i] = _grad_rho(torch.zeros_like(var), rho, sigma, var, g_kl, c)
    return grads


class LocalLinearGaussian(torch.autograd.Function):
    """``(y, KL)`` of a Bayesian linear layer in training: local trick, Gaussian prior, closed-form KL.

    Inputs: ``x`` [S, B, in] (``x.stride(0) == 0`` for an input shared by all samples, as at
    a network's first layer: the mean and variance are then computed once), the weight's
    ``mu``/``rho`` [out, in], the bias's ``mu``/``rho`` [out] (or ``None``) and the prior's
    standard deviation ``s``. Outputs ``y`` [S, B, out] and the KL summed over weight and bias.
    The noise is drawn exactly as the general path draws it, so both give the same ``y``
    under the same seed.
    """

    @staticmethod
    def forward(ctx, x, w_mu, w_rho, b_mu, b_rho, prior_sigma: float):  # noqa: D102
        ctx.inv_var = 1.0 / (prior_sigma * prior_sigma)

        def moments(mu, rho):
            return (*softplus_moments_and_gaussian_kl(mu, rho, prior_sigma), None)

        return _local_forward(ctx, x, w_mu, w_rho, b_mu, b_rho, moments)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_out, g_kl):  # noqa: D102
        return (*_local_backward(ctx, g_out, g_kl, lambda state: ctx.inv_var), None)


class LocalLinearMixtureBound(torch.autograd.Function):
    """``(y, KL bound)`` of a Bayesian linear layer in training: local trick, scale-mixture prior, ``kl='bound'``.

    As :class:`LocalLinearGaussian`, with the prior's ``pi`` (0 < pi < 1), ``sigma1`` and
    ``sigma2`` in place of ``s``, and the KL replaced by the bound sum_i B_i of
    :class:`~lightning_bnn.nn.mixture_kl.SoftplusMixtureKLBound` (the same numbers).
    """

    @staticmethod
    def forward(ctx, x, w_mu, w_rho, b_mu, b_rho, pi: float, sigma1: float, sigma2: float):  # noqa: D102
        ctx.mixture = (pi, sigma1, sigma2)

        def moments(mu, rho):
            return softplus_moments_and_mixture_bound(mu, rho, pi, sigma1, sigma2)

        return _local_forward(ctx, x, w_mu, w_rho, b_mu, b_rho, moments)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_out, g_kl):  # noqa: D102
        grads = _local_backward(ctx, g_out, g_kl, lambda d: mixture_precision(d, *ctx.mixture))
        return (*grads, None, None, None)
