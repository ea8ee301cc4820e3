"""``model.pretrain_epochs``: the means trained alone first, then a MOPED start of the posterior in the same run."""

from __future__ import annotations

import pytest
import torch
from bnn_testing import CONFIGS, train
from mlflow import MlflowClient

from lightning_bnn.nn.convert import moped_restart_
from lightning_bnn.nn.sampling import sampling
from lightning_bnn.training.checkpoints import RestoreBestWeights
from lightning_bnn.training.module import BNNModule


def test_restart_sets_sigma_to_delta_abs_mu():
    torch.manual_seed(0)
    module = BNNModule(input_shape=[1, 8, 8], hidden_sizes=[16], layer_type="bayes", rho_init=-3.0)
    assert moped_restart_(module.net, 0.2) == 2
    for layer in (module.net.layers[1], module.net.layers[-1]):
        for posterior in (layer.weight, layer.bias):
            expected = (0.2 * posterior.mu.detach().abs()).clamp_min(1e-8)
            torch.testing.assert_close(posterior.sigma.detach(), expected, rtol=1e-4, atol=1e-7)


def test_the_mean_estimator_trains_the_means_alone():
    """In training mode, ``sampling("mean")`` gives the posterior-mean network: no noise, no gradient to rho."""
    torch.manual_seed(0)
    module = BNNModule(input_shape=[1, 8, 8], hidden_sizes=[16], layer_type="bayes", rho_init=0.0).train()
    x = torch.rand(4, 1, 8, 8)
    with sampling("mean"):
        first, second = module.net(x, 1), module.net(x, 1)
    torch.testing.assert_close(first, second, rtol=0, atol=0)  # sigma = softplus(0) = 0.69: noise would show
    first.sum().backward()
    layer = module.net.layers[1]
    assert layer.weight.rho.grad is None and layer.weight.mu.grad.abs().sum() > 0
    noisy = module.net(x, 1)  # outside the block: the layer's own estimator samples again
    assert (noisy - first).abs().max() > 1e-3


def test_a_run_with_pretraining(tracking_uri):
    """Six epochs of means alone (KL 0), then the ELBO; the kept epoch is the best ELBO epoch.

    delta = 2 starts the posterior far wider than the means' scale, so the ELBO epochs validate
    worse than the pretrained point estimate: a checkpoint that counted the pretraining epochs
    would keep one of them (checked below), this one must not.
    """
    cli = train(
        CONFIGS / "digits.yaml",
        tracking_uri,
        "--trainer.max_epochs",
        "9",
        "--model.hidden_sizes",
        "[16]",
        "--model.pretrain_epochs",
        "6",
        "--model.delta",
        "2.0",
    )
    client = MlflowClient(tracking_uri)
    run_id = cli.trainer.logger.run_id
    kl = [m.value for m in sorted(client.get_metric_history(run_id, "train/kl"), key=lambda m: m.step)]
    assert len(kl) == 9 and max(kl[:6]) == 0.0 and min(kl[6:]) > 0
    val = {m.step: m.value for m in client.get_metric_history(run_id, "val/nll")}
    epochs = sorted(val)  # one value per epoch, in step order
    restored = next(c for c in cli.trainer.callbacks if isinstance(c, RestoreBestWeights)).restored_epoch
    elbo_epochs = {e: val[step] for e, step in enumerate(epochs) if e >= 6}
    assert min(val[step] for step in epochs[:6]) < min(elbo_epochs.values())  # the case discriminates
    assert restored == min(elbo_epochs, key=elbo_epochs.get)
    # the kept weights are a posterior with spread, not the pretrained point estimate
    sigma = cli.model.net.layers[1].weight.sigma.detach()
    assert float(sigma.median()) > 1e-4


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"layer_type": "deterministic", "pretrain_epochs": 2}, "needs layer_type='bayes'"),
        ({"pretrain_epochs": -1}, "pretrain_epochs must be an integer >= 0"),
        ({"pretrain_epochs": 2, "init_from": "w.safetensors"}, "choose one"),
    ],
)
def test_bad_pretrain_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BNNModule(input_shape=[1, 8, 8], hidden_sizes=[16], **kwargs)


def test_pretraining_longer_than_the_run_is_refused(tracking_uri, capsys):
    """From the command line: a parse-style error naming both values, before any training."""
    with pytest.raises(SystemExit):
        train(
            CONFIGS / "digits.yaml",
            tracking_uri,
            "--trainer.max_epochs",
            "2",
            "--model.hidden_sizes",
            "[16]",
            "--model.pretrain_epochs",
            "2",
        )
    err = capsys.readouterr().err
    assert "model.pretrain_epochs=2 leaves no epoch of Bayes by Backprop in trainer.max_epochs=2" in err
    assert "Traceback" not in err
