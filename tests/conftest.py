"""Shared fixtures: temporary MLflow stores and small real training runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from bnn_testing import CONFIGS, train


@pytest.fixture(autouse=True)
def _no_ambient_tracking_uri(monkeypatch):
    """Tests never write to a store named by the environment."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture
def tracking_uri(tmp_path: Path) -> str:
    """A fresh SQLite MLflow store in a temp folder."""
    (tmp_path / "mlruns").mkdir()
    return f"sqlite:///{tmp_path}/mlruns/mlflow.db"


@pytest.fixture(scope="session")
def digits_cli(tmp_path_factory):
    """(tracking_uri, finished LightningCLI) of the shared digits run: its in-memory model (read-only!)."""
    root = tmp_path_factory.mktemp("digits_store")
    (root / "mlruns").mkdir()
    uri = f"sqlite:///{root}/mlruns/mlflow.db"
    cli = train(CONFIGS / "digits.yaml", uri, "--trainer.max_epochs", "3", "--model.hidden_sizes", "[32]")
    return uri, cli


@pytest.fixture(scope="session")
def digits_run(digits_cli) -> tuple[str, str]:
    """(tracking_uri, run_id) of one small real digits run, shared by the session (read-only!)."""
    uri, cli = digits_cli
    return uri, cli.trainer.logger.run_id


@pytest.fixture(scope="session")
def toy_run(tmp_path_factory) -> tuple[str, str]:
    """(tracking_uri, run_id) of one small real toy-regression run, shared by the session (read-only!)."""
    root = tmp_path_factory.mktemp("toy_store")
    (root / "mlruns").mkdir()
    uri = f"sqlite:///{root}/mlruns/mlflow.db"
    cli = train(CONFIGS / "toy_regression.yaml", uri, "--trainer.max_epochs", "5", "--model.hidden_sizes", "[16]")
    return uri, cli.trainer.logger.run_id
