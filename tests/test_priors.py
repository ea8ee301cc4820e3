"""Priors and the KL divergence of the mean-field Gaussian posterior: numbers against independent computations."""

from __future__ import annotations

import math
import re

import pytest
import torch
from torch import distributions as D

from lightning_bnn.nn.posterior import (
    GaussianPosterior,
    KLMethod,
    gaussian_kl_to_gaussian,
    gaussian_kl_to_laplace,
    resolve_kl_method,
    rho_from_sigma,
    sigma_from_rho,
)
from lightning_bnn.nn.priors import PriorConfig, PriorName, make_prior

MIXTURE = PriorConfig(name="scale_mixture", pi=0.25, sigma1=1.0, sigma2=math.exp(-6.0))


def _f64(value: float) -> torch.Tensor:
    return torch.tensor(value, dtype=torch.float64)


def _posterior(shape=(3, 4), seed: int = 0) -> GaussianPosterior:
    """A posterior with spread-out mu and sigma (deterministic: built under a forked, seeded RNG)."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        post = GaussianPosterior(shape, mu_init_bound=0.8, rho_init=-2.0).double()
        with torch.no_grad():
            post.rho.add_(torch.rand(shape, dtype=torch.float64) * 2.0)  # sigma in ~[0.13, 0.7]
    return post


def _quadrature_kl(mu: torch.Tensor, sigma: torch.Tensor, prior: D.Distribution) -> torch.Tensor:
    """KL(N(mu, sigma^2) || prior) summed over elements, by the trapezoid rule on mu +- 12 sigma (float64)."""
    mu, sigma = mu.flatten(), sigma.flatten()
    t = torch.linspace(-12.0, 12.0, 20001, dtype=torch.float64).unsqueeze(1)
    w = mu + sigma * t  # [K, n]
    log_q = D.Normal(mu, sigma).log_prob(w)
    integrand = log_q.exp() * (log_q - prior.log_prob(w))
    return (torch.trapezoid(integrand, t, dim=0) * sigma).sum()


# -- the prior factory -----------------------------------------------------------------------------------------


def test_make_prior_families():
    assert isinstance(make_prior(PriorConfig(name="gaussian", sigma=0.5)), D.Normal)
    assert isinstance(make_prior(PriorConfig(name="laplace", scale=0.5)), D.Laplace)
    mixture = make_prior(MIXTURE)
    assert isinstance(mixture, D.MixtureSameFamily)
    assert make_prior(PriorConfig(name="gaussian", sigma=2.0)).stddev.item() == pytest.approx(2.0)
    assert make_prior(MIXTURE, dtype=torch.float64).log_prob(torch.zeros(())).dtype == torch.float64


def test_scale_mixture_log_prob_is_the_papers_mixture():
    """log p(w) = log(pi N(w; 0, s1^2) + (1 - pi) N(w; 0, s2^2)) (Blundell et al. 2015, eq. 7)."""
    w = torch.linspace(-3.0, 3.0, 101, dtype=torch.float64)
    n1 = D.Normal(_f64(0.0), _f64(MIXTURE.sigma1)).log_prob(w).exp()
    n2 = D.Normal(_f64(0.0), _f64(MIXTURE.sigma2)).log_prob(w).exp()
    expected = torch.log(MIXTURE.pi * n1 + (1 - MIXTURE.pi) * n2)
    got = make_prior(MIXTURE, dtype=torch.float64).log_prob(w)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("w", [1e3, -1e3, 1e6, 50.0, 0.0, 1e-30])
def test_scale_mixture_log_prob_finite_far_in_the_tails(w):
    # sigma2 = exp(-8): N(1e3; 0, sigma2^2) underflows to 0 in float32 and float64 alike,
    # so log(pi N1 + (1-pi) N2 + eps)-style code gives -inf or a wrong value; logsumexp must not.
    config = PriorConfig(name="scale_mixture", pi=0.5, sigma1=1.0, sigma2=math.exp(-8.0))
    weight = torch.tensor([w], requires_grad=True)
    log_p = make_prior(config).log_prob(weight)
    assert torch.isfinite(log_p).all()
    # far out, the wide component dominates: log p = log pi + log N(w; 0, 1)
    if abs(w) >= 50:
        expected = math.log(0.5) - 0.5 * math.log(2 * math.pi) - 0.5 * w * w
        assert log_p.item() == pytest.approx(expected, rel=1e-6)
    log_p.sum().backward()
    assert torch.isfinite(weight.grad).all()


# -- closed-form KL against torch.distributions ---------------------------------------------------------------


def test_closed_form_gaussian_kl_equals_torch_distributions():
    post = _posterior((5, 7))
    prior_sigma = 0.3
    got = gaussian_kl_to_gaussian(post.mu, post.sigma, prior_sigma)
    expected = D.kl_divergence(D.Normal(post.mu, post.sigma), D.Normal(_f64(0.0), _f64(prior_sigma))).sum()
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-10)
    method_kl = post.kl(PriorConfig(name="gaussian", sigma=prior_sigma), KLMethod.exact)
    torch.testing.assert_close(method_kl, expected, rtol=1e-12, atol=1e-10)


def test_closed_form_laplace_kl_equals_quadrature():
    post = _posterior((2, 3))
    scale = 0.4
    got = gaussian_kl_to_laplace(post.mu, post.sigma, scale)
    expected = _quadrature_kl(post.mu.detach(), post.sigma.detach(), D.Laplace(_f64(0.0), _f64(scale)))
    torch.testing.assert_close(got.detach(), expected, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(post.kl(PriorConfig(name="laplace", scale=scale), KLMethod.exact), got)


def test_closed_form_laplace_kl_equals_independent_monte_carlo():
    # 400,000 draws per weight from torch.distributions, seed 0; the estimate's standard error is
    # about 0.004 nats for these 6 weights, the tolerance 0.03 is > 7 standard errors.
    post = _posterior((2, 3))
    scale = 0.4
    q = D.Normal(post.mu.detach(), post.sigma.detach())
    with torch.random.fork_rng():
        torch.manual_seed(0)
        w = q.sample((400_000,))
    mc = (q.log_prob(w) - D.Laplace(_f64(0.0), _f64(scale)).log_prob(w)).sum(dim=(1, 2)).mean()
    exact = gaussian_kl_to_laplace(post.mu, post.sigma, scale).detach()
    assert abs(mc.item() - exact.item()) < 0.03


@pytest.mark.parametrize("prior", [PriorConfig(name="gaussian", sigma=0.3), PriorConfig(name="laplace", scale=0.4)])
def test_closed_form_kl_gradients(prior):
    """Gradients of the exact KL w.r.t. mu and rho equal autograd through kl_divergence / the formula."""
    post = _posterior((3, 5))
    post.kl(prior, KLMethod.exact).backward()
    got = (post.mu.grad.clone(), post.rho.grad.clone())
    mu = post.mu.detach().clone().requires_grad_()
    rho = post.rho.detach().clone().requires_grad_()
    sigma = torch.nn.functional.softplus(rho)
    if prior.name is PriorName.gaussian:
        ref = D.kl_divergence(D.Normal(mu, sigma), D.Normal(_f64(0.0), _f64(prior.sigma))).sum()
    else:
        ref = gaussian_kl_to_laplace(mu, sigma, prior.scale)
    ref.backward()
    torch.testing.assert_close(got[0], mu.grad, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(got[1], rho.grad, rtol=1e-10, atol=1e-10)
    assert torch.autograd.gradcheck(
        lambda m, r: _kl_of(m, r, prior), (mu.detach().requires_grad_(), rho.detach().requires_grad_())
    )


def _kl_of(mu: torch.Tensor, rho: torch.Tensor, prior: PriorConfig) -> torch.Tensor:
    post = GaussianPosterior(tuple(mu.shape), 0.0, 0.0).double()
    del post.mu, post.rho
    post.mu, post.rho = mu, rho  # plain tensors: gradcheck differentiates through them
    return post.kl(prior, KLMethod.exact)


# -- the Monte Carlo KL -------------------------------------------------------------------------------------


@pytest.mark.parametrize("prior", [PriorConfig(name="gaussian", sigma=0.5), PriorConfig(name="laplace", scale=0.3)])
def test_mc_kl_agrees_with_closed_form(prior):
    # 20,000 samples, seed 1234 through fork_rng. Over 20 seeds the estimate's spread (std of
    # mc - exact) was 0.019 nats for these 12 weights; the tolerance 0.1 is > 5 of those.
    post = _posterior((3, 4))
    exact = post.kl(prior, KLMethod.exact)
    with torch.random.fork_rng():
        torch.manual_seed(1234)
        mc = post.kl(prior, KLMethod.mc, num_mc_samples=20_000)
    assert abs(mc.item() - exact.item()) < 0.1


def test_mc_kl_for_scale_mixture_agrees_with_quadrature():
    # No closed form: compare the MC estimate (20,000 samples, seed 7) with the trapezoid rule.
    # Tolerance 0.15 nats on a KL of ~25 for 6 weights (the MC spread is ~0.03 here).
    post = _posterior((2, 3))
    expected = _quadrature_kl(post.mu.detach(), post.sigma.detach(), make_prior(MIXTURE, dtype=torch.float64))
    with torch.random.fork_rng():
        torch.manual_seed(7)
        mc = post.kl(MIXTURE, KLMethod.mc, num_mc_samples=20_000)
    assert torch.isfinite(mc)
    assert abs(mc.item() - expected.item()) < 0.15


@pytest.mark.parametrize("prior", [PriorConfig(name="gaussian"), PriorConfig(name="laplace"), MIXTURE])
def test_mc_kl_is_reparameterised(prior):
    """The MC estimate carries gradients to mu and rho (Blundell et al. 2015, eq. 2)."""
    post = _posterior((4, 4)).float()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        kl = post.kl(prior, KLMethod.mc, num_mc_samples=3)
    kl.backward()
    for p in (post.mu, post.rho):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0


def test_mc_kl_finite_with_tiny_posterior_sigma_and_mixture_prior():
    post = GaussianPosterior((50,), mu_init_bound=5.0, rho_init=-12.0)  # sigma ~ 6e-6
    kl = post.kl(PriorConfig(name="scale_mixture", sigma2=math.exp(-8.0)), KLMethod.mc, num_mc_samples=2)
    assert torch.isfinite(kl)


# -- method choice and sigma parameterisation --------------------------------------------------------------


def test_resolve_kl_method():
    assert resolve_kl_method("auto", PriorConfig(name="gaussian")) is KLMethod.exact
    assert resolve_kl_method("auto", PriorConfig(name="laplace")) is KLMethod.exact
    assert resolve_kl_method("auto", MIXTURE) is KLMethod.bound
    assert resolve_kl_method("mc", PriorConfig(name="gaussian")) is KLMethod.mc
    with pytest.raises(ValueError, match="kl='exact'.*prior.name='scale_mixture'"):
        resolve_kl_method("exact", MIXTURE)
    with pytest.raises(ValueError, match="kl must be one of auto, exact, mc, bound; got 'closed'"):
        resolve_kl_method("closed", MIXTURE)


def test_sigma_is_softplus_of_rho():
    rho = torch.tensor([-30.0, -5.0, 0.0, 3.0, 40.0])
    torch.testing.assert_close(sigma_from_rho(rho), torch.log1p(torch.exp(rho)))
    assert sigma_from_rho(torch.tensor(rho_from_sigma(0.05))).item() == pytest.approx(0.05, rel=1e-6)


def test_prior_config_round_trip():
    config = PriorConfig(name="laplace", scale=0.2)
    assert config.name is PriorName.laplace
    assert PriorConfig(**config.to_dict()) == config
    assert config.to_dict()["name"] == "laplace"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "gaussian", "sigma": 0.0}, "prior.sigma must be a finite number > 0, got 0.0"),
        ({"name": "gaussian", "sigma": math.inf}, "prior.sigma must be a finite number > 0, got inf"),
        ({"name": "gaussian", "sigma": True}, "prior.sigma must be a finite number > 0, got True"),
        ({"name": "gaussian", "sigma": "1"}, "prior.sigma must be a finite number > 0, got '1'"),
        ({"name": "scale_mixture", "sigma1": -1.0}, "prior.sigma1 must be a finite number > 0, got -1.0"),
        ({"name": "laplace", "scale": 0.0}, "prior.scale must be a finite number > 0, got 0.0"),
        ({"name": "scale_mixture", "pi": 0.0}, "prior.pi must lie strictly between 0 and 1, got 0.0"),
        ({"name": "scale_mixture", "pi": 1.0}, "prior.pi must lie strictly between 0 and 1, got 1.0"),
        ({"name": "scale_mixture", "pi": 1.5}, "prior.pi must lie strictly between 0 and 1, got 1.5"),
        ({"name": "scale_mixture", "pi": math.nan}, "prior.pi must lie strictly between 0 and 1, got nan"),
        ({"name": "cauchy"}, "prior.name must be one of gaussian, scale_mixture, laplace; got 'cauchy'"),
    ],
)
def test_prior_config_refuses_bad_values_naming_the_field(kwargs, message):
    with pytest.raises(ValueError) as info:
        PriorConfig(**kwargs)
    assert str(info.value) == message


def test_prior_config_checks_only_its_familys_fields():
    """pi and the mixture sigmas are not checked for a Gaussian prior, nor sigma for a mixture."""
    assert PriorConfig(name="gaussian", pi=0.0, sigma1=-1.0).sigma == 1.0
    assert PriorConfig(name="scale_mixture", sigma=0.0, pi=0.999).pi == 0.999
    assert PriorConfig(name="laplace", sigma=-1.0, pi=2.0).scale == 1.0


def test_mc_kl_method_is_kept_for_every_prior():
    assert resolve_kl_method("mc", MIXTURE) is KLMethod.mc
    assert resolve_kl_method("mc", PriorConfig(name="laplace")) is KLMethod.mc
    assert resolve_kl_method("exact", PriorConfig(name="laplace")) is KLMethod.exact


def test_mc_kl_to_a_gaussian_prior_is_a_random_estimate_not_the_closed_form():
    """kl='mc' with a Gaussian prior samples log q - log p (two draws differ); 'exact' is the closed form."""
    post = GaussianPosterior((50,), mu_init_bound=0.5, rho_init=-2.0)
    gaussian = PriorConfig(name="gaussian", sigma=0.5)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        first = post.moments_and_kl(gaussian, KLMethod.mc, 1)[2]
        second = post.moments_and_kl(gaussian, KLMethod.mc, 1)[2]
    assert float(first) != float(second)
    exact = D.kl_divergence(D.Normal(post.mu, post.sigma), D.Normal(0.0, 0.5)).sum()
    torch.testing.assert_close(post.moments_and_kl(gaussian, KLMethod.exact)[2], exact)


def test_mu_starts_uniform_on_both_sides_of_zero():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        mu = GaussianPosterior((2000,), mu_init_bound=0.5, rho_init=-3.0).mu
    assert float(mu.min()) < -0.45 and float(mu.max()) > 0.45 and abs(float(mu.mean())) < 0.03


def test_the_general_kl_path_agrees_with_torch_and_refuses_what_has_no_formula():
    """``kl_from_sigma`` (the autograd path the fused kernels are checked against) on its own.

    The exact Gaussian KL against torch.distributions' closed form (an independent implementation),
    and its two refusals with their messages: no closed form for the scale mixture, no bound for a
    Gaussian prior (unreachable through a layer, whose ``resolve_kl_method`` refuses both first).
    """
    torch.manual_seed(0)
    post = GaussianPosterior((4, 3), mu_init_bound=0.5, rho_init=-2.0)
    with torch.no_grad():
        post.rho.add_(torch.randn_like(post.rho))  # sigmas that differ
    prior = PriorConfig(name="gaussian", sigma=0.7)
    expected = D.kl_divergence(D.Normal(post.mu, post.sigma), D.Normal(0.0, 0.7)).sum()
    assert torch.allclose(post.kl_from_sigma(post.sigma, prior, KLMethod.exact), expected, rtol=1e-5)
    mixture = PriorConfig(name="scale_mixture")
    with pytest.raises(ValueError, match=re.escape("no closed-form KL for prior.name='scale_mixture'")):
        post.kl_from_sigma(post.sigma, mixture, KLMethod.exact)
    message = "kl='bound' applies to prior.name='scale_mixture' only, got 'gaussian'"
    with pytest.raises(ValueError, match=re.escape(message)):
        post.kl_from_sigma(post.sigma, prior, KLMethod.bound)
