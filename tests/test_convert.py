"""bayesianize: which layers it replaces, what the converted model computes, its KL and its sample dimension."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lightning_bnn
from lightning_bnn.nn.convert import MIN_MOPED_SIGMA, SampledNetwork, bayesian_layer_names, bayesianize
from lightning_bnn.nn.layers import BayesConv1d, BayesConv2d, BayesConv3d, BayesianModule, BayesLinear, total_kl
from lightning_bnn.nn.posterior import sigma_from_rho
from lightning_bnn.nn.sampling import sampling


class Tabular(nn.Module):
    """Embeddings + a linear layer applied to [N, T, F] + LayerNorm + a head: nn.Linear on 3-D inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(7, 4)
        self.mix = nn.Linear(4, 6)
        self.norm = nn.LayerNorm(6)
        self.head = nn.Sequential(nn.Linear(3 * 6, 8), nn.ReLU(), nn.Linear(8, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.norm(self.mix(self.embed(x))).flatten(1))


class Residual(nn.Module):
    def __init__(self, conv: type[nn.Module], bn: type[nn.Module], channels: int, **kw) -> None:
        super().__init__()
        self.conv = conv(channels, channels, 3, **({"padding": 1} | kw))
        self.bn = bn(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.bn(self.conv(x)))


class ConvNet(nn.Module):
    """A stem, a residual block with BatchNorm and a linear head, for 1-, 2- or 3-D inputs."""

    def __init__(self, dims: int, **block_kw) -> None:
        super().__init__()
        conv = (nn.Conv1d, nn.Conv2d, nn.Conv3d)[dims - 1]
        bn = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)[dims - 1]
        pool = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)[dims - 1]
        self.stem = conv(2, 4, 3, stride=2, padding=1)
        self.block = Residual(conv, bn, 4, **block_kw)
        self.pool = pool(1)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(self.block(torch.relu(self.stem(x)))).flatten(1))


_SHAPES = {1: (2, 9), 2: (2, 6, 6), 3: (2, 4, 4, 4)}
_BAYES_CONV = {1: BayesConv1d, 2: BayesConv2d, 3: BayesConv3d}


def _trained_like(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give BatchNorm non-trivial running statistics and affine parameters, in eval mode."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen))
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)
            with torch.no_grad():
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen))
    return model.eval()


def _conv_model(dims: int, **block_kw) -> tuple[nn.Module, torch.Tensor]:
    torch.manual_seed(0)  # module construction draws from the global generator
    model = _trained_like(ConvNet(dims, **block_kw))
    x = torch.randn(5, *_SHAPES[dims], generator=torch.Generator().manual_seed(1))
    return model, x


def _param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize(
    ("include", "exclude", "expected"),
    [
        (None, None, ["stem", "block.conv", "head"]),
        (["head"], None, ["head"]),
        (["block.*"], None, ["block.conv"]),
        (["block"], None, ["block.conv"]),  # a parent's name means the layers under it
        (None, ["stem"], ["block.conv", "head"]),
        (["*conv", "stem"], ["stem"], ["block.conv"]),
    ],
)
def test_exactly_the_named_layers_are_replaced(dims, include, exclude, expected):
    model, _ = _conv_model(dims)
    before = {n: type(m) for n, m in model.named_modules()}
    net = bayesianize(model, include=include, exclude=exclude)
    assert isinstance(net, SampledNetwork)
    after = dict(net.module.named_modules())
    kinds = {nn.Linear: BayesLinear, nn.Conv1d: BayesConv1d, nn.Conv2d: BayesConv2d, nn.Conv3d: BayesConv3d}
    for name, kind in before.items():
        if name in expected:
            assert type(after[name]) is kinds[kind], name
        elif name.split(".")[-1] not in ("weight", "bias"):  # a posterior's own submodules
            assert type(after[name]) is kind, name
    assert bayesian_layer_names(net.module) == expected
    # each converted layer holds mu and rho for each of its weights; nothing else changes
    converted = sum(p.numel() for n, m in model.named_modules() if n in expected for p in m.parameters())
    assert _param_count(net) == _param_count(model) + converted
    # the original is untouched
    assert {n: type(m) for n, m in model.named_modules()} == before


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("estimator", ["local", "reparameterization", "flipout"])
def test_pretrained_start_with_delta_zero_reproduces_the_original(dims, estimator):
    """MOPED with delta = 0 has sigma = 1e-8: every sample equals the original's output within 1e-5."""
    model, x = _conv_model(dims)
    expected = model(x)
    net = bayesianize(model, init="pretrained", delta=0.0).eval()
    with torch.no_grad(), sampling(estimator):
        out = net(x, 4)
    assert out.shape == (4, *expected.shape)
    torch.testing.assert_close(out, expected.expand_as(out), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "block_kw",
    [{"groups": 2}, {"dilation": 2, "padding": 2}, {"padding_mode": "reflect"}, {"padding": "same", "bias": False}],
)
def test_conv_options_carry_over(block_kw):
    model, x = _conv_model(2, **block_kw)
    net = bayesianize(model, include=["block.conv"], init="pretrained", delta=0.0).eval()
    with torch.no_grad(), sampling("reparameterization"):
        torch.testing.assert_close(net(x, 3), model(x).expand(3, -1, -1), atol=1e-5, rtol=1e-5)


def test_pretrained_sigma_is_delta_times_abs_weight():
    model, _ = _conv_model(2)
    net = bayesianize(model, include=["head"], init="pretrained", delta=0.1)
    layer = net.module.head
    torch.testing.assert_close(layer.weight.mu, model.head.weight)
    sigma = sigma_from_rho(layer.weight.rho)
    torch.testing.assert_close(sigma, (0.1 * model.head.weight.abs()).clamp_min(MIN_MOPED_SIGMA))
    torch.testing.assert_close(sigma_from_rho(layer.bias.rho), (0.1 * model.head.bias.abs()).clamp_min(1e-8))


def test_linear_on_three_dimensional_inputs_and_embeddings():
    torch.manual_seed(0)
    model = Tabular().eval()
    x = torch.randint(0, 7, (6, 3), generator=torch.Generator().manual_seed(0))
    net = bayesianize(model, init="pretrained", delta=0.0).eval()
    assert bayesian_layer_names(net.module) == ["mix", "head.0", "head.2"]
    with torch.no_grad():
        torch.testing.assert_close(net(x, 5), model(x).expand(5, -1, -1), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("estimator", ["reparameterization", "flipout", "local"])
def test_folded_samples_are_unfolded_per_sample(estimator):
    """Sample s's rows come from sample s's weights: a batch of one input repeated gives, under weight sampling,
    one value per sample (the same function for the whole batch), and different values across samples."""
    model, x = _conv_model(2)
    net = bayesianize(model, rho_init=-1.0).eval()
    batch = x[:1].expand(4, *x.shape[1:]).contiguous()
    with torch.no_grad(), sampling(estimator, torch.Generator().manual_seed(0)):
        out = net(batch, 6)  # [6, 4, 3]
    assert out.shape == (6, 4, 3)
    across_samples = (out[1:] - out[:1]).abs().amax()
    assert across_samples > 1e-3
    if estimator == "reparameterization":
        torch.testing.assert_close(out, out[:, :1].expand_as(out))
    else:  # local and flipout draw noise per example
        assert (out - out[:, :1]).abs().amax() > 1e-4


def test_kl_is_collected_from_the_converted_layers_only():
    model, _ = _conv_model(2)
    net = bayesianize(model, include=["head", "stem"])
    layers = [m for m in net.modules() if isinstance(m, BayesianModule)]
    assert [type(m) for m in layers] == [BayesConv2d, BayesLinear]
    torch.testing.assert_close(total_kl(net), layers[0].kl() + layers[1].kl())
    x = torch.randn(3, 2, 6, 6)
    out, kl = net.forward_with_kl(x, 2)
    assert out.shape == (2, 3, 3)
    torch.testing.assert_close(kl, total_kl(net))
    (out.sum() + kl).backward()
    assert net.module.head.weight.rho.grad is not None and net.module.block.conv.weight.grad is not None


def test_batch_statistics_loop_over_samples_and_running_statistics_fold():
    model, x = _conv_model(2)
    net = bayesianize(model, include=["head"])
    net.eval()
    assert not net.loops(8)  # BatchNorm with running statistics is per example: fold
    net.train()
    assert net.loops(8) and not net.loops(1)  # batch statistics per sample, as in the original
    out = net(x, 3)
    assert out.shape == (3, 5, 3)
    assert not bayesianize(model, folding="fold").train().loops(8)
    assert bayesianize(model, folding="loop").eval().loops(8)


def test_loop_and_fold_agree_at_the_posterior_mean():
    model, x = _conv_model(2)
    fold = bayesianize(model, init="pretrained", folding="fold").eval()
    loop = SampledNetwork(fold.module, folding="loop").eval()
    with torch.no_grad(), sampling("mean"):
        torch.testing.assert_close(fold(x, 3), loop(x, 3))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"include": ["haed"]}, "include pattern 'haed' matches no Linear/Conv1d/Conv2d/Conv3d layer; the layers are"),
        ({"exclude": ["nope.*"]}, "exclude pattern 'nope.*' matches no"),
        ({"include": ["head"], "exclude": ["head"]}, "select no layer of"),
        ({"init": "moped"}, "init must be one of random, pretrained; got 'moped'"),
        ({"delta": -1.0}, "delta must be a finite number >= 0, got -1.0"),
        ({"folding": "sideways"}, "folding must be one of auto, fold, loop"),
        ({"include": [3]}, "include must be a list of module names or glob patterns"),
    ],
)
def test_bad_arguments_name_the_problem(kwargs, message):
    model, _ = _conv_model(2)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.").replace("*", r"\*")):
        bayesianize(model, **kwargs)


def test_exported_lazily_from_the_package():
    assert lightning_bnn.bayesianize is bayesianize
    assert lightning_bnn.BayesConv3d is BayesConv3d


def test_forward_must_return_a_tensor():
    class Pair(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(2, 2)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return self.fc(x), x

    with pytest.raises(TypeError, match="must return one tensor, got tuple"):
        bayesianize(Pair())(torch.zeros(1, 2), 2)
