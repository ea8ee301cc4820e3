"""Data-parallel training: the ELBO's scale under DDP, and a real 2-process gloo run (issue 8).

With W processes each rank sees M = N / (W B) minibatches of B examples per epoch and
DDP averages the gradients over ranks. The per-rank loss is

    loss_r = NLL_r + pi_i / W * KL,

so the averaged gradient is the gradient of (sum_r NLL_r + pi_i KL) / W: the ELBO of the
global minibatch of W B examples divided by W. A rank's loss therefore has the scale of
a one-process run with batch B (whose pi_i = 1 / (W M) under the uniform schedule).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from bnn_testing import CONFIGS, cli_env, fit_command

from lightning_bnn.training.module import BNNModule
from lightning_bnn.training.objectives import kl_weight

W = 2


def _module(prior: dict, schedule: str = "uniform", kl: str = "auto") -> BNNModule:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        module = BNNModule(
            input_shape=[5],
            num_outputs=3,
            hidden_sizes=[8],
            estimator="reparameterization",  # one weight sample per step: the same on every "rank" below
            num_samples_train=1,
            prior=prior,
            kl=kl,
            kl_weighting=schedule,
        )
    module.log = lambda *args, **kwargs: None  # no Trainer to log into
    return module


def _loss_and_grad(module, x, y, batch_idx, num_batches, world_size, epoch=0):
    """training_step's loss and gradient, as Lightning's Trainer would run it on one rank."""
    module._trainer = SimpleNamespace(num_training_batches=num_batches, world_size=world_size, current_epoch=epoch)
    module.zero_grad()
    with torch.random.fork_rng():
        torch.manual_seed(1234)  # identical weight (and MC KL) samples in every call
        loss = module.training_step((x, y), batch_idx)
    loss.backward()
    grad = torch.cat([p.grad.reshape(-1) for p in module.parameters()])
    module._trainer = None
    return loss.detach(), grad


@pytest.mark.parametrize("schedule", ["uniform", "blundell", "anneal"])
@pytest.mark.parametrize(
    ("prior", "kl"),
    [
        ({"name": "gaussian", "sigma": 1.0}, "auto"),
        ({"name": "scale_mixture", "pi": 0.5}, "mc"),
        ({"name": "scale_mixture", "pi": 0.5}, "bound"),
    ],
    ids=["exact_kl", "mc_kl", "bound_kl"],
)
def test_rank_averaged_gradient_is_global_elbo_over_world_size(schedule, prior, kl):
    """mean_r grad(loss_r) == grad(global-minibatch ELBO) / W, for every schedule and batch index."""
    gen = torch.Generator().manual_seed(0)
    module = _module(prior, schedule, kl)
    m = 5  # minibatches per rank per epoch
    x, y = torch.randn(2 * 6, 5, generator=gen), torch.randint(0, 3, (2 * 6,), generator=gen)
    for batch_idx in (0, 3):
        ranks = [_loss_and_grad(module, x[r::W], y[r::W], batch_idx, m, W, epoch=1) for r in range(W)]
        mean_loss = torch.stack([loss for loss, _ in ranks]).mean()
        mean_grad = torch.stack([grad for _, grad in ranks]).mean(0)
        # one process holding the whole global minibatch, with the same M global minibatches per epoch
        loss1, grad1 = _loss_and_grad(module, x, y, batch_idx, m, 1, epoch=1)
        torch.testing.assert_close(mean_loss, loss1 / W, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(mean_grad, grad1 / W, rtol=1e-5, atol=1e-6)


def test_rank_loss_has_the_scale_of_one_process():
    """Uniform schedule: a rank's loss (M batches, W ranks) equals a one-process loss (W M batches)."""
    module = _module({"name": "gaussian", "sigma": 1.0})
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(6, 5, generator=gen), torch.randint(0, 3, (6,), generator=gen)
    m = 5
    for i in range(m):
        assert kl_weight("uniform", i, m, world_size=W) == pytest.approx(kl_weight("uniform", i, W * m))
    rank_loss, rank_grad = _loss_and_grad(module, x, y, 2, m, W)
    one_loss, one_grad = _loss_and_grad(module, x, y, 2, W * m, 1)
    torch.testing.assert_close(rank_loss, one_loss)
    torch.testing.assert_close(rank_grad, one_grad)


# -- a real two-process run -------------------------------------------------------------------------
DDP_EPOCHS = 3
BATCH = 64
#: |DDP - one process| allowed on test metrics: the runs differ only in their Monte Carlo noise
TOLERANCE = {"test/acc": 0.04, "test/nll": 0.08, "test/ece": 0.04, "test/brier": 0.04}


def _fit(store: Path, *extra: str) -> float:
    """Train digits in a subprocess through ``python -m lightning_bnn fit``; returns the wall time."""
    store.mkdir(parents=True, exist_ok=True)
    cmd = fit_command(
        CONFIGS / "digits.yaml",
        f"sqlite:///{store}/mlflow.db",
        "--trainer.max_epochs",
        str(DDP_EPOCHS),
        "--model.hidden_sizes",
        "[32]",
        *extra,
    )
    env = cli_env(OMP_NUM_THREADS="1")
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=store, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return time.perf_counter() - start


def _runs(store: Path) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments)


@pytest.mark.slow
def test_ddp_two_processes_match_one_process(tmp_path):
    """2 gloo processes x batch 64 give one run whose test metrics match one process x batch 128.

    Both take the same optimiser steps on global minibatches of 128 examples; Adam is
    invariant to the 1/W scale of the DDP loss, so they differ only in Monte Carlo noise.
    """
    ddp_time = _fit(
        tmp_path / "ddp",
        "--trainer.strategy",
        "ddp",
        "--trainer.devices",
        str(W),
        "--trainer.accelerator",
        "cpu",
        "--data.batch_size",
        str(BATCH),
    )
    one_time = _fit(tmp_path / "one", "--data.batch_size", str(W * BATCH))
    ddp_runs, one_runs = _runs(tmp_path / "ddp"), _runs(tmp_path / "one")
    assert len(ddp_runs) == 1, "rank 1 must not create an MLflow run"
    assert len(one_runs) == 1
    ddp, one = ddp_runs[0].data, one_runs[0].data
    assert ddp_runs[0].info.status == "FINISHED"
    assert ddp.params["trainer.strategy"] == "ddp" and ddp.params["trainer.devices"] == str(W)
    # uniform pi_i / W, with M = ceil(N / (W B)) minibatches per rank (Lightning's num_training_batches
    # under the DistributedSampler): 1 / (W M), the weight of a one-process run with batch B
    assert ddp.metrics["train/kl_weight"] == pytest.approx(one.metrics["train/kl_weight"] / W, rel=1e-6)
    diffs = {k: abs(ddp.metrics[k] - one.metrics[k]) for k in TOLERANCE}
    report = {k: (round(ddp.metrics[k], 4), round(one.metrics[k], 4)) for k in TOLERANCE}
    print(json.dumps({"ddp_s": round(ddp_time, 1), "one_s": round(one_time, 1), "ddp_vs_one": report}))
    for key, tol in TOLERANCE.items():
        assert diffs[key] <= tol, f"{key}: DDP {ddp.metrics[key]:.4f} vs one process {one.metrics[key]:.4f}"
    assert ddp.metrics["test/acc"] > 0.5  # it learned
