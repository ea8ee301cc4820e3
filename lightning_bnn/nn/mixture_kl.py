r"""KL(q || p) to the scale-mixture prior: a closed-form upper bound and a fused Monte Carlo estimate.

The prior of Blundell et al. (2015, eq. 7) is, for every scalar weight,
p(w) = pi N(w; 0, s_1^2) + (1 - pi) N(w; 0, s_2^2); the posterior is mean-field,
q_i = N(mu_i, sigma_i^2). Both factorise over weights, so KL(q || p) = sum_i KL(q_i || p) and
everything below is per weight, then summed. KL(q_i || p) has no closed form. Two ways to
compute it, both as one autograd node with a hand-written backward (issue 13, item 1):

* :class:`SoftplusMixtureKLBound`: the closed-form upper bound (zero variance)

  .. math::
      \mathrm{KL}(q_i \,\|\, \textstyle\sum_k \pi_k N_k)
      \le -\log \sum_k \pi_k \exp\big(-\mathrm{KL}(q_i \,\|\, N_k)\big) =: B_i,
      \qquad N_k = N(0, s_k^2).

  Derivation (Jensen): for any weights r_k > 0 with sum_k r_k = 1, the log is concave, so
  log p(w) = log sum_k r_k (pi_k N_k(w) / r_k) >= sum_k r_k log(pi_k N_k(w) / r_k). Taking
  E_q and subtracting from E_q[log q] gives
  KL(q_i || p) <= sum_k r_k (KL(q_i || N_k) - log pi_k + log r_k) for every r; the right side
  is smallest at r_k proportional to pi_k exp(-KL(q_i || N_k)), where it equals B_i. Since
  KL <= B, ``E_q[log lik] - sum_i B_i`` is still a lower bound on the evidence (a looser one
  than the ELBO). With one component (pi = 1, or s_1 = s_2) B_i is the exact Gaussian KL.

* :class:`SoftplusMixtureMCKL`: the Monte Carlo estimate of Blundell et al. (2015, eq. 2),
  (1/K) sum_j log q(w_j) - log p(w_j), w_j = mu + sigma eps_j, as the general path computes it
  (``GaussianPosterior.kl_from_sigma``), with the log-prior's log-sum-exp written out so that
  the sampling, log q, log p and the gradient take a few passes over the weights.

For two components both come out of one function of the weight's second moment. With
t = w^2 (Monte Carlo) or t = E_q[w^2] = mu^2 + sigma^2 (bound),

.. math::
    d(t) = \log\frac{\pi s_2}{(1 - \pi) s_1} - \frac{t}{2}\Big(\frac{1}{s_1^2} - \frac{1}{s_2^2}\Big),
    \qquad \log\big(\pi N_1(w) + (1-\pi) N_2(w)\big) = \log((1-\pi) N_2(w)) + \mathrm{softplus}(d(w^2)),

so that, with c = log(s_2 / (1 - pi)),

.. math::
    \log q(w) - \log p(w) &= c - \log\sigma - \tfrac12\epsilon^2 + \frac{w^2}{2 s_2^2} - \mathrm{softplus}(d(w^2)),\\
    B_i &= c - \log\sigma_i - \tfrac12 + \frac{t_i}{2 s_2^2} - \mathrm{softplus}(d(t_i)),
    \quad t_i = \mu_i^2 + \sigma_i^2.

(B is the Monte Carlo integrand with w^2 and eps^2 replaced by their means under q; since
softplus(d(t)) is convex in t, Jensen's inequality gives KL <= B a second way.) Both softplus terms are log-sum-exps in
stable form (``F.softplus``), never ``log(exp(a) + exp(b) + eps)``. Their derivative in t is
k(t) / 2 with k(t) = 1/s_2^2 + sigmoid(d(t)) (1/s_1^2 - 1/s_2^2), the responsibility-weighted
prior precision, which gives the backward passes:

.. math::
    \frac{\partial B_i}{\partial \mu_i} = k_i \mu_i, \quad
    \frac{\partial B_i}{\partial \sigma_i} = k_i \sigma_i - \frac{1}{\sigma_i}; \qquad
    \frac{\partial\,\mathrm{MC}}{\partial \mu} = \frac1K\sum_j k(w_j^2) w_j, \quad
    \frac{\partial\,\mathrm{MC}}{\partial \sigma} = \frac1K\sum_j k(w_j^2) w_j \epsilon_j - \frac{1}{\sigma},

and d sigma / d rho = sigmoid(rho) (sigma = softplus(rho)).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from lightning_bnn.nn.backward import rho_gradient


def mixture_constants(pi: float, sigma1: float, sigma2: float) -> tuple[float, float]:
    """``(alpha, gap)`` of d(t) = alpha - gap t / 2 (module docstring), for 0 < pi < 1.

    alpha = log(pi s_2 / ((1 - pi) s_1)), gap = 1/s_1^2 - 1/s_2^2.
    """
    alpha = math.log(pi) - math.log1p(-pi) + math.log(sigma2) - math.log(sigma1)
    return alpha, 1.0 / (sigma1 * sigma1) - 1.0 / (sigma2 * sigma2)


def scale_mixture_kl_bound(
    mu: torch.Tensor, sigma: torch.Tensor, pi: float, sigma1: float, sigma2: float
) -> torch.Tensor:
    r"""Upper bound on KL(N(mu, sigma^2) || pi N(0, s_1^2) + (1 - pi) N(0, s_2^2)), summed over elements.

    .. math::
        \sum_i -\log \sum_k \pi_k \exp\big(-\mathrm{KL}(N(\mu_i, \sigma_i^2) \,\|\, N(0, s_k^2))\big),
        \quad \pi_1 = \pi,\ \pi_2 = 1 - \pi

    (per weight, from Jensen's inequality: see the module docstring). The reference
    implementation, through autograd and ``torch.logsumexp``; it accepts ``pi`` = 0 or 1 (one
    component: the bound is then the exact Gaussian KL). Training uses the fused
    :class:`SoftplusMixtureKLBound`, which computes the same number.
    """
    t = mu.square() + sigma.square()
    log_sigma = torch.log(sigma)
    terms = []
    for weight, s in ((pi, sigma1), (1.0 - pi, sigma2)):
        kl_k = math.log(s) - log_sigma + t / (2.0 * s * s) - 0.5  # KL(q_i || N(0, s^2)) per weight
        log_weight = math.log(weight) if weight > 0 else -math.inf
        terms.append(log_weight - kl_k)
    return -torch.logsumexp(torch.stack(terms), dim=0).sum()


def _softplus_and_log_sum(rho: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return softplus(rho), the sum of its log, and its square (in the log's buffer)."""
    sigma = F.softplus(rho)
    buffer = torch.log(sigma)
    log_sum = buffer.sum()
    return sigma, log_sum, torch.mul(sigma, sigma, out=buffer)


def _k_of_d(d: torch.Tensor, gap: float, inv_var2: float) -> torch.Tensor:
    """The weight's prior precision k = 1/s_2^2 + sigmoid(d) (1/s_1^2 - 1/s_2^2), a new tensor."""
    return torch.sigmoid(d).mul_(gap).add_(inv_var2)


def softplus_moments_and_mixture_bound(
    mu: torch.Tensor, rho: torch.Tensor, pi: float, sigma1: float, sigma2: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sigma = softplus(rho), sigma^2, the bound sum_i B_i and d(mu^2 + sigma^2), without autograd.

    The forward pass of :class:`SoftplusMixtureKLBound` and of the fused local-trick layer
    (:class:`~lightning_bnn.nn.fused.LocalLinearMixtureBound`); ``d`` gives the gradient's
    per-weight prior precision (:func:`mixture_precision`). Requires 0 < pi < 1.
    """
    alpha, gap = mixture_constants(pi, sigma1, sigma2)
    sigma, log_sum, var = _softplus_and_log_sum(rho)
    t = torch.addcmul(var, mu, mu)  # mu^2 + sigma^2
    t_sum = t.sum()
    d = t.mul_(-0.5 * gap).add_(alpha)  # d(t), in t's buffer
    const = math.log(sigma2) - math.log1p(-pi) - 0.5
    kl = mu.numel() * const - log_sum + 0.5 / (sigma2 * sigma2) * t_sum - F.softplus(d).sum()
    return sigma, var, kl, d


def mixture_precision(d: torch.Tensor, pi: float, sigma1: float, sigma2: float) -> torch.Tensor:
    """k_i = dB_i/dmu_i / mu_i, from d of :func:`softplus_moments_and_mixture_bound` (module docstring)."""
    _, gap = mixture_constants(pi, sigma1, sigma2)
    return _k_of_d(d, gap, 1.0 / (sigma2 * sigma2))


class SoftplusMixtureKLBound(torch.autograd.Function):
    """sigma = softplus(rho), sigma^2 and the KL bound B (module docstring) from one softplus.

    Inputs ``mu``, ``rho`` (any shape) and the prior's ``pi`` (0 < pi < 1), ``sigma1``,
    ``sigma2``; outputs ``(sigma, sigma^2, sum_i B_i)``, the same numbers as
    :func:`scale_mixture_kl_bound`. As :class:`~lightning_bnn.nn.posterior._SoftplusGaussianKL`
    for the Gaussian prior, with the prior precision 1/s^2 replaced by the per-weight k_i.
    """

    @staticmethod
    def forward(ctx, mu, rho, pi: float, sigma1: float, sigma2: float):  # noqa: D102
        ctx.set_materialize_grads(False)
        with torch.autocast(device_type=rho.device.type, enabled=False):
            sigma, var, kl, d = softplus_moments_and_mixture_bound(mu, rho, pi, sigma1, sigma2)
        ctx.save_for_backward(mu, rho, sigma, var, d)
        ctx.gap, ctx.inv_var2 = mixture_constants(pi, sigma1, sigma2)[1], 1.0 / (sigma2 * sigma2)
        return sigma, var, kl

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_sigma, g_var, g_kl):  # noqa: D102
        mu, rho, sigma, var, d = ctx.saved_tensors
        grad_mu = grad_rho = None
        c = None
        if g_kl is not None:
            c = _k_of_d(d, ctx.gap, ctx.inv_var2).mul_(g_kl)  # g_KL k_i
        # dL/dsigma = (sigma^2 (2 g_var + c) - g_kl) / sigma + g_sigma
        if c is not None:
            d_sigma = c if g_var is None else torch.add(c, g_var, alpha=2.0)
            d_sigma = torch.addcmul(-g_kl, var, d_sigma).div_(sigma)
        else:
            d_sigma = None
        grad_rho = rho_gradient(rho, sigma, d_sigma, g_var, g_sigma, ctx.needs_input_grad[1])
        if ctx.needs_input_grad[0] and c is not None:
            grad_mu = c.mul_(mu)
        return grad_mu, grad_rho, None, None, None


class SoftplusMixtureMCKL(torch.autograd.Function):
    """sigma = softplus(rho), sigma^2 and the Monte Carlo KL to the scale mixture, in one node.

    Inputs ``mu``, ``rho`` (shape P), the standard normal noise ``eps`` [K, *P] (drawn by the
    caller: the estimate is (1/K) sum_j log q(w_j) - log p(w_j), w_j = mu + sigma eps_j) and the
    prior's ``pi`` (0 < pi < 1), ``sigma1``, ``sigma2``. Outputs ``(sigma, sigma^2, estimate)``:
    the same numbers, for the same ``eps``, as the autograd path
    (``GaussianPosterior.kl_from_sigma`` with ``kl='mc'``), with the backward of the module
    docstring. ``eps`` gets no gradient.
    """

    @staticmethod
    def forward(ctx, mu, rho, eps, pi: float, sigma1: float, sigma2: float):  # noqa: D102
        ctx.set_materialize_grads(False)
        alpha, gap = mixture_constants(pi, sigma1, sigma2)
        inv_var2 = 1.0 / (sigma2 * sigma2)
        k = eps.shape[0]
        with torch.autocast(device_type=rho.device.type, enabled=False):
            sigma, log_sum, var = _softplus_and_log_sum(rho)
            w = torch.addcmul(mu, sigma, eps)  # [K, *P]
            flat_w, flat_eps = w.reshape(-1), eps.reshape(-1)
            w_sq = torch.dot(flat_w, flat_w)
            eps_sq = torch.dot(flat_eps, flat_eps)
            d = torch.mul(w, w).mul_(-0.5 * gap).add_(alpha)
            const = math.log(sigma2) - math.log1p(-pi)
            kl = mu.numel() * const - log_sum + (0.5 * inv_var2 * w_sq - 0.5 * eps_sq - F.softplus(d).sum()) / k
        ctx.save_for_backward(rho, sigma, var, eps, w, d)
        ctx.gap, ctx.inv_var2 = gap, inv_var2
        return sigma, var, kl

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_sigma, g_var, g_kl):  # noqa: D102
        rho, sigma, var, eps, w, d = ctx.saved_tensors
        grad_mu = grad_rho = None
        d_sigma = None
        if g_kl is not None:
            g_w = _k_of_d(d, ctx.gap, ctx.inv_var2).mul_(w).mul_(g_kl / eps.shape[0])  # dL/dw_j
            if ctx.needs_input_grad[0]:
                grad_mu = g_w.sum(0)
            d_sigma = g_w.mul_(eps).sum(0).sub_(torch.reciprocal(sigma).mul_(g_kl))
        if g_var is not None:
            if d_sigma is None:
                d_sigma = torch.mul(sigma, g_var).mul_(2.0)
            else:
                d_sigma = d_sigma.addcmul_(sigma, g_var, value=2.0)
        if g_sigma is not None:
            d_sigma = g_sigma if d_sigma is None else d_sigma.add_(g_sigma)
        if ctx.needs_input_grad[1] and d_sigma is not None:
            grad_rho = torch.sigmoid(rho).mul_(d_sigma)
        return grad_mu, grad_rho, None, None, None, None
