"""Networks built from configuration: an MLP and a small CNN for 28x28 images.

Every network maps ``x`` [B, *input_shape] to sampled outputs [S, B, k]. The same
builder makes the Bayes-by-Backprop network and the two baselines (``layer_type``):
a deterministic network (``nn.Linear``/``nn.Conv2d``; its S samples are identical)
and MC dropout (Gal & Ghahramani 2016; dropout kept on at prediction).
"""

from __future__ import annotations

from enum import StrEnum

import torch
from torch import nn

from lightning_bnn.nn import sampling
from lightning_bnn.nn.convert import moped_init_
from lightning_bnn.nn.layers import BayesConv2d, BayesianModule, BayesLinear, Estimator, total_kl
from lightning_bnn.nn.posterior import KLMethod
from lightning_bnn.nn.priors import PriorConfig


class Architecture(StrEnum):
    """Network families."""

    mlp = "mlp"
    cnn = "cnn"


class LayerType(StrEnum):
    """``bayes``: Bayes by Backprop; ``deterministic``: point estimate; ``mc_dropout``: MC dropout."""

    bayes = "bayes"
    deterministic = "deterministic"
    mc_dropout = "mc_dropout"


class Activation(StrEnum):
    """Hidden-layer non-linearities."""

    relu = "relu"
    tanh = "tanh"
    sigmoid = "sigmoid"
    gelu = "gelu"
    elu = "elu"
    leaky_relu = "leaky_relu"


_ACTIVATIONS = {
    Activation.relu: nn.ReLU,
    Activation.tanh: nn.Tanh,
    Activation.sigmoid: nn.Sigmoid,
    Activation.gelu: nn.GELU,
    Activation.elu: nn.ELU,
    Activation.leaky_relu: nn.LeakyReLU,
}


class MCDropout(nn.Dropout):
    """Dropout that stays on in ``eval()`` mode, drawing an independent mask per sample.

    Under the ``mean`` prediction estimator it is the identity (dropout's point estimate);
    masks come from the call's random generator when one is given (:mod:`.sampling`).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        choice = sampling.current()
        if not self.training and choice.estimator is sampling.PredictEstimator.mean:
            return x
        if choice.generator is None or self.p == 0.0:
            return nn.functional.dropout(x, self.p, training=True)
        keep = 1.0 - self.p
        return x * sampling.bernoulli_mask(x, keep) / keep


class Folded(nn.Module):
    """Apply a module that needs [N, C, H, W] to [S, B, C, H, W] by folding S into the batch."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s, b = x.shape[:2]
        out = self.module(x.reshape(s * b, *x.shape[2:]))
        return out.reshape(s, b, *out.shape[1:])


class FlattenFeatures(nn.Module):
    """[S, B, *features] -> [S, B, prod(features)]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(start_dim=2)


class BayesianNetwork(nn.Module):
    """A stack of layers applied to a sample dimension: x [B, ...] -> outputs [S, B, k].

    Args:
        layers: the layers, each taking and returning [S, B, ...].
        input_shape: shape of one input example.
        deterministic: the network has no randomness (all S samples equal), so it is
            evaluated once and expanded.
    """

    def __init__(self, layers: list[nn.Module], input_shape: tuple[int, ...], deterministic: bool) -> None:
        super().__init__()
        self.layers = nn.Sequential(*layers)
        self.input_shape = tuple(input_shape)
        self.deterministic = deterministic

    def _check_input(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[1:]) != self.input_shape:
            if x.shape[1:].numel() == torch.Size(self.input_shape).numel():
                return x.reshape(x.shape[0], *self.input_shape)
            raise ValueError(
                f"expected inputs of shape [B, {', '.join(map(str, self.input_shape))}], got {tuple(x.shape)}"
            )
        return x

    def forward(self, x: torch.Tensor, num_samples: int = 1) -> torch.Tensor:
        """Sampled outputs [num_samples, B, k]."""
        x = self._check_input(x)
        if self.deterministic:
            out = self.layers(x.unsqueeze(0))
            return out.expand(num_samples, *out.shape[1:])
        return self.layers(x.unsqueeze(0).expand(num_samples, *x.shape))

    def forward_with_kl(self, x: torch.Tensor, num_samples: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Sampled outputs [num_samples, B, k] and the network's total KL(q || p), in one pass.

        Equal in distribution to ``(self(x, num_samples), total_kl(self))``, but each
        Bayesian layer computes sigma = softplus(rho) once for its forward pass and its
        KL (:meth:`~lightning_bnn.nn.layers.BayesianModule.forward_and_kl`): the training
        step's path.
        """
        x = self._check_input(x)
        if self.deterministic:
            return self(x, num_samples), total_kl(self)
        h = x.unsqueeze(0).expand(num_samples, *x.shape)
        terms = []
        for layer in self.layers:
            if isinstance(layer, BayesianModule):
                h, kl = layer.forward_and_kl(h)
                terms.append(kl)
            else:
                h = layer(h)
                terms += [m.kl() for m in layer.modules() if isinstance(m, BayesianModule)]
        kl = torch.stack(terms).sum() if terms else torch.zeros((), device=h.device)
        return h, kl


def build_network(
    input_shape: tuple[int, ...],
    num_outputs: int,
    architecture: Architecture = Architecture.mlp,
    hidden_sizes: tuple[int, ...] = (400, 400),
    conv_channels: tuple[int, ...] = (32, 64),
    activation: Activation = Activation.relu,
    layer_type: LayerType = LayerType.bayes,
    estimator: Estimator = Estimator.local,
    prior: PriorConfig | None = None,
    kl: KLMethod = KLMethod.auto,
    mu_init_scale: float = 1.0,
    rho_init: float = -5.0,
    dropout: float = 0.1,
) -> BayesianNetwork:
    """Build an MLP or CNN whose weight layers are Bayesian, deterministic or MC-dropout.

    The CNN is conv(5x5, pad 2) -> act -> maxpool(2), once per entry of
    ``conv_channels``, then the MLP head given by ``hidden_sizes``.
    """
    layer_type = LayerType(layer_type)
    act = _ACTIVATIONS[Activation(activation)]
    bayes_kwargs = dict(
        prior=prior or PriorConfig(), estimator=estimator, kl=kl, mu_init_scale=mu_init_scale, rho_init=rho_init
    )

    def linear(n_in: int, n_out: int) -> nn.Module:
        if layer_type is LayerType.bayes:
            return BayesLinear(n_in, n_out, **bayes_kwargs)
        return nn.Linear(n_in, n_out)

    def conv(c_in: int, c_out: int) -> nn.Module:
        if layer_type is LayerType.bayes:
            return BayesConv2d(c_in, c_out, 5, padding=2, **bayes_kwargs)
        return Folded(nn.Conv2d(c_in, c_out, 5, padding=2))

    def maybe_dropout() -> list[nn.Module]:
        return [MCDropout(dropout)] if layer_type is LayerType.mc_dropout else []

    layers: list[nn.Module] = []
    if Architecture(architecture) is Architecture.cnn:
        if len(input_shape) != 3:
            raise ValueError(f"architecture='cnn' needs image inputs [C, H, W], got input_shape={list(input_shape)}")
        channels, height, width = input_shape
        for c_out in conv_channels:
            layers += [conv(channels, c_out), act(), Folded(nn.MaxPool2d(2)), *maybe_dropout()]
            channels, height, width = c_out, height // 2, width // 2
            if height < 1 or width < 1:
                raise ValueError(f"conv_channels={list(conv_channels)} pools a {list(input_shape)} input below 1x1")
        width_in = channels * height * width
    else:
        width_in = int(torch.Size(input_shape).numel())
    layers.append(FlattenFeatures())
    for width_out in hidden_sizes:
        layers += [linear(width_in, width_out), act(), *maybe_dropout()]
        width_in = width_out
    layers.append(linear(width_in, num_outputs))
    return BayesianNetwork(layers, tuple(input_shape), deterministic=layer_type is LayerType.deterministic)


def start_from_deterministic(network: BayesianNetwork, trained: BayesianNetwork, delta: float) -> int:
    """Start each Bayesian layer of ``network`` at the matching layer of a trained deterministic twin (MOPED).

    mu = w and sigma = delta |w| (Krishnan et al. 2020). ``trained`` is built by
    :func:`build_network` with the same arguments but ``layer_type='deterministic'``, so
    its layers line up with ``network``'s one for one.

    Returns:
        The number of Bayesian layers started.

    Raises:
        ValueError: when the two networks do not line up.
    """
    if len(network.layers) != len(trained.layers):
        raise ValueError(f"{len(trained.layers)} layers in the trained network, {len(network.layers)} here")
    started = 0
    for index, (layer, source) in enumerate(zip(network.layers, trained.layers, strict=True)):
        if not isinstance(layer, BayesianModule):
            continue
        source = source.module if isinstance(source, Folded) else source
        if not isinstance(source, (nn.Linear, nn.Conv2d)):
            kinds = f"{type(source).__name__} in the trained network, {type(layer).__name__} here"
            raise ValueError(f"layer {index}: {kinds}")
        try:
            moped_init_(layer, source.weight, source.bias, delta)
        except ValueError as err:
            raise ValueError(f"layer {index}: {err}") from err
        started += 1
    return started
