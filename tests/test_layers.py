"""Bayesian layers: shapes for every layer x estimator x prior, estimator equivalence, KL, initialisation."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import distributions as D
from torch import nn

import lightning_bnn
from lightning_bnn.nn.layers import (
    BayesConv2d,
    BayesLinear,
    Estimator,
    PredictEstimator,
    total_kl,
)
from lightning_bnn.nn.priors import PriorConfig
from lightning_bnn.nn.sampling import folded, sampling

PRIORS = {
    "gaussian": PriorConfig(name="gaussian", sigma=0.5),
    "scale_mixture": PriorConfig(name="scale_mixture"),
    "laplace": PriorConfig(name="laplace", scale=0.5),
}
ESTIMATORS = [e.value for e in Estimator]
S, B = 3, 4


def _linear(**kwargs) -> BayesLinear:
    return BayesLinear(5, 2, **kwargs)


def _conv(**kwargs) -> BayesConv2d:
    return BayesConv2d(2, 3, 3, stride=2, padding=1, **kwargs)


LAYERS = {
    "linear": (_linear, (5,), (2,)),
    "conv": (_conv, (2, 7, 7), (3, 4, 4)),
}


@pytest.fixture
def rng():
    """Every test here draws from a forked, seeded global RNG (the layers use the global generator)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        yield


def test_layers_importable_from_package():
    assert lightning_bnn.BayesLinear is BayesLinear
    assert lightning_bnn.BayesConv2d is BayesConv2d
    assert issubclass(BayesLinear, lightning_bnn.BayesianModule)


# -- shapes -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("prior", PRIORS)
@pytest.mark.parametrize("estimator", ESTIMATORS)
@pytest.mark.parametrize("kind", LAYERS)
def test_shapes_every_layer_estimator_prior(rng, kind, estimator, prior):
    make, in_shape, out_shape = LAYERS[kind]
    layer = make(prior=PRIORS[prior], estimator=estimator)
    layer.train()
    x = torch.randn(S, B, *in_shape)
    out = layer(x)
    assert out.shape == (S, B, *out_shape)
    assert torch.isfinite(out).all()
    # without the sample dimension: one sample, returned without it
    assert layer(x[0]).shape == (B, *out_shape)
    # the same input for every sample (an expanded view, as at a network's first layer)
    shared = x[0].unsqueeze(0).expand(S, *x.shape[1:])
    out_shared = layer(shared)
    assert out_shared.shape == (S, B, *out_shape)
    assert not torch.equal(out_shared[0], out_shared[1])  # still S different samples
    kl = layer.kl()
    assert kl.shape == () and torch.isfinite(kl) and kl > 0
    (out.sum() + kl).backward()
    for p in layer.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()


@pytest.mark.parametrize("predict_estimator", [e.value for e in PredictEstimator])
@pytest.mark.parametrize("kind", LAYERS)
def test_shapes_in_eval_mode(rng, kind, predict_estimator):
    make, in_shape, out_shape = LAYERS[kind]
    layer = make().eval()
    with sampling(estimator=predict_estimator):
        for batch in (B, 20):  # 'auto' switches estimator at 16 inputs
            x = torch.randn(S, batch, *in_shape)
            assert layer(x).shape == (S, batch, *out_shape)
            assert layer(x[0].unsqueeze(0).expand(S, *x.shape[1:])).shape == (S, batch, *out_shape)
            assert layer(x[0]).shape == (batch, *out_shape)
    if predict_estimator == "mean":
        x = torch.randn(S, B, *in_shape)
        with sampling(estimator=predict_estimator):
            out = layer(x)
        bias = layer.bias.mu
        expected = layer._op(x.reshape(S * B, *in_shape), layer.weight.mu, bias).reshape(out.shape)
        torch.testing.assert_close(out, expected)


def test_bad_input_shape_is_refused():
    with pytest.raises(ValueError, match=r"BayesLinear expects input \[S, B, \*features\].*got shape \(5,\)"):
        _linear()(torch.randn(5))
    with pytest.raises(ValueError, match="BayesConv2d expects"):
        _conv()(torch.randn(2, 7, 7))


def test_layer_without_bias():
    layer = BayesLinear(5, 2, bias=False)
    assert layer.bias is None
    assert layer(torch.randn(S, B, 5)).shape == (S, B, 2)
    expected = D.kl_divergence(D.Normal(layer.weight.mu, layer.weight.sigma), D.Normal(0.0, 1.0)).sum()
    torch.testing.assert_close(layer.kl(), expected)


# -- estimators agree on the predictive distribution of pre-activations --------------------------------------


def _linear_moments(layer: BayesLinear, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean = F.linear(x, layer.weight.mu, layer.bias.mu)
    var = F.linear(x.square(), layer.weight.sigma.square(), layer.bias.sigma.square())
    return mean, var


def _conv_moments(layer: BayesConv2d, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    kw = dict(stride=layer.stride, padding=layer.padding)
    mean = F.conv2d(x, layer.weight.mu, layer.bias.mu, **kw)
    var = F.conv2d(x.square(), layer.weight.sigma.square(), layer.bias.sigma.square(), **kw)
    return mean, var


MODES = [f"train:{e}" for e in ESTIMATORS] + [f"eval:{e}" for e in ("reparameterization", "local", "flipout")]
MODES.append("shared:local")  # an expanded (stride-0) input: the local trick computes the moments once


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", ["linear", "conv"])
def test_estimators_give_the_same_predictive_moments(kind, mode):
    """Every estimator samples pre-activations b with E[b] = x mu + mu_b and Var[b] = x^2 sigma^2 + sigma_b^2.

    S = 20,000 samples, seed 0 (fork_rng). Tolerances: the sample mean within 5 standard errors
    sqrt(Var / S) of the exact mean; the sample variance within 5 standard errors
    (sqrt(2 / S) ~ 1% relative for a Gaussian) of the exact variance, element by element.
    """
    num = 20_000
    with torch.random.fork_rng():
        torch.manual_seed(0)
        if kind == "linear":
            layer = BayesLinear(6, 3, rho_init=-1.0, mu_init_scale=2.0)
            x = torch.randn(4, 6)
            mean, var = _linear_moments(layer, x)
        else:
            layer = BayesConv2d(2, 2, 3, padding=1, rho_init=-1.0, mu_init_scale=2.0)
            x = torch.randn(2, 2, 4, 4)
            mean, var = _conv_moments(layer, x)
        stage, estimator = mode.split(":")
        if stage in ("train", "shared"):
            layer.estimator = Estimator(estimator)
            layer.train()
        else:
            layer.eval()
        with torch.no_grad(), sampling(estimator=None if stage != "eval" else estimator):
            inputs = x.unsqueeze(0).expand(num, *x.shape)
            samples = layer(inputs if stage == "shared" else inputs.contiguous())
    mean, var = mean.detach(), var.detach()
    assert samples.shape == (num, *mean.shape)
    assert ((samples.mean(0) - mean).abs() <= 5 * (var / num).sqrt()).all()
    assert ((samples.var(0) - var).abs() <= 5 * math.sqrt(2 / num) * var).all()


def test_reparameterization_samples_whole_functions(rng):
    """One weight sample per Monte Carlo sample: equal inputs in a batch get equal outputs; local does not."""
    x = torch.randn(1, 5).expand(S, 2, 5).contiguous()  # two identical inputs per sample
    coherent = _linear(estimator="reparameterization")(x)
    torch.testing.assert_close(coherent[:, 0], coherent[:, 1])
    independent = _linear(estimator="local")(x)
    assert not torch.allclose(independent[:, 0], independent[:, 1])


# -- KL and initialisation --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", LAYERS)
def test_layer_kl_sums_weight_and_bias(kind):
    make, _, _ = LAYERS[kind]
    layer = make(prior=PriorConfig(name="gaussian", sigma=0.7))
    prior = D.Normal(0.0, 0.7)
    expected = sum(
        D.kl_divergence(D.Normal(p.mu, p.sigma), prior).sum() for p in (layer.weight, layer.bias) if p is not None
    )
    torch.testing.assert_close(layer.kl(), expected, rtol=1e-5, atol=1e-4)


def test_total_kl_walks_the_modules():
    a, b = _linear(), _conv()
    model = nn.Sequential(a, nn.ReLU(), nn.Sequential(b, nn.Linear(3, 3)))
    torch.testing.assert_close(total_kl(model), a.kl() + b.kl())
    assert total_kl(nn.Linear(2, 2)).item() == 0.0


@pytest.mark.parametrize("kind", LAYERS)
def test_initialisation_is_configurable(kind):
    make, _, _ = LAYERS[kind]
    layer = make(mu_init_scale=0.5, rho_init=-3.0)
    fan_in = 5 if kind == "linear" else 2 * 3 * 3
    assert layer.weight.mu.abs().max() <= 0.5 / math.sqrt(fan_in)
    assert layer.weight.mu.abs().max() > 0
    torch.testing.assert_close(layer.weight.sigma, torch.full_like(layer.weight.mu, math.log1p(math.exp(-3.0))))
    zero = make(mu_init_scale=0.0)
    assert zero.weight.mu.abs().max() == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"estimator": "magic"}, "estimator must be one of reparameterization, local, flipout; got 'magic'"),
        ({"mu_init_scale": -1.0}, "mu_init_scale must be a finite number >= 0, got -1.0"),
        ({"rho_init": math.nan}, "rho_init must be a finite number, got nan"),
        ({"num_kl_samples": 0}, "num_kl_samples must be an integer >= 1, got 0"),
        ({"kl": "exact", "prior": PriorConfig(name="scale_mixture")}, "kl='exact' has no closed form"),
    ],
)
def test_bad_layer_arguments_name_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        _linear(**kwargs)


def test_bad_layer_sizes_name_the_field():
    with pytest.raises(ValueError, match="out_features must be a positive integer, got 0"):
        BayesLinear(3, 0)
    with pytest.raises(ValueError, match="kernel_size must be a positive integer, got 0"):
        BayesConv2d(1, 2, 0)


# -- flipout is not shared-weight sampling ----------------------------------------------------------------


def _flipout_perturbations(num_copies: int, num_samples: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Perturbations y - x mu of a bias-free flipout layer for ``num_copies`` copies of one input.

    Returns (perturbations [S, N, out], expected variance x^2 sigma^2 [out]).
    """
    with torch.random.fork_rng():
        torch.manual_seed(0)
        layer = BayesLinear(3, 6, bias=False, estimator="flipout", rho_init=-1.0)
        layer.train()
        x = torch.tensor([1.0, -1.5, 0.8])
        inputs = x.expand(num_samples, num_copies, 3).contiguous()
        with torch.no_grad():
            out = layer(inputs)
            mean = F.linear(x, layer.weight.mu)
            var = F.linear(x.square(), layer.weight.sigma.square())
    return out - mean, var


def test_flipout_gives_two_copies_of_one_input_different_outputs():
    """Flipout's y = x mu + ((x * r) delta) * s: per-example signs r (inputs) and s (outputs).

    Without any signs, copies are equal (shared-weight sampling); without the input signs r
    they differ only in sign (|p_a| = |p_b|); without the output signs s they differ, but see
    the covariance test below.
    """
    p, _ = _flipout_perturbations(num_copies=2, num_samples=4)
    assert not torch.allclose(p[:, 0], p[:, 1])
    assert not torch.allclose(p[:, 0].abs(), p[:, 1].abs())


def test_flipout_covariance_across_the_batch_is_flipouts_not_shared_weights():
    """For one weight perturbation delta (one sample s), N copies of an input x give perturbations p_n.

    Flipout: p_nj = s_nj sum_i x_i r_ni delta_ji with independent signs, so across the batch
    Cov(p_j, p_k) = 0 for j != k and Var(p_j) = sum_i x_i^2 delta_ji^2, whose mean over delta is
    x^2 sigma^2 (the local estimator's variance). Shared-weight sampling: every copy equal, batch
    variance 0. Flipout without the output signs s: Cov(p_j, p_k) = sum_i x_i^2 delta_ji delta_ki != 0.
    Measured (seed 0, S = 200, N = 500): mean squared correlation 0.0020 (= 1/N); without the output
    signs 0.36; the batch variance's mean over delta within 8% of x^2 sigma^2 (shared weights: 0).
    """
    p, var = _flipout_perturbations(num_copies=500, num_samples=200)
    batch_var = p.var(dim=1)  # [S, out]
    assert (batch_var > 0).all()  # shared weights: 0
    # 200 draws of a weighted chi-square with 3 weights: the mean has ~6% relative sd
    torch.testing.assert_close(batch_var.mean(0), var, rtol=0.25, atol=0.0)
    centred = p - p.mean(dim=1, keepdim=True)
    cov = torch.einsum("snj,snk->sjk", centred, centred) / (p.shape[1] - 1)
    std = cov.diagonal(dim1=1, dim2=2).sqrt()
    corr = cov / (std[:, :, None] * std[:, None, :])
    mean_square = corr[:, ~torch.eye(6, dtype=torch.bool)].square().mean()
    assert mean_square < 5 / p.shape[1], float(mean_square)


# -- with sigma -> 0 every path is the mean network -------------------------------------------------------


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("path", ["forward", "forward_and_kl"])
@pytest.mark.parametrize("mode", [f"train:{e}" for e in ESTIMATORS] + [f"eval:{e}" for e in PredictEstimator])
@pytest.mark.parametrize("kind", LAYERS)
@pytest.mark.parametrize("num_samples", [None, 1, 2, 3])
def test_every_path_with_vanishing_sigma_is_the_mean_layer_with_its_bias(kind, mode, path, num_samples, bias):
    """sigma = softplus(-40) ~ 4e-18: every estimator, mode and input layout gives op(x, mu) + mu_b.

    Catches a dropped bias or weight on one path (e.g. the one-sample shortcut of weight sampling),
    a wrong sample axis on the fused path, a sample dimension added to or lost from the output
    (2 samples: the one-sample shortcut taken for two), and a path that needs a bias (a layer
    without one: the fused training node, the one-sample shortcut).
    """
    make, in_shape, out_shape = LAYERS[kind]
    with torch.random.fork_rng():
        torch.manual_seed(0)
        layer = make(rho_init=-40.0, bias=bias)
        if bias:
            with torch.no_grad():
                layer.bias.mu.uniform_(1.0, 2.0)  # a bias far from 0
        stage, estimator = mode.split(":")
        if stage == "train":
            layer.estimator = Estimator(estimator)
            layer.train()
        else:
            layer.eval()
        x = torch.randn(B, *in_shape)
        inputs = x if num_samples is None else x.unsqueeze(0).expand(num_samples, *x.shape).contiguous()
        with torch.no_grad(), sampling(estimator=estimator if stage != "train" else None):
            out = layer(inputs) if path == "forward" else layer.forward_and_kl(inputs)[0]
            expected = layer._op(x, layer.weight.mu, layer.bias.mu if bias else None)
    assert out.shape == inputs.shape[: inputs.dim() - len(in_shape)] + out_shape
    torch.testing.assert_close(out, expected.expand_as(out), rtol=1e-5, atol=1e-5)


def test_bad_in_features_name_the_field():
    with pytest.raises(ValueError, match="in_features must be a positive integer, got 0"):
        BayesLinear(0, 3)
    with pytest.raises(ValueError, match="in_channels must be a positive integer, got -1"):
        BayesConv2d(-1, 2, 3)
    with pytest.raises(ValueError, match="out_channels must be a positive integer, got 0"):
        BayesConv2d(1, 0, 3)


def test_base_forward_and_kl_returns_the_output_and_the_kl():
    class Scaled(lightning_bnn.BayesianModule):
        def forward(self, x):
            return 2 * x

        def kl(self):
            return torch.tensor(3.0)

    out, kl = Scaled().forward_and_kl(torch.ones(2))
    assert out.tolist() == [2.0, 2.0] and float(kl) == 3.0


def test_local_estimator_does_not_take_a_width_one_input_per_sample_for_a_shared_one():
    """An input [S, 1, 1] holding one value per sample is contiguous with stride(0) == 1, not 0: each sample's
    pre-activation uses its own x (a stride-0 test written as ``== 1`` would use x[0] for all)."""
    from lightning_bnn.nn.posterior import rho_from_sigma

    with torch.random.fork_rng():
        torch.manual_seed(0)
        layer = BayesLinear(1, 2, estimator="local", rho_init=rho_from_sigma(1e-6))
    x = torch.arange(1.0, 5.0).reshape(4, 1, 1)
    assert x.stride(0) == 1
    expected = x * layer.weight.mu.detach().reshape(1, 1, 2) + layer.bias.mu.detach()
    torch.testing.assert_close(layer(x), expected, atol=1e-4, rtol=0)


def test_mean_estimator_with_a_shared_input_and_with_one_value_per_sample():
    """The posterior-mean layer x mu + b_mu, for an input shared by all samples (stride 0: computed once)
    and for an input [S, 1, 1] with one value per sample (contiguous, stride(0) == 1)."""
    layer = BayesLinear(1, 2).eval()
    with torch.no_grad():
        layer.bias.mu.fill_(0.5)
    shared = torch.full((1, 3, 1), 2.0).expand(4, 3, 1)
    per_sample = torch.arange(1.0, 5.0).reshape(4, 1, 1)
    with sampling(estimator="mean"), torch.no_grad():
        for x in (shared, per_sample):
            expected = x * layer.weight.mu.reshape(1, 1, 2) + layer.bias.mu
            torch.testing.assert_close(layer(x), expected)


def test_mean_estimator_of_a_layer_without_bias():
    layer = BayesLinear(3, 2, bias=False).eval()
    x = torch.randn(4, 5, 3, generator=torch.Generator().manual_seed(0))
    with sampling(estimator="mean"), torch.no_grad():
        torch.testing.assert_close(layer(x), x @ layer.weight.mu.T)


# -- defaults, the Monte Carlo KL's sample count, folded inputs ------------------------------------------


@pytest.mark.parametrize("kind", LAYERS)
def test_default_mu_fills_plus_minus_one_over_sqrt_fan_in(kind):
    """mu starts uniform in +-1/sqrt(fan_in) (``mu_init_scale`` 1 by default): inside and filling the interval."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        layer = BayesLinear(100, 50) if kind == "linear" else BayesConv2d(4, 50, 5)
    mu = layer.weight.mu.detach()
    bound = 1 / math.sqrt(100)  # fan_in: 100 inputs, or 4 channels x 5 x 5
    assert mu.abs().max() <= bound
    assert mu.max() > 0.99 * bound and mu.min() < -0.99 * bound  # 5000 uniform draws


def _mc_kl_by_hand(layer, num: int, seed: int) -> torch.Tensor:
    """(1/K) sum_k log q(w_k) - log p(w_k) over weight and bias, w_k = mu + sigma eps_k, eps drawn from ``seed``.

    The noise is drawn as the layer draws its KL noise (weight first, then bias, K at once); the densities
    come from torch.distributions (the mixture's written here in log space).
    """
    prior = layer.prior
    if prior.name == "gaussian":
        log_p = D.Normal(0.0, prior.sigma).log_prob
    elif prior.name == "laplace":
        log_p = D.Laplace(0.0, prior.scale).log_prob
    else:

        def log_p(w):
            wide = math.log(prior.pi) + D.Normal(0.0, prior.sigma1).log_prob(w)
            narrow = math.log(1 - prior.pi) + D.Normal(0.0, prior.sigma2).log_prob(w)
            return torch.logaddexp(wide, narrow)

    total = torch.zeros((), dtype=torch.float64)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for p in (layer.weight, layer.bias):
            mu, sigma = p.mu.detach().double(), p.sigma.detach().double()
            eps = torch.randn(num, *mu.shape).double()
            w = mu + sigma * eps
            total += (D.Normal(mu, sigma).log_prob(w) - log_p(w)).sum() / num
    return total


MC_PRIORS = {
    "gaussian": PriorConfig(name="gaussian", sigma=0.5),
    "laplace": PriorConfig(name="laplace", scale=0.5),
    "scale_mixture": PriorConfig(name="scale_mixture", pi=0.3, sigma1=1.5, sigma2=0.1),
}


@pytest.mark.parametrize("path", ["kl", "forward_and_kl"])
@pytest.mark.parametrize("num_kl_samples", [None, 4])
@pytest.mark.parametrize("prior", MC_PRIORS)
def test_mc_kl_averages_num_kl_samples_draws(prior, num_kl_samples, path):
    """``kl='mc'``: the layer's KL is the K-sample estimate (K = ``num_kl_samples``, 1 by default), on both paths.

    Against the estimate computed here from the same seed's noise; K = 4 and K = 1 give different numbers,
    and ``forward_and_kl`` in training (local estimator) must not replace the estimate by a closed form or a
    bound (the fused training node applies only to ``exact`` with a Gaussian prior and ``bound``).
    """
    kwargs = {} if num_kl_samples is None else {"num_kl_samples": num_kl_samples}
    with torch.random.fork_rng():
        torch.manual_seed(0)
        layer = BayesLinear(6, 3, prior=MC_PRIORS[prior], kl="mc", rho_init=-1.0, **kwargs).train()
    x = torch.randn(2, 6, generator=torch.Generator().manual_seed(1))
    with torch.random.fork_rng():
        torch.manual_seed(5)
        kl = (layer.kl() if path == "kl" else layer.forward_and_kl(x)[1]).detach()
    expected = _mc_kl_by_hand(layer, num_kl_samples or 1, seed=5)
    torch.testing.assert_close(kl.double(), expected, rtol=1e-4, atol=1e-4)
    other = _mc_kl_by_hand(layer, 1 if num_kl_samples else 2, seed=5)
    assert abs(kl.item() - other.item()) > 1e-2  # the check tells the sample counts apart


def test_folded_layer_refuses_a_batch_that_is_not_samples_times_examples():
    layer = BayesLinear(5, 2, folded=True)
    with folded(3):
        assert layer(torch.randn(6, 5)).shape == (6, 2)
        with pytest.raises(ValueError) as info:
            layer(torch.randn(7, 5))
    assert str(info.value) == "BayesLinear expects a batch of 3 folded samples times B examples, got shape (7, 5)"


@pytest.mark.parametrize("estimator", ["local", "mean"])
def test_an_input_repeated_along_the_batch_but_not_the_samples_is_used_per_sample(estimator):
    """x [S, B, 1] = one value per sample expanded along the batch (stride 0 in dimension 1, not 0): each
    sample's output uses its own x (an input shared by all samples has stride 0 in dimension 0)."""
    from lightning_bnn.nn.posterior import rho_from_sigma

    with torch.random.fork_rng():
        torch.manual_seed(0)
        layer = BayesLinear(1, 2, rho_init=rho_from_sigma(1e-6)).eval()
    x = torch.arange(1.0, 5.0).reshape(4, 1, 1).expand(4, 3, 1)
    assert x.stride(1) == 0 and x.stride(0) != 0
    with sampling(estimator=estimator), torch.no_grad():
        out = layer(x)
    expected = x * layer.weight.mu.detach().reshape(1, 1, 2) + layer.bias.mu.detach()
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("shape", [(5,), (2, 3, 4, 5)])
def test_forward_and_kl_refuses_the_inputs_forward_refuses(shape):
    """In training (where the fused node may run) a 1-D or 4-D input gets the layer's own message, not an
    IndexError or a silently reshaped output."""
    layer = BayesLinear(5, 2).train()
    message = r"BayesLinear expects input \[S, B, \*features\] with 1 feature dimension\(s\), got shape"
    for call in (layer, layer.forward_and_kl):
        with pytest.raises(ValueError, match=message):
            call(torch.randn(*shape))


@pytest.mark.parametrize("shape", [(4, 6), (3, 4, 6)])
def test_forward_and_kl_with_the_wrong_width_fails_as_forward_does(shape):
    layer = BayesLinear(5, 2).train()
    for call in (layer, layer.forward_and_kl):
        with pytest.raises(RuntimeError, match="mat1 and mat2 shapes cannot be multiplied"):
            call(torch.randn(*shape))


# -- convolutions: options, their errors, repr ----------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [
        {"groups": 2},
        {"dilation": 2, "padding": 2},
        {"dilation": (2, 1), "stride": (2, 1)},
        {"padding": "valid"},
        {"padding": "same"},
        {"padding": 1, "padding_mode": "reflect"},
        {"padding": 1, "padding_mode": "replicate"},
        {"padding": (1, 2), "padding_mode": "circular"},
    ],
)
def test_conv_options_mean_what_nn_conv2d_means(options):
    """With the posterior means (``mean``) and one weight sample per call, the layer is ``nn.Conv2d`` with the
    same options and weights (PyTorch's own padding and convolution)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        layer = BayesConv2d(4, 6, 3, **options).eval()
        x = torch.randn(2, 5, 4, 7, 8)
    reference = nn.Conv2d(4, 6, 3, **options)
    with torch.no_grad():
        reference.weight.copy_(layer.weight.mu)
        reference.bias.copy_(layer.bias.mu)
        with sampling(estimator="mean"):
            out = layer(x)
        expected = reference(x.reshape(10, 4, 7, 8))
    torch.testing.assert_close(out, expected.reshape(2, 5, *expected.shape[1:]))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"groups": 0}, "groups must be a positive integer, got 0"),
        ({"in_channels": True}, "in_channels must be a positive integer, got True"),
        ({"in_channels": 2.0}, "in_channels must be a positive integer, got 2.0"),
        ({"out_channels": 3, "groups": 2}, "in_channels (4) and out_channels (3) must divide by groups"),
        ({"in_channels": 3, "groups": 2}, "in_channels (3) and out_channels (4) must divide by groups"),
        ({"padding": "full"}, "padding must be a number, a tuple, 'same' or 'valid', got 'full'"),
        ({"padding": -1}, "padding must be an integer >= 0, got -1"),
        ({"padding": (1, -1)}, "padding must be an integer >= 0 or a tuple of 2 of them, got (1, -1)"),
        ({"padding_mode": "mirror"}, "padding_mode must be zeros, reflect, replicate or circular, got 'mirror'"),
        ({"kernel_size": (3, 0)}, "kernel_size must be a positive integer or a tuple of 2 of them, got (3, 0)"),
        ({"kernel_size": (True, 3)}, "kernel_size must be a positive integer or a tuple of 2 of them, got (True, 3)"),
        ({"kernel_size": (2.5, 3)}, "kernel_size must be a positive integer or a tuple of 2 of them, got (2.5, 3)"),
        ({"stride": (1, 0)}, "stride must be a positive integer or a tuple of 2 of them, got (1, 0)"),
        ({"dilation": (0, 1)}, "dilation must be a positive integer or a tuple of 2 of them, got (0, 1)"),
    ],
)
def test_bad_conv_arguments_name_the_field(kwargs, message):
    args = {"in_channels": 4, "out_channels": 4, "kernel_size": 3} | kwargs
    with pytest.raises(ValueError) as info:
        BayesConv2d(**args)
    assert str(info.value) == message


def test_linear_repr():
    """The first line of ``repr`` (``extra_repr``; the posteriors follow as children)."""
    assert repr(BayesLinear(5, 2)).splitlines()[1] == "  in_features=5, out_features=2, estimator=local"
    assert BayesLinear(3, 4, bias=False).extra_repr() == "in_features=3, out_features=4, estimator=local"


@pytest.mark.parametrize(
    ("kwargs", "shown"),
    [
        ({}, "kernel_size=3, stride=1, padding=(0, 0), estimator=local"),
        ({"groups": 2}, "kernel_size=3, stride=1, padding=(0, 0), groups=2, estimator=local"),
        ({"dilation": 2, "stride": 2}, "kernel_size=3, stride=2, padding=(0, 0), dilation=2, estimator=local"),
        (
            {"kernel_size": [3, 2], "stride": [2, 1], "dilation": [2, 1], "groups": 2, "padding": "same"},
            "kernel_size=(3, 2), stride=(2, 1), padding=same, groups=2, dilation=(2, 1), estimator=local",
        ),
    ],
)
def test_conv_repr_shows_the_options_and_groups_and_dilation_only_when_not_1(kwargs, shown):
    """As ``nn.Conv2d``'s repr: groups and dilation only when not 1; a number stays a number, a list a tuple."""
    layer = BayesConv2d(**({"in_channels": 4, "out_channels": 6, "kernel_size": 3} | kwargs))
    assert layer.extra_repr() == f"4, 6, {shown}"
