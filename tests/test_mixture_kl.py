"""The scale-mixture prior's KL (issue 13, item 1): the closed-form bound and the fused Monte Carlo node.

Numbers against independent computations (the exact Gaussian KL, the trapezoid rule, many Monte
Carlo samples, the autograd path), gradients by ``gradcheck`` in float64, and the method's
validation.
"""

from __future__ import annotations

import math
import re

import pytest
import torch
from bnn_testing import assert_fused_equals_general
from torch import distributions as D

from lightning_bnn.nn.fused import LocalLinearMixtureBound
from lightning_bnn.nn.layers import BayesLinear
from lightning_bnn.nn.mixture_kl import SoftplusMixtureKLBound, SoftplusMixtureMCKL, scale_mixture_kl_bound
from lightning_bnn.nn.models import build_network
from lightning_bnn.nn.posterior import (
    AUTO_SCALE_MIXTURE,
    GaussianPosterior,
    KLMethod,
    gaussian_kl_to_gaussian,
    resolve_kl_method,
)
from lightning_bnn.nn.priors import PriorConfig, make_prior

#: The paper's MNIST prior (pi = 1/2, s1 = 1, s2 = e^-6) and a less extreme one.
PAPER = PriorConfig(name="scale_mixture")
MILD = PriorConfig(name="scale_mixture", pi=0.25, sigma1=1.0, sigma2=math.exp(-3.0))


def _mixture(prior: PriorConfig) -> tuple[float, float, float]:
    return prior.pi, prior.sigma1, prior.sigma2


def _posterior(shape=(4, 5), seed: int = 0, sigma_range=(-4.0, 0.0)) -> GaussianPosterior:
    """float64 posterior with mu in [-0.3, 0.3] and log sigma spread over ``sigma_range`` (seeded, forked RNG)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        post = GaussianPosterior(shape, mu_init_bound=0.3, rho_init=0.0).double()
        log_sigma = torch.empty(shape, dtype=torch.float64).uniform_(*sigma_range)
        with torch.no_grad():
            post.rho.copy_(torch.log(torch.expm1(log_sigma.exp())))
    return post


def _quadrature_kl_per_weight(mu: torch.Tensor, sigma: torch.Tensor, prior: D.Distribution) -> torch.Tensor:
    """KL(N(mu_i, sigma_i^2) || prior) per element, trapezoid rule on mu +- 12 sigma, 40,001 points (float64)."""
    mu, sigma = mu.flatten(), sigma.flatten()
    t = torch.linspace(-12.0, 12.0, 40001, dtype=torch.float64).unsqueeze(1)
    w = mu + sigma * t
    log_q = D.Normal(mu, sigma).log_prob(w)
    return torch.trapezoid(log_q.exp() * (log_q - prior.log_prob(w)), t, dim=0) * sigma


# -- the bound: one component, the reference, and bound >= KL ----------------------------------------------


@pytest.mark.parametrize(("pi", "exact_sigma"), [(1.0, 0.8), (0.0, 0.05)])
def test_bound_with_one_component_is_the_exact_gaussian_kl(pi, exact_sigma):
    post = _posterior()
    got = scale_mixture_kl_bound(post.mu, post.sigma, pi, 0.8, 0.05)
    torch.testing.assert_close(got, gaussian_kl_to_gaussian(post.mu, post.sigma, exact_sigma), rtol=1e-12, atol=1e-10)


def test_bound_with_equal_component_widths_is_the_exact_gaussian_kl_on_the_training_path():
    # sigma1 == sigma2: one component whatever pi; through the layer's fused node (float64).
    prior = PriorConfig(name="scale_mixture", pi=0.3, sigma1=0.4, sigma2=0.4)
    post = _posterior()
    zero, width = torch.zeros((), dtype=torch.float64), torch.tensor(0.4, dtype=torch.float64)
    expected = D.kl_divergence(D.Normal(post.mu, post.sigma), D.Normal(zero, width)).sum()
    torch.testing.assert_close(post.kl(prior, KLMethod.bound), expected, rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize("prior", [PAPER, MILD])
def test_fused_bound_equals_the_logsumexp_reference(prior):
    post = _posterior()
    sigma, var, kl = SoftplusMixtureKLBound.apply(post.mu, post.rho, *_mixture(prior))
    torch.testing.assert_close(sigma, post.sigma)
    torch.testing.assert_close(var, post.sigma.square())
    torch.testing.assert_close(kl, scale_mixture_kl_bound(post.mu, post.sigma, *_mixture(prior)), rtol=1e-12, atol=1e-9)
    # and the autograd path of the posterior gives the same number and gradients
    kl.backward()
    fused = (post.mu.grad.clone(), post.rho.grad.clone())
    post.zero_grad()
    post.kl_from_sigma(post.sigma, prior, KLMethod.bound).backward()
    torch.testing.assert_close(fused, (post.mu.grad, post.rho.grad), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("prior", [PAPER, MILD])
def test_bound_is_at_least_the_true_kl_of_every_weight(prior):
    # The true per-weight KL by the trapezoid rule (40,001 points; its error is < 1e-6 nats here)
    # and by 100,000 Monte Carlo samples per weight (seed 11). Posteriors from far narrower than
    # s2 to as wide as s1 (log sigma uniform in [-9, 0]) and |mu| <= 0.3, so that some weights sit
    # where both components matter and the gap is largest. Assert B_i >= KL_i - 1e-6 against the
    # quadrature, and B_i >= MC_i - 4 standard errors against the Monte Carlo mean.
    post = _posterior((30,), seed=5, sigma_range=(-9.0, 0.0))
    mu, sigma = post.mu.detach(), post.sigma.detach()
    pi, s1, s2 = _mixture(prior)
    per_weight_bound = torch.stack([scale_mixture_kl_bound(mu[i], sigma[i], pi, s1, s2) for i in range(mu.numel())])
    quad = _quadrature_kl_per_weight(mu, sigma, make_prior(prior, dtype=torch.float64))
    assert (per_weight_bound >= quad - 1e-6).all(), (per_weight_bound - quad).min()
    g = torch.Generator().manual_seed(11)
    eps = torch.randn((100_000, mu.numel()), generator=g, dtype=torch.float64)
    w = mu + sigma * eps
    terms = D.Normal(mu, sigma).log_prob(w) - make_prior(prior, dtype=torch.float64).log_prob(w)
    mc, se = terms.mean(0), terms.std(0) / math.sqrt(eps.shape[0])
    assert (per_weight_bound >= mc - 4 * se).all()
    # the two estimates of the true KL agree. (The gap B_i - KL_i is not small everywhere: up to 1.0
    # (PAPER) and 1.45 (MILD) nats per weight here, for |mu| < s1 and s2 < sigma < s1, where q
    # straddles both components; it is ~0 where one component dominates.)
    assert (mc - quad).abs().max() < 6 * se.max() + 1e-6


@pytest.mark.parametrize("prior", [PAPER, MILD])
def test_bound_is_at_least_the_mean_of_the_monte_carlo_estimate(prior):
    # The training path's MC estimate (fused node), 20,000 samples, seed 3, for 20 weights:
    # bound >= MC mean - 4 standard errors, the standard error estimated from 10 batches of 2,000.
    post = _posterior((4, 5), seed=2)
    bound = post.kl(prior, KLMethod.bound).item()
    with torch.random.fork_rng():
        torch.manual_seed(3)
        batches = torch.tensor([post.kl(prior, KLMethod.mc, num_mc_samples=2_000).item() for _ in range(10)])
    se = batches.std().item() / math.sqrt(len(batches))
    assert bound >= batches.mean().item() - 4 * se


def test_bound_is_finite_far_from_both_components():
    # |mu| = 40 (far in the tails of both) and sigma ~ 6e-6 (far narrower than s2 = e^-8)
    prior = PriorConfig(name="scale_mixture", sigma2=math.exp(-8.0))
    post = GaussianPosterior((50,), mu_init_bound=40.0, rho_init=-12.0)
    kl = post.kl(prior, KLMethod.bound)
    kl.backward()
    assert torch.isfinite(kl) and torch.isfinite(post.mu.grad).all() and torch.isfinite(post.rho.grad).all()


# -- gradients ---------------------------------------------------------------------------------------------

_PICKS = {
    "kl": lambda o: o[2],
    "var": lambda o: o[1],
    "sigma": lambda o: o[0],
    "all": lambda o: o[0].sum() + o[1].sum() * 3 + o[2],
}


@pytest.mark.parametrize("pick", list(_PICKS))
@pytest.mark.parametrize("prior", [PAPER, MILD])
def test_fused_bound_gradcheck(pick, prior):
    post = _posterior((3, 4), seed=1)
    mu, rho = post.mu.detach().requires_grad_(), post.rho.detach().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a, b: _PICKS[pick](SoftplusMixtureKLBound.apply(a, b, *_mixture(prior))), (mu, rho)
    )


@pytest.mark.parametrize("num_samples", [1, 3])
@pytest.mark.parametrize("pick", list(_PICKS))
@pytest.mark.parametrize("prior", [PAPER, MILD])
def test_fused_mc_gradcheck(pick, prior, num_samples):
    # The noise is an input of the node: gradcheck holds it fixed (seeded generator).
    post = _posterior((3, 4), seed=1)
    mu, rho = post.mu.detach().requires_grad_(), post.rho.detach().requires_grad_()
    eps = torch.randn((num_samples, 3, 4), generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda a, b: _PICKS[pick](SoftplusMixtureMCKL.apply(a, b, eps, *_mixture(prior))), (mu, rho)
    )


@pytest.mark.parametrize("num_samples", [1, 5])
@pytest.mark.parametrize("prior", [PAPER, MILD])
def test_fused_mc_equals_the_autograd_path(prior, num_samples):
    # Same seed, same noise: the same estimate (log q - log p through MixtureSameFamily) and gradients.
    post = _posterior((6, 7), seed=3)
    with torch.random.fork_rng():
        torch.manual_seed(9)
        fused = post.kl(prior, KLMethod.mc, num_mc_samples=num_samples)
        fused.backward()
        fused_grads = (post.mu.grad.clone(), post.rho.grad.clone())
        post.zero_grad()
        torch.manual_seed(9)
        reference = post.kl_from_sigma(post.sigma, prior, KLMethod.mc, num_samples)
        reference.backward()
    torch.testing.assert_close(fused, reference, rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(fused_grads, (post.mu.grad, post.rho.grad), rtol=1e-10, atol=1e-10)


# -- the method's validation and the training path ----------------------------------------------------------


def test_bound_is_accepted_for_the_scale_mixture_only():
    assert resolve_kl_method("bound", PAPER) is KLMethod.bound
    assert resolve_kl_method("auto", PAPER) is AUTO_SCALE_MIXTURE
    for name in ("gaussian", "laplace"):
        message = f"kl='bound' applies to prior.name='scale_mixture' only, got prior.name='{name}'; "
        with pytest.raises(ValueError, match=re.escape(message + "use kl='exact' or 'auto' (closed form)")):
            resolve_kl_method("bound", PriorConfig(name=name))
    with pytest.raises(ValueError, match="kl must be one of auto, exact, mc, bound; got 'jensen'"):
        resolve_kl_method("jensen", PAPER)


@pytest.mark.parametrize("kl", ["bound", "mc"])
@pytest.mark.parametrize("estimator", ["local", "reparameterization", "flipout"])
def test_layer_trains_with_each_mixture_kl(kl, estimator):
    layer = BayesLinear(6, 3, prior=PAPER, kl=kl, estimator=estimator)
    x = torch.randn(2, 5, 6, generator=torch.Generator().manual_seed(0))
    out, total = layer.forward_and_kl(x)
    assert out.shape == (2, 5, 3) and total.shape == () and torch.isfinite(total)
    (out.square().sum() + total).backward()
    for p in layer.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()
    if kl == "bound":  # zero variance: the same number twice, and equal to kl()
        torch.testing.assert_close(layer.forward_and_kl(x)[1], total)
        torch.testing.assert_close(layer.kl(), total)


# -- the fused local-trick layer with the bound ---------------------------------------------------------------


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("prior", [PAPER, MILD])
def test_fused_local_linear_mixture_bound_gradcheck(shared, bias, prior):
    """LocalLinearMixtureBound's hand-written backward against finite differences (float64, seeded noise)."""
    g = torch.Generator().manual_seed(1)

    def leaf(*shape, scale=1.0, shift=0.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale + shift).requires_grad_()

    w_mu, w_rho = leaf(3, 4, scale=0.05), leaf(3, 4, scale=1.0, shift=-4.0)  # both components matter
    b_mu, b_rho = (leaf(3, scale=0.05), leaf(3, scale=1.0, shift=-4.0)) if bias else (None, None)
    x = leaf(1, 5, 4) if shared else leaf(2, 5, 4)

    def f(x, w_mu, w_rho, *b):
        x = x.expand(2, 5, 4)
        with torch.random.fork_rng():
            torch.manual_seed(0)
            out, kl = LocalLinearMixtureBound.apply(x, w_mu, w_rho, *(b or (None, None)), *_mixture(prior))
        return out.sin().sum() + 0.3 * kl

    assert torch.autograd.gradcheck(f, (x, w_mu, w_rho, *((b_mu, b_rho) if bias else ())))


@pytest.mark.parametrize("num_samples", [1, 3])
def test_fused_local_linear_mixture_bound_equals_general_path(num_samples):
    """The fused node (forward_with_kl) and net(x, S) + total_kl give the same outputs, bound and gradients."""
    torch.manual_seed(0)
    net = build_network((6,), 4, hidden_sizes=(16, 8), estimator="local", prior=MILD, kl="bound").train()
    x = torch.rand(7, 6)
    assert_fused_equals_general(net, x, num_samples)
