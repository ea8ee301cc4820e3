"""The LightningModule: Bayes by Backprop (and its baselines) trained on the ELBO.

Training step (Blundell et al. 2015, Algorithm in section 3.2), for minibatch i of M:

    loss_i = NLL_i + kl_scale * pi_i * KL(q || p)

where NLL_i is summed over the minibatch and averaged over ``num_samples_train``
Monte Carlo samples drawn in one batched forward pass, and pi_i is the named
``kl_weighting`` schedule (:mod:`lightning_bnn.training.objectives`). Validation, test and
prediction draw ``num_samples_eval`` predictive samples.

Logged per epoch: ``train/loss`` (the minibatch objective above), ``train/nll``
(per example), ``train/kl`` (total KL in nats), ``train/kl_weight``, ``train/lr``,
``train/epoch_time_s``; ``val/...`` and ``test/...`` as in :mod:`lightning_bnn.evaluation.metrics`.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextvars import ContextVar
from enum import Enum, StrEnum
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import torch

from lightning_bnn.data.preprocessing import Preprocessing
from lightning_bnn.evaluation.metrics import make_metrics
from lightning_bnn.nn.convert import SampledNetwork, bayesianize, moped_restart_
from lightning_bnn.nn.custom import (
    NetworkSpec,
    check_outputs,
    instantiate_network,
    load_pretrained,
    load_state_file,
)
from lightning_bnn.nn.layers import Estimator, parse_enum
from lightning_bnn.nn.likelihoods import ClassificationSummary, NoiseModel, RegressionSummary, Task, make_likelihood
from lightning_bnn.nn.models import Activation, Architecture, LayerType, build_network, start_from_deterministic
from lightning_bnn.nn.posterior import KLMethod, resolve_kl_method
from lightning_bnn.nn.predictive import MAX_SAMPLES, check_num_samples, sample_outputs
from lightning_bnn.nn.priors import PriorConfig
from lightning_bnn.nn.sampling import PredictEstimator, sampling
from lightning_bnn.training.objectives import KLWeighting, kl_weight

#: most Monte Carlo samples per training step
MAX_TRAIN_SAMPLES = 1000

_RESTORING: ContextVar[bool] = ContextVar("lightning_bnn_restoring", default=False)
#: turns an ``init_from`` that is not a file into a weights file; the CLI sets it to fetch MLflow runs
INIT_SOURCE: ContextVar[Callable[[str], str] | None] = ContextVar("lightning_bnn_init_source", default=None)


@contextlib.contextmanager
def restoring_weights() -> Iterator[None]:
    """Build modules whose weights are loaded next (from a saved model): ``pretrained``/``init_from`` are not read.

    The ``pretrained`` path (or ``init_from`` run) stays in the hyperparameters as a record of where training started;
    the saved weights replace the starting point anyway, and the file need not exist any more.
    """
    token = _RESTORING.set(True)
    try:
        yield
    finally:
        _RESTORING.reset(token)


def make_adam(
    parameters: Iterable[torch.nn.Parameter] | list[dict], lr: float, weight_decay: float = 0.0, fused: bool = True
) -> torch.optim.Adam:
    """Adam, in PyTorch's fused (one kernel for all parameters) form where it exists for them.

    The same algorithm as the default implementation, whose per-tensor loop of small ops
    costs more than the whole forward pass of a small network on CPU, twice as much for a
    Bayesian network's (mu, rho) pairs. The benchmarks give the deterministic baseline this
    same optimizer.
    """
    groups = list(parameters)
    if groups and not isinstance(groups[0], dict):
        groups = [{"params": groups}]
    params = [p for group in groups for p in group["params"]]
    usable = all(p.device.type in ("cpu", "cuda") and p.dtype in (torch.float32, torch.float64) for p in params)
    return torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay, fused=True if (fused and usable) else None)


def parameter_groups(module: torch.nn.Module, lr_rho: float | None) -> list[dict]:
    """Adam's parameter groups: every posterior ``rho`` at ``lr_rho`` (when given), the rest at the default rate."""
    if lr_rho is None:
        return [{"params": list(module.parameters())}]
    rho = [p for name, p in module.named_parameters() if name.endswith(".rho")]
    rest = [p for name, p in module.named_parameters() if not name.endswith(".rho")]
    return [g for g in ({"params": rest}, {"params": rho, "lr": lr_rho}) if g["params"]]


class LRSchedule(StrEnum):
    """Learning-rate schedule: ``constant``, or ``cosine`` (from ``lr`` to 0 over the run's steps, per step)."""

    constant = "constant"
    cosine = "cosine"


class DivergenceError(RuntimeError):
    """Training produced a non-finite loss."""


def to_plain(value: Any) -> Any:
    """Convert enums, dataclasses and tuples to plain JSON values (str, list, dict)."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, PriorConfig):
        return value.to_dict()
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_plain(v) for k, v in value.items()}
    return value


def coerce_prior(prior: PriorConfig | dict | None) -> PriorConfig:
    """Accept a PriorConfig or its dict form; refuse unknown keys by name."""
    if prior is None:
        return PriorConfig()
    if isinstance(prior, PriorConfig):
        return prior
    if isinstance(prior, dict):
        known = set(PriorConfig.__dataclass_fields__)
        unknown = sorted(set(prior) - known)
        if unknown:
            raise ValueError(f"prior has unknown field(s) {unknown}; known fields: {sorted(known)}")
        return PriorConfig(**prior)
    raise ValueError(f"prior must be a mapping of prior fields, got {type(prior).__name__}")


def _check_network_options(
    spec: NetworkSpec | None, layer_type: LayerType, bayesian_layers: object, pretrained: object, init_from: object
) -> None:
    """Refuse options that need ``network`` without it, and user-network options that do not fit."""
    if init_from is not None:
        if not (isinstance(init_from, str) and init_from.strip()):
            raise ValueError(f"init_from must be a weights file or an MLflow run id, got {init_from!r}")
        if spec is not None:
            raise ValueError("init_from starts the built-in architectures; for a user network use pretrained=FILE")
        if layer_type is not LayerType.bayes:
            raise ValueError(f"init_from (a MOPED start) needs layer_type='bayes', got {layer_type.value!r}")
    if spec is None:
        for name, value in (("bayesian_layers", bayesian_layers), ("pretrained", pretrained)):
            if value is not None:
                raise ValueError(f"{name} applies to a user network: set network.class_path too (got {name}={value!r})")
        return
    if layer_type is LayerType.mc_dropout:
        raise ValueError("layer_type='mc_dropout' needs the built-in architectures; use bayes or deterministic")
    if bayesian_layers is not None:
        if isinstance(bayesian_layers, str) or not isinstance(bayesian_layers, Sequence):
            raise ValueError(f"bayesian_layers must be a list of layer names or patterns, got {bayesian_layers!r}")
        if not all(isinstance(v, str) and v for v in bayesian_layers):
            raise ValueError(f"bayesian_layers must be a list of layer names or patterns, got {bayesian_layers!r}")
        if layer_type is not LayerType.bayes:
            raise ValueError(f"bayesian_layers needs layer_type='bayes', got {layer_type.value!r}")
    if pretrained is not None and not (isinstance(pretrained, str) and pretrained):
        raise ValueError(f"pretrained must be a file path, got {pretrained!r}")


def _check_pretrain(value: Any, layer_type: LayerType, init_from: str | None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"pretrain_epochs must be an integer >= 0, got {value!r}")
    if value and layer_type is not LayerType.bayes:
        raise ValueError(
            f"pretrain_epochs trains a Bayesian network's means first: needs layer_type='bayes', "
            f"got {layer_type.value!r}"
        )
    if value and init_from is not None:
        raise ValueError("pretrain_epochs and init_from are two ways to start the posterior: choose one")
    return value


def _check_positive_ints(values: Sequence[int], field: str, allow_empty: bool = True) -> list[int]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ValueError(f"{field} must be a list of positive integers, got {values!r}")
    out = list(values)
    if not allow_empty and not out:
        raise ValueError(f"{field} must not be empty")
    for v in out:
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{field} must be a list of positive integers, got {values!r}")
    return out


def _check_positive_int(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{field} must be a positive integer, got {value!r}")
    return value


def _check_number(value: Any, field: str, low: float, high: float = math.inf, low_open: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low) and value <= high
    if not ok:
        bound = f"> {low}" if low_open else f">= {low}"
        if high != math.inf:
            bound += f" and <= {high}"
        raise ValueError(f"{field} must be a finite number {bound}, got {value!r}")
    return float(value)


class BNNModule(L.LightningModule):
    """Bayes-by-Backprop network (or a deterministic / MC-dropout baseline) with its ELBO.

    Args:
        input_shape: shape of one input example (linked from the data module).
        num_outputs: classes, or regression targets (linked from the data module).
        task: ``classification`` or ``regression`` (linked from the data module).
        architecture: ``mlp`` or ``cnn``.
        hidden_sizes: widths of the hidden fully connected layers.
        conv_channels: channels of the CNN's conv blocks.
        activation: hidden non-linearity.
        layer_type: ``bayes`` (Bayes by Backprop), ``deterministic`` or ``mc_dropout``.
        estimator: ``local``, ``reparameterization`` or ``flipout``.
        prior: weight prior (``name``: gaussian, scale_mixture, laplace, and its parameters).
        kl: ``auto`` (the closed form where it exists, else ``bound``), ``exact``, ``mc``
            (Monte Carlo) or ``bound`` (scale-mixture prior only: the zero-variance upper bound
            of the KL, see :mod:`lightning_bnn.nn.mixture_kl`).
        mu_init_scale: mu starts uniform in +-mu_init_scale / sqrt(fan_in).
        rho_init: starting rho; sigma starts at softplus(rho_init).
        dropout: dropout rate of ``mc_dropout``.
        num_samples_train: Monte Carlo samples averaged per training step.
        num_samples_eval: predictive samples for validation, test and predict.
        kl_weighting: ``uniform``, ``blundell`` or ``anneal``.
        anneal_epochs: warm-up epochs of ``anneal``.
        kl_scale: multiplier of the KL term (1.0 is the true ELBO).
        noise: regression noise model: ``fixed``, ``learned`` or ``heteroscedastic``.
        noise_std: fixed (or starting) observation noise std, in standardised target units.
        lr: Adam learning rate.
        lr_rho: a separate Adam learning rate for the posterior scales ``rho`` (None: ``lr``). The
            KL's pull on rho is the same size for every weight, so a smaller rate keeps the
            sigmas from drifting to the prior's before the data has moved them.
        weight_decay: Adam weight decay (L2), for the baselines.
        lr_schedule: ``constant`` (default) or ``cosine``: the learning rate decays from ``lr``
            to 0 along a half cosine over the run's optimizer steps (Loshchilov & Hutter 2017,
            without restarts), which needs ``trainer.max_epochs`` or ``max_steps``.
        preprocessing: how raw inputs become model inputs (linked from the data module).
        network: the user's own network instead of ``architecture``: ``{"class_path": "my_pkg.MyNet",
            "init_args": {...}}`` (from the command line: ``--model.network.class_path my_pkg.MyNet
            --model.network.init_args.width 64``). The class gets ``input_shape`` and ``num_outputs``
            (the likelihood's network outputs) when its constructor takes them and ``init_args`` does
            not set them; ``forward`` maps ``[B, *input_shape]`` to ``[B, num_outputs]``. With
            ``layer_type='bayes'`` its layers are converted by :func:`~lightning_bnn.nn.convert.bayesianize`;
            ``deterministic`` trains it as it is. ``architecture``, ``hidden_sizes``,
            ``conv_channels``, ``activation`` and ``dropout`` do not apply to it.
        bayesian_layers: with ``network``, the layers to make Bayesian (names or glob patterns,
            e.g. ``["head.*"]``; all Linear/Conv layers when None).
        pretrained: with ``network``, a state dict of it (safetensors, or a ``torch.save`` file read
            with ``weights_only=True``) to start from: mu = w, sigma = ``delta`` |w| (MOPED).
        init_from: start a built-in Bayesian network from a trained deterministic one of the same
            architecture (MOPED, Krishnan et al. 2020: mu = w, sigma = ``delta`` |w|): its weights
            file (a run's ``model/weights.safetensors``, or a state dict of the network), or, from
            the command line, the MLflow run id of a ``layer_type: deterministic`` run.
        delta: the MOPED scale of ``pretrained``, ``init_from`` and ``pretrain_epochs``.
        pretrain_epochs: train the posterior means alone as a point estimate (no weight noise, no
            KL) for this many epochs, then start sigma = ``delta`` |mu| (MOPED, Krishnan et al. 2020)
            and train the ELBO for the rest of the run: a MOPED start within one run, no trained
            network needed. The best-validation checkpoint is chosen among the ELBO epochs only
            (the default checkpoint of ``python -m lightning_bnn fit``).
    """

    def __init__(
        self,
        input_shape: Sequence[int] = (1, 28, 28),
        num_outputs: int = 10,
        task: Task = Task.classification,
        architecture: Architecture = Architecture.mlp,
        hidden_sizes: Sequence[int] = (400, 400),
        conv_channels: Sequence[int] = (32, 64),
        activation: Activation = Activation.relu,
        layer_type: LayerType = LayerType.bayes,
        estimator: Estimator = Estimator.local,
        prior: PriorConfig = PriorConfig(),
        kl: KLMethod = KLMethod.auto,
        mu_init_scale: float = 1.0,
        rho_init: float = -5.0,
        dropout: float = 0.1,
        num_samples_train: int = 1,
        num_samples_eval: int = 10,
        kl_weighting: KLWeighting = KLWeighting.uniform,
        anneal_epochs: int = 1,
        kl_scale: float = 1.0,
        noise: NoiseModel = NoiseModel.learned,
        noise_std: float = 0.1,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        lr_schedule: LRSchedule = LRSchedule.constant,
        lr_rho: float | None = None,
        preprocessing: dict | Preprocessing | None = None,
        network: dict[str, Any] | None = None,
        bayesian_layers: list[str] | None = None,
        pretrained: str | None = None,
        delta: float = 0.1,
        init_from: str | None = None,
        pretrain_epochs: int = 0,
    ) -> None:
        super().__init__()
        prior = coerce_prior(prior)
        spec = NetworkSpec.from_value(network)
        layer_type = parse_enum(LayerType, layer_type, "layer_type")
        _check_network_options(spec, layer_type, bayesian_layers, pretrained, init_from)
        resolve_kl_method(kl, prior)  # refuses kl='exact' for a prior without closed form
        hp = {
            "input_shape": _check_positive_ints(input_shape, "input_shape", allow_empty=False),
            "num_outputs": _check_positive_int(num_outputs, "num_outputs"),
            "task": parse_enum(Task, task, "task"),
            "architecture": parse_enum(Architecture, architecture, "architecture"),
            "hidden_sizes": _check_positive_ints(hidden_sizes, "hidden_sizes"),
            "conv_channels": _check_positive_ints(conv_channels, "conv_channels"),
            "activation": parse_enum(Activation, activation, "activation"),
            "layer_type": parse_enum(LayerType, layer_type, "layer_type"),
            "estimator": parse_enum(Estimator, estimator, "estimator"),
            "prior": prior,
            "kl": parse_enum(KLMethod, kl, "kl"),
            "mu_init_scale": _check_number(mu_init_scale, "mu_init_scale", 0.0),
            "rho_init": _check_number(rho_init, "rho_init", -math.inf),
            "dropout": _check_number(dropout, "dropout", 0.0, 0.99),
            "num_samples_train": self._check_samples(num_samples_train, "num_samples_train", MAX_TRAIN_SAMPLES),
            "num_samples_eval": self._check_samples(num_samples_eval, "num_samples_eval", MAX_SAMPLES),
            "kl_weighting": parse_enum(KLWeighting, kl_weighting, "kl_weighting"),
            "anneal_epochs": _check_positive_int(anneal_epochs, "anneal_epochs"),
            "kl_scale": _check_number(kl_scale, "kl_scale", 0.0),
            "noise": parse_enum(NoiseModel, noise, "noise"),
            "noise_std": _check_number(noise_std, "noise_std", 0.0, low_open=True),
            "lr": _check_number(lr, "lr", 0.0, low_open=True),
            "weight_decay": _check_number(weight_decay, "weight_decay", 0.0),
            "lr_schedule": parse_enum(LRSchedule, lr_schedule, "lr_schedule"),
            "lr_rho": None if lr_rho is None else _check_number(lr_rho, "lr_rho", 0.0, low_open=True),
            "preprocessing": Preprocessing.from_dict(preprocessing).to_dict(),
            "network": None if spec is None else spec.to_dict(),
            "bayesian_layers": None if bayesian_layers is None else list(bayesian_layers),
            "pretrained": pretrained,
            "delta": _check_number(delta, "delta", 0.0),
            "init_from": init_from,
            "pretrain_epochs": _check_pretrain(pretrain_epochs, layer_type, init_from),
        }
        # Hyperparameters are stored as plain JSON values: checkpoints then load with
        # torch.load(weights_only=True) and the model config JSON needs no pickle.
        self.save_hyperparameters(to_plain(hp), logger=False)
        self.likelihood = make_likelihood(hp["task"], hp["num_outputs"], hp["noise"], hp["noise_std"])
        if spec is not None:
            self.net = self._user_network(spec, hp, prior)
        else:
            self.net = self._builtin_network(hp, prior, hp["layer_type"])
            if init_from is not None and not _RESTORING.get():
                self._start_from(init_from, hp, prior)
        self.preprocessing = Preprocessing.from_dict(self.hparams.preprocessing)
        self.task = hp["task"]
        metrics = make_metrics(self.likelihood)
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")
        self._epoch_start = 0.0

    def _builtin_network(self, hp: dict[str, Any], prior: PriorConfig, layer_type: LayerType) -> torch.nn.Module:
        return build_network(
            input_shape=tuple(hp["input_shape"]),
            num_outputs=self.likelihood.network_outputs(),
            architecture=hp["architecture"],
            hidden_sizes=tuple(hp["hidden_sizes"]),
            conv_channels=tuple(hp["conv_channels"]),
            activation=hp["activation"],
            layer_type=layer_type,
            estimator=hp["estimator"],
            prior=prior,
            kl=hp["kl"],
            mu_init_scale=hp["mu_init_scale"],
            rho_init=hp["rho_init"],
            dropout=hp["dropout"],
        )

    def _start_from(self, source: str, hp: dict[str, Any], prior: PriorConfig) -> None:
        """MOPED: the posterior starts at a trained deterministic network of this architecture (``init_from``)."""
        path = source
        if not Path(source).is_file():
            resolve = INIT_SOURCE.get()
            if resolve is None:
                raise ValueError(
                    f"init_from {source!r}: no such file (an MLflow run id is resolved by the command line, "
                    "`python -m lightning_bnn fit`)"
                )
            path = resolve(source)
        state = load_state_file(path)
        network = {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")} or dict(state)
        if any(k.endswith((".mu", ".rho")) for k in network):
            raise ValueError(
                f"init_from {source!r} holds a Bayesian posterior (mu, rho); MOPED starts from a deterministic "
                "network: give a run or weights file trained with model.layer_type=deterministic"
            )
        trained = self._builtin_network(hp, prior, LayerType.deterministic)
        try:
            trained.load_state_dict(network, strict=True)
            start_from_deterministic(self.net, trained, hp["delta"])
        except (RuntimeError, ValueError) as err:
            raise ValueError(
                f"init_from {source!r} is not a deterministic {hp['architecture'].value} of this shape "
                f"(hidden_sizes={hp['hidden_sizes']}, conv_channels={hp['conv_channels']}): {err}"
            ) from err
        likelihood = {k.removeprefix("likelihood."): v for k, v in state.items() if k.startswith("likelihood.")}
        if likelihood:  # a learned noise scale starts where the trained network left it
            self.likelihood.load_state_dict(likelihood, strict=True)

    def _user_network(self, spec: NetworkSpec, hp: dict[str, Any], prior: PriorConfig) -> SampledNetwork:
        """The user's network, started from ``pretrained`` if given, with the chosen layers Bayesian."""
        input_shape = tuple(hp["input_shape"])
        outputs = self.likelihood.network_outputs()
        model = instantiate_network(spec, {"input_shape": list(input_shape), "num_outputs": outputs})
        if hp["pretrained"] is not None and not _RESTORING.get():
            load_pretrained(model, load_state_file(hp["pretrained"]), hp["pretrained"])
        check_outputs(model, input_shape, outputs, spec.class_path)
        if hp["layer_type"] is LayerType.deterministic:
            net = SampledNetwork(model)
        else:
            net = bayesianize(
                model,
                include=hp["bayesian_layers"],
                prior=prior,
                estimator=hp["estimator"],
                init="pretrained" if hp["pretrained"] is not None else "random",
                delta=hp["delta"],
                rho_init=hp["rho_init"],
                kl=hp["kl"],
                mu_init_scale=hp["mu_init_scale"],
            )
        net.output_width = outputs
        return net

    @staticmethod
    def _check_samples(value: Any, field: str, maximum: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
            raise ValueError(f"{field} must be an integer between 1 and {maximum}, got {value!r}")
        return value

    # -- prediction API ---------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, num_samples: int = 1) -> torch.Tensor:
        """Raw sampled network outputs [S, B, k] (logits, or regression mean/scale)."""
        return self.net(x, num_samples)

    def predictive_from_outputs(self, outputs: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Per-sample predictive parameters from raw outputs, in original units (see the likelihood)."""
        return self.likelihood.to_original_units(self.likelihood.predictive(outputs), self.preprocessing)

    @torch.no_grad()
    def sample_predictions(
        self,
        x: torch.Tensor,
        num_samples: int | None = None,
        estimator: PredictEstimator | str | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Sampled predictions for model-space inputs ``x`` [B, *input_shape].

        Args:
            x: inputs as the model takes them (``self.preprocessing.transform`` of raw inputs).
            num_samples: S (default ``num_samples_eval``).
            estimator: how the Bayesian layers sample for this call: ``auto`` (default),
                ``reparameterization`` (whole-function draws, coherent across the batch), ``local``,
                ``flipout``, or ``mean`` (the posterior-mean point estimate; MC dropout off).
            generator: the random generator of this call's draws (default: torch's global one).
                The choices hold for this call only; the model is not changed.

        Returns:
            Classification: class probabilities [S, B, C]. Regression: per-sample mean
            and noise std [S, B, D] each, in the target's original units.
        """
        s = check_num_samples(self.hparams.num_samples_eval if num_samples is None else num_samples)
        with sampling(estimator, generator):
            return self.predictive_from_outputs(sample_outputs(self.net, x, s))

    def summarise(
        self, predictive: torch.Tensor | tuple[torch.Tensor, torch.Tensor], level: float = 0.95
    ) -> ClassificationSummary | RegressionSummary:
        """The likelihood's typed summary of sampled predictions (see :mod:`lightning_bnn.nn.likelihoods`)."""
        return self.likelihood.summarise(predictive, level)

    def output_names(self) -> list[str]:
        """Names of the model's outputs: class names, or target names (``y``, ``y0``... when unnamed)."""
        return self.likelihood.output_names(self.preprocessing)

    # -- training ------------------------------------------------------------------------------------
    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        weight = self.hparams.kl_scale * self._kl_weight(batch_idx)
        if self.pretraining:
            with sampling(PredictEstimator.mean):  # the means alone: a point estimate, no KL
                outputs = self.net(x, 1)
            nll = self.likelihood.nll(outputs, y)
            kl = torch.zeros((), device=nll.device)
            loss, weight = nll, 0.0
        elif self.hparams.layer_type == LayerType.bayes.value:
            # outputs and KL in one pass: each layer computes softplus(rho) once for both
            outputs, kl = self.net.forward_with_kl(x, self.hparams.num_samples_train)
            nll = self.likelihood.nll(outputs, y)
            loss = nll + weight * kl
        else:
            outputs = self.net(x, self.hparams.num_samples_train)
            nll = self.likelihood.nll(outputs, y)
            kl = torch.zeros((), device=nll.device)
            loss = nll
        if not torch.isfinite(loss):
            raise DivergenceError(
                f"training loss became {loss.item()} at epoch {self.current_epoch}, batch {batch_idx} "
                f"(nll={nll.item():.4g}, kl={kl.item():.4g}); lower model.lr (now {self.hparams.lr})"
            )
        batch_size = x.shape[0]
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=batch_size, sync_dist=True)
        self.log("train/nll", nll / batch_size, on_step=False, on_epoch=True, batch_size=batch_size, sync_dist=True)
        self.log("train/kl", kl, on_step=False, on_epoch=True, batch_size=batch_size, sync_dist=True)
        self.log("train/kl_weight", weight, on_step=False, on_epoch=True, batch_size=batch_size, sync_dist=True)
        return loss

    def _kl_weight(self, batch_idx: int) -> float:
        trainer = self._trainer
        num_batches = 1
        world_size = 1
        epoch = 0
        if trainer is not None:
            n = trainer.num_training_batches
            num_batches = int(n) if isinstance(n, int) or (isinstance(n, float) and math.isfinite(n)) else 1
            world_size = trainer.world_size
            epoch = trainer.current_epoch
        return kl_weight(
            self.hparams.kl_weighting,
            batch_idx,
            max(num_batches, 1),
            epoch=epoch,
            anneal_epochs=self.hparams.anneal_epochs,
            world_size=world_size,
        )

    def check_schedule(self, trainer: L.Trainer) -> None:
        """Refuse a run whose ``pretrain_epochs`` leave no ELBO epoch (the CLI calls this before training).

        Raises:
            ValueError: naming both values.
        """
        epochs = self.hparams.get("pretrain_epochs", 0)
        max_epochs = trainer.max_epochs
        if epochs and not trainer.fast_dev_run and max_epochs is not None and 0 <= max_epochs <= epochs:
            raise ValueError(
                f"model.pretrain_epochs={epochs} leaves no epoch of Bayes by Backprop in "
                f"trainer.max_epochs={max_epochs}: lower it or train longer"
            )

    def on_train_start(self) -> None:
        self.check_schedule(self.trainer)
        # Under data parallelism every rank was seeded alike (DDP also broadcasts rank 0's
        # initial weights). Give each rank its own Monte Carlo noise, so that the examples
        # of a global minibatch get independent noise, as they do in one process.
        if self._trainer is not None and self.trainer.world_size > 1:
            torch.manual_seed(torch.initial_seed() + self.trainer.global_rank)

    @property
    def pretraining(self) -> bool:
        """Whether this epoch trains the means alone (within ``pretrain_epochs``)."""
        epochs = self.hparams.get("pretrain_epochs", 0)
        return bool(epochs) and self._trainer is not None and self.trainer.current_epoch < epochs

    def on_train_epoch_start(self) -> None:
        self._epoch_start = time.perf_counter()
        epochs = self.hparams.get("pretrain_epochs", 0)
        if epochs and self.trainer.current_epoch == epochs:
            moped_restart_(self.net, self.hparams.delta)

    def on_train_epoch_end(self) -> None:
        # the slowest rank's epoch time; the learning rate is the same on every rank. Not Lightning's
        # LearningRateMonitor: per epoch it logs the rate at the epoch's start, and names it lr-Adam
        # unless a scheduler is configured; train/lr is the rate at the epoch's end, with or without one.
        self.log("train/epoch_time_s", time.perf_counter() - self._epoch_start, sync_dist=True, reduce_fx="max")
        if self._trainer is not None and self.trainer.optimizers:
            self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], sync_dist=True)

    def configure_optimizers(self) -> torch.optim.Optimizer | dict:
        precision = str(getattr(self._trainer, "precision", "")) if self._trainer is not None else ""
        # Lightning's 16-bit gradient scaler cannot clip gradients for an optimizer that unscales them itself
        optimizer = make_adam(
            parameter_groups(self, self.hparams.get("lr_rho")),
            self.hparams.lr,
            self.hparams.weight_decay,
            fused=not precision.startswith("16"),
        )
        if self.hparams.lr_schedule == LRSchedule.constant.value:
            return optimizer
        steps = self.trainer.estimated_stepping_batches if self._trainer is not None else math.inf
        if not math.isfinite(steps) or steps < 1:
            raise ValueError(
                "model.lr_schedule='cosine' decays the learning rate over the run's optimizer steps and needs "
                "a finite number of them: set trainer.max_epochs or trainer.max_steps"
            )
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=int(steps))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # -- evaluation ----------------------------------------------------------------------------------
    def _evaluate(self, batch: tuple[torch.Tensor, torch.Tensor], metrics: torch.nn.Module) -> None:
        x, y = batch
        predictive = self.predictive_from_outputs(self.net(x, self.hparams.num_samples_eval))
        metrics.update(predictive, self.likelihood.target_in_original_units(y, self.preprocessing))

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, self.val_metrics)

    def on_validation_epoch_end(self) -> None:
        self._log_metrics(self.val_metrics)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, self.test_metrics)

    def on_test_epoch_end(self) -> None:
        self._log_metrics(self.test_metrics)

    def _log_metrics(self, metrics: torch.nn.Module) -> None:
        values = metrics.compute()  # keys carry the stage prefix of the clone ("val/nll", ...)
        metrics.reset()
        # torchmetrics has already synchronised the values across processes: every rank holds
        # the same numbers, so Lightning's mean over ranks (sync_dist) leaves them unchanged.
        self.log_dict(values, sync_dist=True)

    def predict_step(self, batch: Any, batch_idx: int) -> dict[str, torch.Tensor]:
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        predictive = self.predictive_from_outputs(self.net(x, self.hparams.num_samples_eval))
        return self.summarise(predictive).tensors()
