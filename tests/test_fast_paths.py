"""The speed paths compute the same numbers as the plain ones.

* the fused sigma / sigma^2 / closed-form KL autograd function (gradcheck in float64);
* the fused local-trick nodes (Gaussian prior and the mixture's bound) against the local trick written
  out with autograd in float64, for every input layout and with only some gradients needed;
* ``BayesianNetwork.forward_with_kl`` (the training step's path) against
  ``net(x, S)`` + ``total_kl(net)``: same outputs under the same seed, same KL, same gradients;
* the ``auto`` prediction estimator's choice per layer;
* ``make_adam`` and the fused optimizer the module configures.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from bnn_testing import assert_fused_equals_general

from lightning_bnn.nn.fused import MIN_VARIANCE, LocalLinearGaussian, LocalLinearMixtureBound
from lightning_bnn.nn.layers import (
    AUTO_WEIGHT_SAMPLING_MIN_BATCH_CPU_LINEAR,
    BayesConv2d,
    BayesLinear,
    PredictEstimator,
    clear_moments_cache,
    total_kl,
)
from lightning_bnn.nn.mixture_kl import scale_mixture_kl_bound
from lightning_bnn.nn.models import build_network
from lightning_bnn.nn.posterior import GaussianPosterior, KLMethod, _SoftplusGaussianKL, gaussian_kl_to_gaussian
from lightning_bnn.nn.priors import PriorConfig
from lightning_bnn.training.module import BNNModule, make_adam


def test_fused_gaussian_kl_matches_closed_form_and_gradcheck():
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    rho = torch.randn(6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    sigma, var, kl = _SoftplusGaussianKL.apply(mu, rho, 0.7)
    torch.testing.assert_close(sigma, torch.nn.functional.softplus(rho))
    torch.testing.assert_close(var, sigma.square())
    torch.testing.assert_close(kl, gaussian_kl_to_gaussian(mu, torch.nn.functional.softplus(rho), 0.7))
    for pick in (lambda o: o[2], lambda o: o[1], lambda o: o[0], lambda o: o[0].sum() + o[1].sum() * 3 + o[2]):
        assert torch.autograd.gradcheck(lambda a, b, pick=pick: pick(_SoftplusGaussianKL.apply(a, b, 0.7)), (mu, rho))


def _kl_by_quadrature(mu: np.ndarray, sigma: np.ndarray, prior: PriorConfig) -> tuple[float, float]:
    """KL(q || p) summed over independent weights, and the variance of one sample of log q - log p.

    Computed here with numpy in float64, by the trapezoid rule over mu +- 12 sigma per weight, with the prior's
    log density written out (not built by the code under test).
    """
    w = mu[..., None] + sigma[..., None] * np.linspace(-12.0, 12.0, 24001)
    log_q = -0.5 * ((w - mu[..., None]) / sigma[..., None]) ** 2 - np.log(sigma[..., None] * np.sqrt(2 * np.pi))

    def log_normal(x, s):
        return -0.5 * (x / s) ** 2 - np.log(s * np.sqrt(2 * np.pi))

    if prior.name == "gaussian":
        log_p = log_normal(w, prior.sigma)
    elif prior.name == "laplace":
        log_p = -np.abs(w) / prior.scale - np.log(2 * prior.scale)
    else:
        log_p = np.logaddexp(
            np.log(prior.pi) + log_normal(w, prior.sigma1), np.log1p(-prior.pi) + log_normal(w, prior.sigma2)
        )
    q, d = np.exp(log_q), log_q - log_p
    mean = np.trapezoid(q * d, w, axis=-1)
    var = np.trapezoid(q * d**2, w, axis=-1) - mean**2
    return float(mean.sum()), float(var.sum())


# parameters other than the defaults, so that a parameter dropped or swapped on the way to the KL shows
KL_CASES = {
    "gaussian-exact": (PriorConfig(sigma=0.5), KLMethod.exact),
    "laplace-exact": (PriorConfig(name="laplace", scale=0.3), KLMethod.exact),
    "laplace-mc": (PriorConfig(name="laplace", scale=0.3), KLMethod.mc),
    "scale_mixture-mc": (PriorConfig(name="scale_mixture", pi=0.25, sigma1=1.5, sigma2=math.exp(-6)), KLMethod.mc),
}


@pytest.mark.parametrize("case", KL_CASES)
def test_moments_and_kl_gives_sigma_its_square_and_the_kl_by_quadrature(case):
    """Sigma = softplus(rho), sigma^2, and the KL against numerical integration in the test.

    A closed form must match to float32 precision; the Monte Carlo estimate with K = 4000 draws within 5 of
    its standard errors (the variance of one draw also integrated here), and two estimates with different
    noise differ (an estimate, not a closed form).
    """
    prior, method = KL_CASES[case]
    post = GaussianPosterior((5, 3), 0.5, -3.0)
    with torch.no_grad():
        post.rho.add_(torch.linspace(-1.0, 1.0, 15).reshape(5, 3))  # sigma from 0.018 to 0.13
    mu, sig = post.mu.detach().double().numpy(), np.log1p(np.exp(post.rho.detach().double().numpy()))
    expected, var_one = _kl_by_quadrature(mu, sig, prior)
    with torch.random.fork_rng():
        torch.manual_seed(3)
        sigma, var, kl = post.moments_and_kl(prior, method, 4000)
        again = post.moments_and_kl(prior, method, 4000)[2]
    np.testing.assert_allclose(sigma.detach().numpy(), sig, rtol=1e-5)
    np.testing.assert_allclose(var.detach().numpy(), sig**2, rtol=1e-5)
    if method is KLMethod.exact:
        assert float(kl) == pytest.approx(expected, rel=1e-5)
    else:
        assert abs(float(kl) - expected) < 5 * math.sqrt(var_one / 4000), (float(kl), expected)
        assert float(kl) != float(again)


@pytest.mark.parametrize("estimator", ["local", "reparameterization", "flipout"])
@pytest.mark.parametrize("architecture", ["mlp", "cnn"])
def test_forward_with_kl_equals_forward_plus_total_kl(estimator, architecture):
    net = build_network(
        (1, 12, 12), 3, architecture=architecture, hidden_sizes=(16,), conv_channels=(4,), estimator=estimator
    ).train()
    x = torch.rand(5, 1, 12, 12)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        out_a = net(x, 3)
        kl_a = total_kl(net)
        (out_a.square().sum() + kl_a).backward()
        grads_a = [p.grad.clone() for p in net.parameters()]
        net.zero_grad()
        torch.manual_seed(0)
        out_b, kl_b = net.forward_with_kl(x, 3)
        (out_b.square().sum() + kl_b).backward()
        grads_b = [p.grad.clone() for p in net.parameters()]
    torch.testing.assert_close(out_a, out_b)
    torch.testing.assert_close(kl_a, kl_b)
    for a, b in zip(grads_a, grads_b):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_forward_with_kl_of_deterministic_network_has_zero_kl():
    net = build_network((4,), 2, hidden_sizes=(8,), layer_type="deterministic")
    out, kl = net.forward_with_kl(torch.rand(3, 4), 5)
    assert out.shape == (5, 3, 2) and float(kl) == 0.0


def test_auto_prediction_estimator_per_layer():
    layer = BayesLinear(8, 4).eval()
    x = torch.rand(3, 8)
    shared = x.unsqueeze(0).expand(10, *x.shape)
    assert layer._mode(shared) is PredictEstimator.local  # same input for every sample
    big = torch.rand(2, AUTO_WEIGHT_SAMPLING_MIN_BATCH_CPU_LINEAR, 8)
    assert layer._mode(big) is PredictEstimator.reparameterization
    assert layer._mode(big[:, :16]) is PredictEstimator.local
    conv = BayesConv2d(1, 2, 3).eval()
    assert conv._mode(torch.rand(2, 16, 1, 5, 5)) is PredictEstimator.reparameterization
    layer.train()
    assert layer._mode(shared) is PredictEstimator.local  # training follows ``estimator``


def test_shared_input_local_prediction_has_the_right_spread():
    torch.manual_seed(0)
    layer = BayesLinear(6, 1, rho_init=0.0).eval()
    x = torch.rand(1, 6)
    out = layer(x.unsqueeze(0).expand(20000, 1, 6))
    sigma2 = layer.weight.sigma.square()
    expected_var = (x.square() @ sigma2.t()).squeeze() + layer.bias.sigma.square().squeeze()
    expected_mean = (x @ layer.weight.mu.t()).squeeze() + layer.bias.mu.squeeze()
    assert abs(out.mean().item() - expected_mean.item()) < 0.05
    assert abs(out.var().item() / expected_var.item() - 1) < 0.05


def test_make_adam_is_fused_on_cpu_and_module_uses_it():
    model = torch.nn.Linear(3, 2)
    assert make_adam(model.parameters(), 1e-3).defaults["fused"] is True
    assert make_adam(model.parameters(), 1e-3, fused=False).defaults["fused"] is None
    module = BNNModule(input_shape=[4], num_outputs=2, hidden_sizes=[8])
    optimizer = module.configure_optimizers()
    assert isinstance(optimizer, torch.optim.Adam) and optimizer.defaults["fused"] is True


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_fused_local_linear_gradcheck(shared, bias):
    """The fused training node's hand-written backward against finite differences (float64)."""
    g = torch.Generator().manual_seed(1)

    def leaf(*shape, scale=1.0, shift=0.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale + shift).requires_grad_()

    w_mu, w_rho = leaf(3, 4, scale=0.5), leaf(3, 4, scale=0.3, shift=-1.0)
    b_mu, b_rho = (leaf(3, scale=0.5), leaf(3, scale=0.3, shift=-1.0)) if bias else (None, None)
    x = leaf(1, 5, 4) if shared else leaf(2, 5, 4)

    def f(x, w_mu, w_rho, *b):
        x = x.expand(2, 5, 4)  # shared: one input for both samples (stride 0), as at a first layer
        with torch.random.fork_rng():
            torch.manual_seed(0)
            out, kl = LocalLinearGaussian.apply(x, w_mu, w_rho, *(b or (None, None)), 0.8)
        return out.sin().sum() + 0.3 * kl

    inputs = (x, w_mu, w_rho, *((b_mu, b_rho) if bias else ()))
    assert torch.autograd.gradcheck(f, inputs)


FUSED_PRIORS = {
    "gaussian": PriorConfig(sigma=0.5),
    # the mixture's own parameters, each away from its default, so that a dropped or swapped one shows
    "scale_mixture": PriorConfig(name="scale_mixture", pi=0.3, sigma1=1.5, sigma2=0.1),
    # no fused node: the training step must stay on the general path (closed-form KL to the Laplace prior)
    "laplace": PriorConfig(name="laplace", scale=0.5),
}


@pytest.mark.parametrize("prior", FUSED_PRIORS)
@pytest.mark.parametrize("num_samples", [1, 3])
def test_fused_local_linear_equals_general_path(num_samples, prior):
    """Same outputs (same seed), KL and gradients as the general path (``net(x, S)`` + ``total_kl``), float32.

    Two hidden layers (so one layer's input gradient is needed), a prior other than N(0, 1), and
    the scale mixture with ``kl='auto'`` (its bound: the fused mixture node).
    """
    torch.manual_seed(0)
    net = build_network((6,), 4, hidden_sizes=(16, 8), estimator="local", prior=FUSED_PRIORS[prior]).train()
    x = torch.rand(7, 6)
    assert_fused_equals_general(net, x, num_samples)


def test_prediction_keeps_sigma_until_rho_changes():
    """Sampling without autograd reuses sigma; every in-place change of rho invalidates it."""
    layer = BayesLinear(6, 3, rho_init=-3.0).eval()
    x = torch.rand(4, 6)
    with torch.no_grad():
        first = layer._moments()
        assert layer._moments() is first  # kept between calls
        layer.weight.rho.add_(1.0)  # as an optimizer step does
        second = layer._moments()
        assert second is not first
        torch.testing.assert_close(second.w_sigma, torch.nn.functional.softplus(layer.weight.rho))
        layer.load_state_dict({k: v + 0.5 if k.endswith("rho") else v for k, v in layer.state_dict().items()})
        torch.testing.assert_close(layer._moments().b_var, torch.nn.functional.softplus(layer.bias.rho).square())
    with torch.inference_mode():
        spread = layer(x.unsqueeze(0).expand(2000, 4, 6)).std(0)
    # made in inference mode, the kept tensors still serve a later no_grad call
    with torch.no_grad():
        spread_again = layer(x.unsqueeze(0).expand(2000, 4, 6)).std(0)
        expected = (x.square() @ layer._moments().w_var.T + layer._moments().b_var).sqrt()
    # 2000 samples: the standard deviation's relative standard error is about 1.6%; allow 10%
    torch.testing.assert_close(spread, expected, rtol=0.1, atol=0.0)
    torch.testing.assert_close(spread_again, expected, rtol=0.1, atol=0.0)


def test_clear_moments_cache_forgets_every_layer():
    net = build_network((6,), 2, hidden_sizes=(5,)).eval()
    with torch.no_grad():
        net(torch.rand(3, 6), 4)
    layers = [m for m in net.modules() if isinstance(m, BayesLinear)]
    assert all(m._moments_cache is not None for m in layers)
    clear_moments_cache(net)
    assert all(m._moments_cache is None for m in layers)


def test_prediction_with_autograd_does_not_use_kept_sigma():
    layer = BayesLinear(6, 3, rho_init=-3.0).eval()
    with torch.no_grad():
        layer._moments()
    layer(torch.rand(4, 6)).sum().backward()
    assert layer.weight.rho.grad is not None and layer.weight.rho.grad.abs().sum() > 0


def test_kept_sigma_follows_fused_adam_steps_between_evaluations():
    """Fused Adam does not bump version counters: the train()/eval() switch around a step must refresh sigma."""
    torch.manual_seed(0)
    net = build_network((6,), 2, hidden_sizes=(5,))
    optimizer = make_adam(net.parameters(), lr=0.1)
    layer = next(m for m in net.modules() if isinstance(m, BayesLinear))
    x = torch.rand(3, 6)
    for _ in range(2):  # validation, then a training step, as Lightning interleaves them
        net.eval()
        with torch.no_grad():
            net(x, 2)
            torch.testing.assert_close(layer._moments().w_var, torch.nn.functional.softplus(layer.weight.rho).square())
        net.train()
        assert layer._moments_cache is None
        with torch.no_grad():
            layer._moments()
        assert layer._moments_cache is None  # never kept in training mode
        optimizer.zero_grad()
        out, kl = net.forward_with_kl(x, 1)
        (out.square().sum() + kl).backward()
        optimizer.step()


@pytest.mark.parametrize("bias", [True, False])
def test_fused_local_linear_gradcheck_without_the_kl(bias):
    """The backward when only the outputs reach the loss (the KL's gradient is None), against finite differences."""
    g = torch.Generator().manual_seed(2)

    def leaf(*shape, scale=1.0, shift=0.0):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale + shift).requires_grad_()

    w_mu, w_rho = leaf(3, 4, scale=0.5), leaf(3, 4, scale=0.3, shift=-1.0)
    b = (leaf(3, scale=0.5), leaf(3, scale=0.3, shift=-1.0)) if bias else ()
    x = leaf(2, 5, 4)

    def f(x, w_mu, w_rho, *b):
        with torch.random.fork_rng():
            torch.manual_seed(0)
            out, _ = LocalLinearGaussian.apply(x, w_mu, w_rho, *(b or (None, None)), 0.8)
        return out.sin().sum()

    assert torch.autograd.gradcheck(f, (x, w_mu, w_rho, *b))


# The two fused nodes, each with the reference KL it must equal: the closed form (torch.distributions) for
# N(0, 0.8^2), the logsumexp bound for the mixture (pi 0.3, sigma1 1.5, sigma2 0.1).
FUSED_NODES = {
    "gaussian": (
        lambda *a: LocalLinearGaussian.apply(*a, 0.8),
        lambda mu, sigma: torch.distributions.kl_divergence(
            torch.distributions.Normal(mu, sigma), torch.distributions.Normal(torch.zeros_like(mu), 0.8)
        ).sum(),
    ),
    "mixture": (
        lambda *a: LocalLinearMixtureBound.apply(*a, 0.3, 1.5, 0.1),
        lambda mu, sigma: scale_mixture_kl_bound(mu, sigma, 0.3, 1.5, 0.1),
    ),
}

# x as the fused node may get it: [S, B, in] per sample; one input for every sample (stride 0 in
# dimension 0, as at a first layer); one row per sample repeated along the batch (stride 0 in dimension
# 1, different per sample); and one feature, one example (a contiguous [S, 1, 1] has stride 1 in dimension 0).
X_KINDS = {
    "per_sample": lambda g: torch.randn(3, 5, 4, generator=g, dtype=torch.float64),
    "shared": lambda g: torch.randn(1, 5, 4, generator=g, dtype=torch.float64),
    "repeated_along_batch": lambda g: torch.randn(3, 1, 4, generator=g, dtype=torch.float64),
    "one_feature": lambda g: torch.randn(3, 1, 1, generator=g, dtype=torch.float64),
}


def _reference_local_linear(x, w_mu, w_rho, b_mu, b_rho, kl_of):
    """The local trick by autograd (float64): y = m + sqrt(max(v, floor)) eps, eps drawn as [S, B, out]."""
    w_sigma = torch.nn.functional.softplus(w_rho)
    mean = x @ w_mu.T
    var = x.square() @ w_sigma.square().T
    kl = kl_of(w_mu, w_sigma)
    if b_mu is not None:
        b_sigma = torch.nn.functional.softplus(b_rho)
        mean, var, kl = mean + b_mu, var + b_sigma.square(), kl + kl_of(b_mu, b_sigma)
    noise = torch.randn(mean.shape, dtype=mean.dtype)
    return mean + var.clamp_min(MIN_VARIANCE).sqrt() * noise, kl


@pytest.mark.parametrize("loss", ["outputs_and_kl", "kl_only", "rho_frozen"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("x_kind", X_KINDS)
@pytest.mark.parametrize("node", FUSED_NODES)
def test_fused_local_linear_nodes_equal_the_local_trick_by_autograd_in_float64(node, x_kind, bias, loss):
    """Outputs, KL and gradients of both fused nodes against the local trick written out here (rtol 1e-10).

    Every input layout, with and without bias, and three losses: the outputs and the KL; the KL alone
    (no gradient reaches the outputs: the KL's own rho gradient); and rho frozen (mu and x train, so the
    KL's gradient for mu must be added although rho needs none). Float64 with the same seed: the same
    noise, drawn in float64.
    """
    apply, kl_of = FUSED_NODES[node]
    g = torch.Generator().manual_seed(3)
    source = X_KINDS[x_kind](g)
    x_shape = (3, *source.shape[1:]) if x_kind != "repeated_along_batch" else (3, 5, 4)
    params = [
        torch.randn(2, x_shape[-1], generator=g, dtype=torch.float64) * 0.5,
        torch.randn(2, x_shape[-1], generator=g, dtype=torch.float64) * 0.5 - 2.0,
        torch.randn(2, generator=g, dtype=torch.float64) * 0.5 if bias else None,
        torch.randn(2, generator=g, dtype=torch.float64) * 0.5 - 2.0 if bias else None,
    ]

    def grads(run):
        leaves = [source.clone().requires_grad_(loss != "kl_only")]
        for i, p in enumerate(params):  # rho frozen: no gradient asked for w_rho and b_rho
            leaves.append(None if p is None else p.clone().requires_grad_(not (loss == "rho_frozen" and i % 2)))
        x = leaves[0].expand(x_shape)
        with torch.random.fork_rng():
            torch.manual_seed(7)
            out, kl = run(x, *leaves[1:])
        total = kl if loss == "kl_only" else out.sin().sum() + 0.3 * kl
        wanted = [t for t in leaves if t is not None and t.requires_grad]
        return (out, kl, *torch.autograd.grad(total, wanted))

    fused = grads(apply)
    reference = grads(lambda *a: _reference_local_linear(*a, kl_of))
    assert len(fused) == len(reference)
    for a, b in zip(fused, reference):
        assert a.dtype == torch.float64
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("node", FUSED_NODES)
def test_fused_local_linear_output_gradient_is_zero_where_the_variance_is_clamped(node):
    # sigma = softplus(-40) ~ 4e-18: every pre-activation variance is below MIN_VARIANCE, so the sampled
    # part of y is the constant sqrt(MIN_VARIANCE) eps and the outputs' gradient for rho is exactly 0.
    apply, _ = FUSED_NODES[node]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 4, generator=g, dtype=torch.float64)
    w_mu = (torch.randn(3, 4, generator=g, dtype=torch.float64) * 0.5).requires_grad_()
    w_rho = torch.full((3, 4), -40.0, dtype=torch.float64, requires_grad=True)
    out, _ = apply(x, w_mu, w_rho, None, None)
    (grad_rho,) = torch.autograd.grad(out.sin().sum(), w_rho)
    assert torch.equal(grad_rho, torch.zeros_like(w_rho))
