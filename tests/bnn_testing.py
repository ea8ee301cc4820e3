"""Helpers shared by the test suite (a plain module: test files import it, never ``conftest``)."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "lightning_bnn" / "configs"


def fit_args(config: str | Path, uri: str, *extra: str) -> list[str]:
    """LightningCLI arguments for a quiet ``fit`` into the store ``uri``."""
    return [
        "fit",
        "--config",
        str(config),
        "--mlflow.tracking_uri",
        uri,
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.enable_model_summary",
        "false",
        *extra,
    ]


def train(config: str | Path, uri: str, *extra: str):
    """Train in-process through the real CLI; returns the finished LightningCLI."""
    from lightning_bnn.cli import main

    return main(fit_args(config, uri, *extra))
