"""``model.init_from``: a built-in Bayesian network started from a trained deterministic one (MOPED).

Krishnan et al. (2020): mu = w, sigma = delta |w|. With delta = 0 (sigma floored at 1e-8) the
Bayesian network's sampled predictions are the deterministic network's; tolerance 1e-5 on
probabilities (float32 round-off through two or three layers, and the 1e-8 weight noise).
"""

from __future__ import annotations

import pytest
import torch
from bnn_testing import CONFIGS, train

from lightning_bnn.cli.app import BNNCLI
from lightning_bnn.data.base import BaseDataModule
from lightning_bnn.nn.convert import moped_rho
from lightning_bnn.tracking.serialization import save_model
from lightning_bnn.tracking.store import load_model
from lightning_bnn.training.module import BNNModule

SHAPES = {
    "mlp": {"input_shape": [1, 8, 8], "architecture": "mlp", "hidden_sizes": [16, 12]},
    "cnn": {"input_shape": [1, 8, 8], "architecture": "cnn", "hidden_sizes": [12], "conv_channels": [4]},
}


def _trained_deterministic(kind: str, tmp_path):
    torch.manual_seed(0)
    module = BNNModule(layer_type="deterministic", **SHAPES[kind]).eval()
    return module, save_model(module, tmp_path / "det") / "weights.safetensors"


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
@pytest.mark.parametrize("estimator", ["local", "reparameterization", "flipout"])
def test_delta_zero_reproduces_the_deterministic_network(kind, estimator, tmp_path):
    det, weights = _trained_deterministic(kind, tmp_path)
    bbb = BNNModule(layer_type="bayes", estimator=estimator, init_from=str(weights), delta=0.0, **SHAPES[kind]).eval()
    x = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    expected = det.sample_predictions(x, 1)[0]
    sampled = bbb.sample_predictions(x, 4)
    torch.testing.assert_close(sampled, expected.expand(4, -1, -1), atol=1e-5, rtol=0)
    # a random start is a different network: the comparison above can fail
    fresh = BNNModule(layer_type="bayes", estimator=estimator, **SHAPES[kind]).eval()
    assert (fresh.sample_predictions(x, 1)[0] - expected).abs().max() > 1e-2


def test_sigma_starts_at_delta_times_abs_weight(tmp_path):
    det, weights = _trained_deterministic("mlp", tmp_path)
    bbb = BNNModule(layer_type="bayes", init_from=str(weights), delta=0.3, **SHAPES["mlp"])
    w = det.net.layers[1].weight.detach()
    posterior = bbb.net.layers[1].weight
    torch.testing.assert_close(posterior.mu.detach(), w)
    sigma = torch.nn.functional.softplus(posterior.rho.detach())
    torch.testing.assert_close(sigma, (0.3 * w.abs()).clamp_min(1e-8), rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(posterior.rho.detach(), moped_rho(w, 0.3))
    # the last layer's bias too
    torch.testing.assert_close(bbb.net.layers[-1].bias.mu.detach(), det.net.layers[-1].bias.detach())


@pytest.mark.parametrize(
    ("source", "kwargs", "message"),
    [
        ("bayes", {}, "holds a Bayesian posterior"),
        ("det", {"hidden_sizes": [16, 13]}, "is not a deterministic mlp of this shape"),
        ("det", {"layer_type": "mc_dropout"}, "needs layer_type='bayes'"),
        ("missing", {}, "no such file"),
    ],
)
def test_bad_init_from_names_the_problem(source, kwargs, message, tmp_path):
    _, weights = _trained_deterministic("mlp", tmp_path)
    if source == "bayes":
        weights = save_model(BNNModule(layer_type="bayes", **SHAPES["mlp"]), tmp_path / "bbb") / "weights.safetensors"
    elif source == "missing":
        weights = tmp_path / "nothing.safetensors"
    args = {**SHAPES["mlp"], "layer_type": "bayes", **kwargs}
    with pytest.raises(ValueError, match=message):
        BNNModule(init_from=str(weights), **args)


def test_init_from_a_run_id_on_the_command_line(tracking_uri):
    """``--model.init_from RUN_ID`` fetches a deterministic run's weights from the store."""
    det_run = train(
        CONFIGS / "digits.yaml",
        tracking_uri,
        "--trainer.max_epochs",
        "2",
        "--model.hidden_sizes",
        "[16]",
        "--model.layer_type",
        "deterministic",
    ).trainer.logger.run_id
    args = ["--config", str(CONFIGS / "digits.yaml"), "--model.hidden_sizes", "[16]"]
    args += ["--mlflow.enabled", "false", "--mlflow.tracking_uri", tracking_uri]
    cli = _instantiate([*args, "--model.init_from", det_run, "--model.delta", "0"])
    assert cli.model.hparams.init_from == det_run  # the run id is what the model records
    det = load_model(det_run, tracking_uri)
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(2)) * det.preprocessing.scale
    expected = det.sample_predictions(x, 1)[0]
    torch.testing.assert_close(cli.model.eval().sample_predictions(x, 3), expected.expand(3, -1, -1), atol=1e-5, rtol=0)
    with pytest.raises(SystemExit):  # a run id that is not in the store
        _instantiate([*args, "--model.init_from", "0" * 32])


def _instantiate(args: list[str]) -> BNNCLI:
    """The CLI's classes for ``args`` (no subcommand: nothing is trained)."""
    return BNNCLI(
        BNNModule,
        BaseDataModule,
        subclass_mode_data=True,
        save_config_callback=None,
        run=False,
        auto_configure_optimizers=False,
        args=args,
    )
