"""Training-step and predictive-sampling benchmarks at the paper's MNIST architecture.

The Bayesian side runs exactly what users run: a :class:`~lightning_bnn.training.module.BNNModule`
(its network from :func:`~lightning_bnn.nn.models.build_network`), one step being
``optimizer.zero_grad(); loss = module.training_step(batch, i); loss.backward();
optimizer.step()`` with the optimizer from ``module.configure_optimizers()``, and
prediction being ``module.sample_predictions(x, S)``. The baseline is a plain
``nn.Sequential`` of ``nn.Linear`` layers of the same shape with the same loss
(summed cross-entropy), the same optimizer construction
(:func:`~lightning_bnn.training.module.make_adam`), and, for prediction, S separate forward
passes (softmax included).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.harness import Row, Timing, interleaved_timings, peak_memory_mb, state_mb
from lightning_bnn.nn.layers import clear_moments_cache
from lightning_bnn.nn.posterior import GaussianPosterior, KLMethod, resolve_kl_method
from lightning_bnn.nn.priors import PriorConfig
from lightning_bnn.training.module import BNNModule, make_adam

INPUT_SHAPE = (1, 28, 28)
HIDDEN = (400, 400)
CLASSES = 10
BATCH = 128
LR = 1e-3
ESTIMATORS = ("reparameterization", "local", "flipout")
#: prior name -> prior config; the main rows use ``kl='auto'``
PRIORS = {
    "gaussian": {"name": "gaussian", "sigma": 1.0},
    "scale_mixture": {"name": "scale_mixture"},
}
#: How each KL is described in the rows' notes.
KL_NOTES = {
    "exact": "exact KL",
    "mc": "MC KL (fused node)",
    "bound": "KL bound (kl='bound')",
    "mc_autograd": "MC KL through autograd (before issue 13)",
}
#: The scale mixture's KL computations, each timed at S=1 beside the main (``auto``) rows: the
#: closed-form bound, the fused Monte Carlo node and the autograd Monte Carlo path it replaced.
MIXTURE_KL_VARIANTS = ("bound", "mc", "mc_autograd")
TRAIN_SAMPLES = (1, 4, 16)
#: (batch, S) of the predictive-sampling benchmarks
PREDICT_CASES = ((1, 100), (1000, 100), (1, 1000))


@dataclass
class Settings:
    """How long to measure."""

    rounds: int
    warmup: int
    predict_rounds: int
    regime_rows: bool
    train_samples: tuple[int, ...] = TRAIN_SAMPLES


def deterministic_mlp() -> nn.Sequential:
    """The deterministic 784-400-400-10 ReLU MLP of the same shape."""
    widths = [int(torch.Size(INPUT_SHAPE).numel()), *HIDDEN, CLASSES]
    layers: list[nn.Module] = [nn.Flatten()]
    for i, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def bayes_module(estimator: str, prior: str, samples: int, kl: str = "auto") -> BNNModule:
    """The BNNModule of the benchmark (784-400-400-10 ReLU MLP) as a config would build it.

    ``kl='mc_autograd'`` builds ``kl='mc'`` and routes every posterior's KL through the autograd
    path (:meth:`~lightning_bnn.nn.posterior.GaussianPosterior.kl_from_sigma`), as the scale
    mixture's Monte Carlo KL was computed before the fused node: the comparison row.
    """
    module = BNNModule(
        input_shape=list(INPUT_SHAPE),
        num_outputs=CLASSES,
        hidden_sizes=list(HIDDEN),
        layer_type="bayes",
        estimator=estimator,
        prior=dict(PRIORS[prior]),
        kl="mc" if kl == "mc_autograd" else kl,
        num_samples_train=samples,
        lr=LR,
    )
    if kl == "mc_autograd":
        for m in module.modules():
            if isinstance(m, GaussianPosterior):
                m.moments_and_kl = _autograd_moments_and_kl(m)
    return module


def _autograd_moments_and_kl(post: GaussianPosterior) -> Callable[..., tuple[torch.Tensor, ...]]:
    def moments_and_kl(prior: PriorConfig, method: KLMethod, num_mc_samples: int = 1) -> tuple[torch.Tensor, ...]:
        sigma = post.sigma
        return sigma, sigma.square(), post.kl_from_sigma(sigma, prior, method, num_mc_samples)

    return moments_and_kl


def kl_label(prior: str, kl: str = "auto") -> str:
    """What a row's KL computation is: ``kl`` as :func:`resolve_kl_method` resolves it for ``prior``."""
    if kl == "mc_autograd":
        return kl
    return resolve_kl_method(kl, PriorConfig(**PRIORS[prior])).value


def _batch(device: torch.device, size: int = BATCH, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((size, *INPUT_SHAPE), generator=g)
    y = torch.randint(0, CLASSES, (size,), generator=g)
    return x.to(device), y.to(device)


def deterministic_step(device: torch.device) -> tuple[Callable[[], None], nn.Module, torch.optim.Optimizer]:
    """One training step of the deterministic baseline."""
    model = deterministic_mlp().to(device)
    optimizer = make_adam(model.parameters(), LR)
    x, y = _batch(device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y, reduction="sum")
        loss.backward()
        optimizer.step()

    return step, model, optimizer


def bayes_step(
    estimator: str, prior: str, samples: int, device: torch.device, kl: str = "auto"
) -> tuple[Callable[[], None], nn.Module, torch.optim.Optimizer]:
    """One training step of BNNModule: its own training_step, loss and optimizer."""
    return module_step(bayes_module(estimator, prior, samples, kl), device, BATCH)


def module_step(
    module: nn.Module, device: torch.device, batch: int
) -> tuple[Callable[[], None], nn.Module, torch.optim.Optimizer]:
    """One training step of a BNNModule: its own training_step, loss and optimizer, on a fixed batch."""
    module = module.to(device).train()
    optimizer = module.configure_optimizers()
    x, y = _batch(device, batch)
    counter = [0]

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with warnings.catch_warnings():
            # without a Trainer, self.log() warns and returns: the step is otherwise unchanged
            warnings.simplefilter("ignore")
            loss = module.training_step((x, y), counter[0])
        loss.backward()
        optimizer.step()
        counter[0] += 1

    return step, module, optimizer


def training_rows(device: torch.device, settings: Settings, log: Callable[[str], None]) -> list[Row]:
    """Training step rows: S x estimator x prior, each with its ratio to the deterministic step.

    The main rows use ``kl='auto'``; beside them, at S=1, the scale mixture with each KL of
    :data:`MIXTURE_KL_VARIANTS` that ``auto`` does not already time (``extra['kl']`` says which).
    """
    steps: dict[str, Callable[[], None]] = {}
    states: dict[str, float] = {}
    det, det_model, det_opt = deterministic_step(device)
    steps["deterministic"] = det
    keys: dict[str, tuple[str, str, int, str]] = {}
    models = {"deterministic": (det_model, det_opt)}
    cases = [(e, p, s, "auto") for p in PRIORS for e in ESTIMATORS for s in settings.train_samples]
    auto_mixture = kl_label("scale_mixture")
    cases += [(e, "scale_mixture", 1, k) for k in MIXTURE_KL_VARIANTS if k != auto_mixture for e in ESTIMATORS]
    for estimator, prior, s, kl in cases:
        key = f"{estimator}/{prior}/S={s}" if kl == "auto" else f"{estimator}/{prior}/{kl}/S={s}"
        steps[key], model, opt = bayes_step(estimator, prior, s, device, kl)
        keys[key] = (estimator, prior, s, kl)
        models[key] = (model, opt)
    log(f"training step: {len(steps)} configurations, {settings.rounds} interleaved rounds")
    timings = interleaved_timings(steps, device, settings.rounds, settings.warmup)
    for key, (model, opt) in models.items():
        states[key] = state_mb(model, opt)
    peaks = {key: peak_memory_mb(fn, device) for key, fn in steps.items()}
    det = timings["deterministic"]
    rows = [_row("train_step", "deterministic", None, 1, BATCH, timings["deterministic"], det, peaks["deterministic"])]
    rows[0].note = "nn.Linear MLP, same loss and Adam"
    rows[0].extra["state_mb"] = states["deterministic"]
    for key, (estimator, prior, s, kl) in keys.items():
        row = _row("train_step", estimator, prior, s, BATCH, timings[key], det, peaks[key])
        if s != 1 and f"{estimator}/{prior}/S=1" in timings:
            row.ratio_to_s1 = timings[key].ms / timings[f"{estimator}/{prior}/S=1"].ms
            row.extra["cpu_ratio_to_s1"] = timings[key].cpu_ms / timings[f"{estimator}/{prior}/S=1"].cpu_ms
        label = kl_label(prior, kl)
        row.note = KL_NOTES[label] + (" (kl=auto)" if kl == "auto" and prior == "scale_mixture" else "")
        row.extra["kl"] = label
        row.extra["state_mb"] = states[key]
        if prior == "scale_mixture" and s == 1:
            gaussian = timings[f"{estimator}/gaussian/S=1"]
            row.extra["ratio_to_gaussian"] = timings[key].ms / gaussian.ms
        rows.append(row)
    return rows


#: your own network (issue 15): the example residual CNN, deterministic, last layer Bayesian, all layers Bayesian
BYON_NETWORK = {"class_path": "lightning_bnn.nn.resnet.ResidualCNN", "init_args": {"width": 16}}
BYON_CASES = {
    "resnet deterministic": {"layer_type": "deterministic"},
    "resnet last-layer BBB": {"layer_type": "bayes", "bayesian_layers": ["head"]},
    "resnet full BBB": {"layer_type": "bayes"},
}


def byon_step(
    case: dict, device: torch.device, batch: int = BATCH
) -> tuple[Callable[[], None], nn.Module, torch.optim.Optimizer]:
    """One training step of BNNModule on the example residual CNN (``BYON_CASES``), as :func:`bayes_step`."""
    module = BNNModule(input_shape=list(INPUT_SHAPE), num_outputs=CLASSES, network=BYON_NETWORK, lr=LR, **case)
    return module_step(module, device, batch)


def byon_rows(device: torch.device, settings: Settings, log: Callable[[str], None]) -> list[Row]:
    """Training-step cost of last-layer and full BBB on a user network, relative to the same network deterministic.

    ``--quick`` (no regime rows) measures a batch of 32 for at most 3 rounds: a CPU step of the residual CNN
    at batch 128 takes seconds.
    """
    batch = BATCH if settings.regime_rows else 32
    rounds = settings.rounds if settings.regime_rows else min(settings.rounds, 3)
    steps, models = {}, {}
    for key, case in BYON_CASES.items():
        steps[key], *models[key] = byon_step(case, device, batch)
    log(f"your own network: {len(steps)} configurations, {rounds} interleaved rounds")
    timings = interleaved_timings(steps, device, rounds, min(settings.warmup, 1))
    det = timings["resnet deterministic"]
    rows = []
    for key in BYON_CASES:
        row = _row(
            "train_step_own_network", key, "gaussian", 1, batch, timings[key], det, peak_memory_mb(steps[key], device)
        )
        row.note = "lightning_bnn.nn.resnet.ResidualCNN width 16, BatchNorm; ratio to the same network deterministic"
        row.extra["state_mb"] = state_mb(*models[key])
        rows.append(row)
    return rows


def _row(name: str, estimator: str, prior: str | None, s: int, batch: int, t: Timing, det: Timing, peak: float) -> Row:
    return Row(
        name,
        estimator,
        prior,
        s,
        t.ms,
        t.ms / det.ms,
        peak,
        batch=batch,
        min_ms=t.min_ms,
        cpu_ms=t.cpu_ms,
        cpu_ratio_to_deterministic=t.cpu_ms / det.cpu_ms,
    )


def predictive_rows(device: torch.device, settings: Settings, log: Callable[[str], None]) -> list[Row]:
    """Predictive sampling rows: S samples of B inputs vs S deterministic forward passes."""
    module = bayes_module("local", "gaussian", 1).to(device).eval()
    det = deterministic_mlp().to(device).eval()
    rows: list[Row] = []
    for batch, s in PREDICT_CASES:
        x, _ = _batch(device, batch, seed=1)

        def det_passes(x: torch.Tensor = x, s: int = s) -> torch.Tensor:
            with torch.no_grad():
                return torch.stack([det(x).softmax(-1) for _ in range(s)])

        def bayes(x: torch.Tensor = x, s: int = s) -> torch.Tensor:
            return module.sample_predictions(x, s)

        def bayes_cold(x: torch.Tensor = x, s: int = s) -> torch.Tensor:
            clear_moments_cache(module.net)
            return module.sample_predictions(x, s)

        functions = {"deterministic": det_passes, "auto": bayes, "auto (cold)": bayes_cold}
        if settings.regime_rows:
            for estimator in ("local", "reparameterization"):

                def forced(x: torch.Tensor = x, s: int = s, estimator: str = estimator) -> torch.Tensor:
                    return module.sample_predictions(x, s, estimator=estimator)

                functions[estimator] = forced
        log(f"predictive sampling: S={s}, {batch} input(s), {settings.predict_rounds} interleaved rounds")
        timings = interleaved_timings(functions, device, settings.predict_rounds, settings.warmup)
        name = f"predict_{batch}x{s}"
        for key in functions:
            peak = peak_memory_mb(functions[key], device)
            if key == "deterministic":
                note = f"{s} forward passes of the nn.Linear MLP"
            elif key == "auto":
                note = "module.sample_predictions (estimator auto), repeated: sigma kept between calls"
            elif key == "auto (cold)":
                note = "the same, first call after a change of rho: sigma = softplus(rho) recomputed"
            else:
                note = f"sample_predictions(estimator={key!r}), for comparison"
            row = _row(
                name,
                key,
                None if key == "deterministic" else "gaussian",
                s,
                batch,
                timings[key],
                timings["deterministic"],
                peak,
            )
            row.note = note
            rows.append(row)
    return rows
