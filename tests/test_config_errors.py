"""Bad config values fail fast, before training, with the field (and value) named: Python API and CLI."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from bnn_testing import CONFIGS

from lightning_bnn.cli.app import main
from lightning_bnn.data.base import DigitsDataModule, ToyRegressionDataModule
from lightning_bnn.data.tabular import CSVDataError, CSVDataModule
from lightning_bnn.nn.priors import PriorConfig
from lightning_bnn.training.module import BNNModule

# (keyword arguments of BNNModule, text the error must contain)
MODULE_ERRORS = [
    ({"prior": {"name": "gaussian", "sigma": 0.0}}, "prior.sigma must be a finite number > 0, got 0.0"),
    ({"prior": {"name": "gaussian", "sigma": -1.0}}, "prior.sigma must be a finite number > 0, got -1.0"),
    ({"prior": {"name": "gaussian", "sigma": math.nan}}, "prior.sigma must be a finite number > 0, got nan"),
    ({"prior": {"name": "scale_mixture", "sigma2": 0.0}}, "prior.sigma2 must be a finite number > 0, got 0.0"),
    ({"prior": {"name": "laplace", "scale": -2.0}}, "prior.scale must be a finite number > 0, got -2.0"),
    ({"prior": {"name": "scale_mixture", "pi": 0.0}}, "prior.pi must lie strictly between 0 and 1, got 0.0"),
    ({"prior": {"name": "scale_mixture", "pi": 1.0}}, "prior.pi must lie strictly between 0 and 1, got 1.0"),
    ({"prior": {"name": "scale_mixture", "pi": 1.5}}, "prior.pi must lie strictly between 0 and 1, got 1.5"),
    ({"prior": {"name": "cauchy"}}, "prior.name must be one of gaussian, scale_mixture, laplace; got 'cauchy'"),
    ({"prior": {"name": "gaussian", "sigmaa": 1.0}}, "prior has unknown field(s) ['sigmaa']"),
    ({"prior": {"name": "scale_mixture"}, "kl": "exact"}, "kl='exact' has no closed form for prior.name"),
    ({"prior": {"name": "laplace"}, "kl": "bound"}, "kl='bound' applies to prior.name='scale_mixture' only"),
    ({"kl": "closed"}, "kl must be one of auto, exact, mc, bound; got 'closed'"),
    ({"num_samples_train": 0}, "num_samples_train must be an integer between 1 and 1000, got 0"),
    ({"num_samples_train": 10**7}, "num_samples_train must be an integer between 1 and 1000, got 10000000"),
    ({"num_samples_eval": 0}, "num_samples_eval must be an integer between 1 and 10000, got 0"),
    ({"lr": -0.1}, "lr must be a finite number > 0.0, got -0.1"),
    ({"lr": 0.0}, "lr must be a finite number > 0.0, got 0.0"),
    ({"estimator": "magic"}, "estimator must be one of reparameterization, local, flipout; got 'magic'"),
    ({"kl_weighting": "cosine"}, "kl_weighting must be one of uniform, blundell, anneal; got 'cosine'"),
    ({"kl_scale": -1.0}, "kl_scale must be a finite number >= 0.0, got -1.0"),
    ({"hidden_sizes": [16, 0]}, "hidden_sizes must be a list of positive integers, got [16, 0]"),
    ({"noise_std": 0.0}, "noise_std must be a finite number > 0.0, got 0.0"),
    ({"dropout": 1.0}, "dropout must be a finite number >= 0.0 and <= 0.99, got 1.0"),
    ({"anneal_epochs": 0}, "anneal_epochs must be a positive integer, got 0"),
    ({"lr_schedule": "linear"}, "lr_schedule must be one of constant, cosine; got 'linear'"),
]


@pytest.mark.parametrize(("kwargs", "message"), MODULE_ERRORS, ids=[m[:40] for _, m in MODULE_ERRORS])
def test_module_refuses_bad_values(kwargs, message):
    with pytest.raises(ValueError) as err:
        BNNModule(input_shape=[4], num_outputs=2, hidden_sizes=kwargs.pop("hidden_sizes", [8]), **kwargs)
    assert message in str(err.value)


def test_prior_config_refuses_bad_values():
    with pytest.raises(ValueError, match="prior.sigma1 must be a finite number > 0, got 0"):
        PriorConfig(name="scale_mixture", sigma1=0)
    with pytest.raises(ValueError, match="prior.pi must lie strictly between 0 and 1, got -0.5"):
        PriorConfig(name="scale_mixture", pi=-0.5)
    with pytest.raises(ValueError, match="prior.sigma must be a finite number > 0, got True"):
        PriorConfig(name="gaussian", sigma=True)
    PriorConfig(name="gaussian", sigma=1.0, pi=7.0)  # fields of other families are not checked


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: DigitsDataModule(batch_size=0), "data.batch_size must be an integer >= 1, got 0"),
        (lambda: DigitsDataModule(val_fraction=1.2), "data.val_fraction must lie strictly between 0 and 1, got 1.2"),
        (lambda: ToyRegressionDataModule(x_low=1.0, x_high=0.0), "data.x_low must be below data.x_high"),
        (lambda: ToyRegressionDataModule(noise_std=-1.0), "data.noise_std must be a finite number >= 0, got -1.0"),
        (lambda: ToyRegressionDataModule(num_train=0), "data.num_train must be an integer >= 1, got 0"),
    ],
)
def test_data_modules_refuse_bad_values(make, message):
    with pytest.raises(ValueError) as err:
        make()
    assert message in str(err.value)


# -- through the command line -----------------------------------------------------------------------------

DIGITS = str(CONFIGS / "digits.yaml")


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    """Nothing a refused run might start writes into the checkout."""
    monkeypatch.chdir(tmp_path)


def _cli_error(capsys, *args: str) -> str:
    """Run ``fit`` with ``args``; it must exit with status 2 before training. Returns what it printed."""
    with pytest.raises(SystemExit) as err:
        main(["fit", "--mlflow.enabled", "false", "--trainer.enable_progress_bar", "false", *args])
    assert err.value.code == 2
    captured = capsys.readouterr()
    return captured.err + captured.out


CLI_ERRORS = [
    (["--model.prior.sigma", "0"], ["prior.sigma", "got 0.0"]),
    (["--model.prior", '{"name": "scale_mixture", "pi": 1.5}'], ["prior.pi", "got 1.5"]),
    (["--model.prior.name", "cauchy"], ["prior", "cauchy"]),
    (["--model.prior", '{"name": "scale_mixture"}', "--model.kl", "exact"], ["kl='exact'", "scale_mixture"]),
    (["--model.num_samples_train", "0"], ["num_samples_train", "got 0"]),
    (["--model.num_samples_train", "10000000"], ["num_samples_train", "got 10000000"]),
    (["--model.lr", "-0.1"], ["lr must be", "got -0.1"]),
    (["--model.estimator", "magic"], ["model.estimator", "magic"]),
    (["--data.batch_size", "0"], ["data.batch_size", "got 0"]),
    (["--model.lr_schedule", "linear"], ["model.lr_schedule", "linear"]),
]


@pytest.mark.parametrize(("args", "expected"), CLI_ERRORS, ids=[" ".join(a)[:40] for a, _ in CLI_ERRORS])
def test_cli_refuses_bad_values(capsys, args, expected):
    text = _cli_error(capsys, "--config", DIGITS, *args)
    for piece in expected:
        assert piece in text
    assert "Traceback" not in text


def test_cli_prior_error_is_only_ours(capsys):
    """A bad prior value prints our one-line reason, not jsonargparse's list of Union subtypes."""
    text = _cli_error(capsys, "--config", DIGITS, "--model.prior.sigma", "-1")
    assert "error: invalid configuration: prior.sigma must be a finite number > 0, got -1.0" in text
    assert "Union" not in text and "NoneType" not in text


def _csv_config(tmp_path: Path, csv: Path, target: str) -> Path:
    config = tmp_path / "csv.yaml"
    config.write_text(
        "trainer:\n  max_epochs: 1\n  accelerator: cpu\n"
        "model:\n  hidden_sizes: [8]\n"
        "data:\n  class_path: lightning_bnn.data.tabular.CSVDataModule\n"
        f"  init_args:\n    path: {csv}\n    target: {target}\n    task: regression\n"
    )
    return config


@pytest.mark.parametrize(
    ("column", "target", "expected"),
    [
        ("ok", "price", "data.target: column 'price' not in"),
        ("text", "y", "feature column(s) ['b'] are not numeric"),
        ("nan", "y", "feature column 'b' has a missing or infinite value at row 5"),
    ],
)
def test_cli_csv_errors(tmp_path, capsys, column, target, expected):
    rows = 20
    b = np.linspace(0, 1, rows).astype(object)
    if column == "text":
        b[2] = "oops"
    if column == "nan":
        b[3] = ""
    csv = tmp_path / "data.csv"
    csv.write_text("a,b,y\n" + "".join(f"{i},{b[i]},{2 * i}\n" for i in range(rows)))
    with pytest.raises(CSVDataError, match=expected.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        CSVDataModule(str(csv), target=target).setup()
    text = _cli_error(capsys, "--config", str(_csv_config(tmp_path, csv, target)))
    assert expected in text
