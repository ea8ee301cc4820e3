"""Networks from config, likelihoods, predictive sampling and its pure reductions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import distributions as D

from lightning_bnn.nn.layers import BayesConv2d, BayesLinear
from lightning_bnn.nn.likelihoods import CategoricalLikelihood, GaussianLikelihood
from lightning_bnn.nn.models import MCDropout, build_network
from lightning_bnn.nn.predictive import (
    central_interval,
    expected_entropy,
    mixture_log_likelihood,
    mutual_information,
    predictive_entropy,
    regression_moments,
    sample_outputs,
)
from lightning_bnn.nn.priors import PriorConfig
from lightning_bnn.training.module import BNNModule

S, B = 4, 3


@pytest.fixture(autouse=True)
def _seeded():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        yield


NETWORKS = {
    "mlp": dict(input_shape=(1, 8, 8), architecture="mlp", hidden_sizes=(16, 8)),
    "cnn": dict(input_shape=(1, 28, 28), architecture="cnn", conv_channels=(4, 6), hidden_sizes=(8,)),
}


@pytest.mark.parametrize("layer_type", ["bayes", "deterministic", "mc_dropout"])
@pytest.mark.parametrize("arch", NETWORKS)
def test_network_outputs_samples_first(arch, layer_type):
    kwargs = NETWORKS[arch]
    net = build_network(num_outputs=5, layer_type=layer_type, dropout=0.3, **kwargs)
    x = torch.rand(B, *kwargs["input_shape"])
    for mode in (net.train, net.eval):
        mode()
        out = net(x, S)
        assert out.shape == (S, B, 5)
        assert torch.isfinite(out).all()
        if layer_type == "deterministic":
            assert all(torch.equal(out[0], out[s]) for s in range(S))  # identical samples
        else:
            assert not torch.allclose(out[0], out[1])  # MC dropout and BBB samples differ, in eval too
    assert net(x).shape == (1, B, 5)
    assert net(x.flatten(1), 2).shape == (2, B, 5)  # flat inputs are reshaped to input_shape
    kinds = {type(m) for m in net.modules()}
    if layer_type == "bayes":
        assert BayesLinear in kinds and (arch == "mlp" or BayesConv2d in kinds)
    assert (MCDropout in kinds) == (layer_type == "mc_dropout")


def test_mlp_structure_follows_config():
    net = build_network((6,), 3, hidden_sizes=(7, 5), activation="tanh", prior=PriorConfig(name="laplace"))
    linears = [m for m in net.modules() if isinstance(m, BayesLinear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(6, 7), (7, 5), (5, 3)]
    assert sum(isinstance(m, torch.nn.Tanh) for m in net.modules()) == 2
    assert all(m.prior.name == "laplace" for m in linears)


def test_network_refuses_wrong_inputs():
    net = build_network((4,), 2, hidden_sizes=(3,))
    with pytest.raises(ValueError, match=r"expected inputs of shape \[B, 4\], got \(2, 5\)"):
        net(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="architecture='cnn' needs image inputs"):
        build_network((4,), 2, architecture="cnn")
    with pytest.raises(ValueError, match="pools a"):
        build_network((1, 4, 4), 2, architecture="cnn", conv_channels=(2, 2, 2))


@pytest.mark.parametrize("estimator", ["reparameterization", "local", "flipout"])
def test_module_forward_and_sample_predictions_classification(estimator):
    module = BNNModule(input_shape=[1, 8, 8], num_outputs=10, hidden_sizes=[16], estimator=estimator).eval()
    x = torch.rand(B, 1, 8, 8)
    assert module(x, 7).shape == (7, B, 10)
    probs = module.sample_predictions(x, 7)
    assert probs.shape == (7, B, 10)
    torch.testing.assert_close(probs.sum(-1), torch.ones(7, B))
    assert module.sample_predictions(x).shape == (module.hparams.num_samples_eval, B, 10)
    step = module.predict_step((x, torch.zeros(B)), 0)
    assert step["probs"].shape == (B, 10) and step["mutual_information"].shape == (B,)


@pytest.mark.parametrize("noise", ["fixed", "learned", "heteroscedastic"])
def test_module_regression_noise_models(noise):
    module = BNNModule(
        input_shape=[2],
        num_outputs=1,
        task="regression",
        hidden_sizes=[8],
        noise=noise,
        noise_std=0.3,
        preprocessing={"target_mean": 10.0, "target_std": 2.0},
    ).eval()
    assert module.net(torch.zeros(1, 2)).shape[-1] == (2 if noise == "heteroscedastic" else 1)
    assert any(n == "likelihood.log_noise_std" for n, _ in module.named_parameters()) == (noise == "learned")
    mean, std = module.sample_predictions(torch.randn(B, 2), 6)
    assert mean.shape == std.shape == (6, B, 1)
    assert (std > 0).all()
    if noise != "heteroscedastic":
        torch.testing.assert_close(std, torch.full_like(std, 0.3 * 2.0))  # noise in original target units
    outputs = module.net(torch.zeros(1, 2), 1)
    raw_mean = module.likelihood.predictive(outputs)[0]
    torch.testing.assert_close(module.predictive_from_outputs(outputs)[0], raw_mean * 2.0 + 10.0)


def test_categorical_nll_is_cross_entropy_summed_and_sample_averaged():
    logits = torch.randn(S, B, 4)
    y = torch.tensor([0, 3, 1])
    expected = sum(torch.nn.functional.cross_entropy(logits[s], y, reduction="sum") for s in range(S)) / S
    torch.testing.assert_close(CategoricalLikelihood(4).nll(logits, y), expected)


@pytest.mark.parametrize("noise", ["fixed", "learned", "heteroscedastic"])
def test_gaussian_nll_equals_normal_log_prob(noise):
    lik = GaussianLikelihood(2, noise, noise_std=0.4)
    out = torch.randn(S, B, lik.network_outputs())
    y = torch.randn(B, 2)
    mean, std = lik.predictive(out)
    expected = -D.Normal(mean, std).log_prob(y.unsqueeze(0)).sum() / S
    torch.testing.assert_close(lik.nll(out, y), expected)
    if noise == "heteroscedastic":
        torch.testing.assert_close(std, torch.nn.functional.softplus(out[..., 2:]) + 1e-4)


def test_sample_outputs_chunks_give_all_samples():
    net = build_network((3,), 2, hidden_sizes=(4,))
    x = torch.randn(5, 3)
    out = sample_outputs(net, x, 10, chunk_size=3)
    assert out.shape == (10, 5, 2)
    assert len({tuple(o.flatten().tolist()) for o in out}) == 10  # every chunk draws fresh samples
    with pytest.raises(ValueError, match="num_samples must be an integer between 1 and 10000, got 0"):
        sample_outputs(net, x, 0)


# -- pure reductions ----------------------------------------------------------------------------------------


def test_entropy_decomposition():
    c = 4
    uniform = torch.full((S, B, c), 1 / c)
    torch.testing.assert_close(predictive_entropy(uniform), torch.full((B,), math.log(c)))
    assert mutual_information(uniform).abs().max() < 1e-6  # agreeing samples: no epistemic part
    # samples that are each certain but disagree: all of the entropy is epistemic
    onehot = torch.eye(c).unsqueeze(1).expand(c, B, c)
    torch.testing.assert_close(expected_entropy(onehot), torch.zeros(B))
    torch.testing.assert_close(mutual_information(onehot), torch.full((B,), math.log(c)))
    # random probabilities against entropies computed here with numpy (float64), not against each other:
    # H = expected entropy + MI holds for any expected entropy, since MI is computed from it
    probs = torch.randn(S, B, c, generator=torch.Generator().manual_seed(0)).softmax(-1)
    p = probs.double().numpy()
    total = -(p.mean(0) * np.log(p.mean(0))).sum(-1)  # H[mean_s p_s]
    aleatoric = -(p * np.log(p)).sum(-1).mean(0)  # mean_s H[p_s]
    np.testing.assert_allclose(predictive_entropy(probs).numpy(), total, rtol=1e-5)
    np.testing.assert_allclose(expected_entropy(probs).numpy(), aleatoric, rtol=1e-5)
    np.testing.assert_allclose(mutual_information(probs).numpy(), total - aleatoric, rtol=1e-3, atol=1e-6)
    assert (total - aleatoric).min() > 1e-3  # the clamp at 0 does not act here


def test_regression_moments_and_interval():
    mean = torch.randn(50, B, 1)
    std = torch.rand(50, B, 1) + 0.1
    m = regression_moments(mean, std)
    torch.testing.assert_close(m["mean"], mean.mean(0))
    torch.testing.assert_close(m["std"].square(), std.square().mean(0) + mean.var(0, unbiased=False))
    torch.testing.assert_close(m["epistemic_std"].square() + m["aleatoric_std"].square(), m["std"].square())
    lo, hi = central_interval(torch.zeros(1), torch.ones(1), 0.95)
    assert hi.item() == pytest.approx(1.959964, abs=1e-5) and lo.item() == pytest.approx(-1.959964, abs=1e-5)


def test_mixture_log_likelihood_matches_direct_mixture():
    mean = torch.randn(S, B, 2, dtype=torch.float64)
    std = torch.rand(S, B, 2, dtype=torch.float64) + 0.2
    y = torch.randn(B, 2, dtype=torch.float64)
    densities = D.Normal(mean, std).log_prob(y.unsqueeze(0)).sum(-1).exp()  # [S, B]
    torch.testing.assert_close(mixture_log_likelihood(mean, std, y), densities.mean(0).log())
