"""``model.lr_schedule``: constant (default) or a cosine decay to 0 over the run's optimizer steps."""

from __future__ import annotations

import lightning.pytorch as L
import pytest
import torch
from bnn_testing import CONFIGS, train
from mlflow import MlflowClient

from lightning_bnn.data.base import DigitsDataModule
from lightning_bnn.training.module import BNNModule


def _lr_history(uri: str, cli) -> list[float]:
    run_id = cli.trainer.logger.run_id
    return [m.value for m in MlflowClient(uri).get_metric_history(run_id, "train/lr")]


def test_cosine_schedule_from_the_cli_decays_to_zero(tracking_uri):
    cli = train(CONFIGS / "digits.yaml", tracking_uri, "--trainer.max_epochs", "2", "--model.lr_schedule", "cosine")
    lr = cli.model.hparams.lr
    history = _lr_history(tracking_uri, cli)
    assert len(history) == 2
    # epoch ends: half way along the half cosine (lr / 2), then the end (0); tolerance one step of the cosine
    assert history[0] == pytest.approx(lr / 2, rel=0.05)
    assert history[1] < 1e-3 * lr
    run = MlflowClient(tracking_uri).get_run(cli.trainer.logger.run_id)
    assert run.data.params["lr_schedule"] == "cosine"


def test_constant_schedule_is_the_default(tracking_uri):
    cli = train(CONFIGS / "digits.yaml", tracking_uri, "--trainer.max_epochs", "2")
    assert cli.model.hparams.lr_schedule == "constant"
    assert _lr_history(tracking_uri, cli) == pytest.approx([cli.model.hparams.lr] * 2, rel=1e-6)  # logged as float32


def test_cosine_schedule_needs_a_finite_run():
    data = DigitsDataModule(batch_size=64)
    module = BNNModule(input_shape=[64], num_outputs=10, hidden_sizes=[8], lr_schedule="cosine")
    trainer = L.Trainer(max_epochs=-1, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    with pytest.raises(ValueError, match="lr_schedule='cosine' .* set trainer.max_epochs or trainer.max_steps"):
        trainer.fit(module, datamodule=data)


def test_rho_has_its_own_learning_rate():
    torch.manual_seed(0)
    module = BNNModule(input_shape=[6], num_outputs=3, hidden_sizes=[8], lr=1e-2, lr_rho=1e-4)
    optimizer = module.configure_optimizers()
    rest, rho = optimizer.param_groups
    names = {id(p): n for n, p in module.named_parameters()}
    assert {names[id(p)].rsplit(".", 1)[-1] for p in rho["params"]} == {"rho"} and rho["lr"] == 1e-4
    assert all(not names[id(p)].endswith(".rho") for p in rest["params"]) and rest["lr"] == 1e-2
    assert len(rest["params"]) + len(rho["params"]) == len(list(module.parameters()))
    # Adam's first step moves every parameter by about its own learning rate
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    loss = module.training_step((torch.randn(16, 6), torch.randint(0, 3, (16,))), 0)
    loss.backward()
    optimizer.step()
    moved = {n: float((p.detach() - before[n]).abs().max()) for n, p in module.named_parameters()}
    assert max(v for n, v in moved.items() if n.endswith(".rho")) == pytest.approx(1e-4, rel=0.05)
    assert max(v for n, v in moved.items() if n.endswith(".mu")) == pytest.approx(1e-2, rel=0.05)
    with pytest.raises(ValueError, match="lr_rho must be a finite number > 0"):
        BNNModule(input_shape=[6], num_outputs=3, lr_rho=-1.0)
