"""Quality of the scale-mixture prior's KL computations: ``python -m benchmarks.mixture_kl [--seeds 3] [--epochs 30]``.

Trains the digits model of ``lightning_bnn/configs/digits.yaml`` (8x8 digits, MLP 64-128-128-10,
local estimator, Adam 3e-3, batch 64) with the paper's scale-mixture prior (pi = 1/2, s1 = 1,
s2 = e^-6) once per seed and KL computation (``kl='mc'``: the fused Monte Carlo node,
``kl='bound'``: the closed-form bound), through Lightning's ``Trainer`` without a logger, and
prints for each: the validation and test accuracy and NLL of the 20-sample predictive mean, the
median epoch time, and, on the trained posterior, the bound and a 256-sample Monte Carlo
estimate of KL(q || p) (their difference is how loose the bound is on a trained network).
Each seed trains both from the same seed (the same initial means, the same batches).

``--kl-timing`` instead times the KL alone (forward and backward of ``moments_and_kl`` for the
784x400, 400x400 and 400x10 weight tensors of the benchmark MLP and their biases), interleaved:
the Gaussian prior's closed form, and the scale mixture's bound, fused Monte Carlo node and
autograd Monte Carlo path, each with its ratio to the Gaussian closed form.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings

import lightning.pytorch as L
import torch

from benchmarks.fashion import EpochTimer
from benchmarks.harness import interleaved_timings
from lightning_bnn.data import DigitsDataModule
from lightning_bnn.nn.posterior import GaussianPosterior, KLMethod
from lightning_bnn.nn.priors import PriorConfig
from lightning_bnn.training.module import BNNModule

PRIOR = {"name": "scale_mixture", "pi": 0.5, "sigma1": 1.0, "sigma2": 0.0024787521766663585}
METHODS = ("mc", "bound")


def _kl_of_trained(module: BNNModule, samples: int) -> dict:
    """The bound and a ``samples``-sample Monte Carlo estimate of the trained posterior's KL (nats)."""
    prior = PriorConfig(**PRIOR)
    posts = [m for m in module.modules() if isinstance(m, GaussianPosterior)]
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(0)
        bound = sum(p.kl(prior, KLMethod.bound).item() for p in posts)
        mc = sum(p.kl(prior, KLMethod.mc, num_mc_samples=samples).item() for p in posts)
    return {"kl_bound": bound, "kl_mc": mc, "weights": sum(p.mu.numel() for p in posts)}


def fit(kl: str, seed: int, epochs: int) -> dict:
    """Train one model and return its validation and test metrics, epoch time and KLs."""
    L.seed_everything(seed, verbose=False)
    data = DigitsDataModule(batch_size=64, seed=0)
    module = BNNModule(
        input_shape=data.input_shape,
        num_outputs=data.num_outputs,
        hidden_sizes=[128, 128],
        layer_type="bayes",
        estimator="local",
        prior=dict(PRIOR),
        kl=kl,
        num_samples_train=1,
        num_samples_eval=20,
        lr=0.003,
        preprocessing=data.preprocessing,
    )
    timer = EpochTimer(torch.device("cpu"))
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[timer],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, datamodule=data)
        val = trainer.validate(module, datamodule=data, verbose=False)[0]
        test = trainer.test(module, datamodule=data, verbose=False)[0]
    out = {k: float(v) for k, v in {**val, **test}.items() if k.split("/")[-1] in ("acc", "nll", "ece")}
    out["epoch_ms"] = 1e3 * statistics.median(timer.times)
    out.update(_kl_of_trained(module, 256))
    return out


def kl_timing(rounds: int) -> str:
    """Median and best ms of the KL's forward + backward per method, and ratios to the Gaussian closed form."""
    shapes = ((400, 784), (400,), (400, 400), (400,), (10, 400), (10,))
    torch.manual_seed(0)
    posts = [GaussianPosterior(shape, 0.05, -5.0) for shape in shapes]
    gaussian, mixture = PriorConfig(name="gaussian"), PriorConfig(**PRIOR)

    def step(prior: PriorConfig, method: KLMethod, autograd: bool = False):
        def run() -> None:
            total = 0.0
            for p in posts:
                if autograd:
                    sigma = p.sigma
                    total = total + p.kl_from_sigma(sigma, prior, method) + sigma.sum()
                else:
                    sigma, _, kl = p.moments_and_kl(prior, method)
                    total = total + kl + sigma.sum()
            total.backward()
            for p in posts:
                p.mu.grad = p.rho.grad = None

        return run

    functions = {
        "gaussian, exact (fused)": step(gaussian, KLMethod.exact),
        "scale mixture, bound (fused)": step(mixture, KLMethod.bound),
        "scale mixture, mc (fused)": step(mixture, KLMethod.mc),
        "scale mixture, mc (autograd, before)": step(mixture, KLMethod.mc, autograd=True),
    }
    t = interleaved_timings(functions, torch.device("cpu"), rounds, 3)
    base = t["gaussian, exact (fused)"]
    lines = ["| KL (fwd + bwd, 478k weights) | ms (median) | ms (best) | x Gaussian (median) | x Gaussian (best) |"]
    lines.append("|---|---|---|---|---|")
    for key, v in t.items():
        lines.append(f"| {key} | {v.ms:.2f} | {v.min_ms:.2f} | {v.ms / base.ms:.2f} | {v.min_ms / base.min_ms:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.mixture_kl", description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--kl-timing", type=int, metavar="ROUNDS", help="time the KL alone (ROUNDS rounds) instead")
    args = parser.parse_args(argv)
    if args.seeds < 1 or args.epochs < 1 or args.threads < 1:
        parser.error("--seeds, --epochs and --threads must be >= 1")
    torch.set_num_threads(args.threads)
    if args.kl_timing:
        print(kl_timing(args.kl_timing))
        print(f"threads {args.threads}; load average {os.getloadavg()}")
        return 0
    started = time.perf_counter()
    results: dict[str, list[dict]] = {m: [] for m in METHODS}
    for seed in range(args.seeds):
        for kl in METHODS:
            results[kl].append(fit(kl, seed, args.epochs))
            print(f"[{time.perf_counter() - started:6.1f} s] kl={kl} seed={seed}: {results[kl][-1]}", file=sys.stderr)
    keys = ("val/acc", "val/nll", "test/acc", "test/nll", "test/ece", "epoch_ms", "kl_bound", "kl_mc")
    print("| kl | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    for kl in METHODS:
        cells = []
        for k in keys:
            values = [r[k] for r in results[kl]]
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.fmean(values):.4g} +- {sd:.2g}")
        print(f"| {kl} | " + " | ".join(cells) + " |")
    print(f"{args.seeds} seeds x {args.epochs} epochs, mean +- sd over seeds; load average {os.getloadavg()}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": results, "load_average_end": os.getloadavg()}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
