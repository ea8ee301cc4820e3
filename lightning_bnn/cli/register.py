"""``python -m lightning_bnn register RUN_ID --name NAME [--alias champion]``: the MLflow model registry.

Registers the run's pyfunc model (its MLflow 3 LoggedModel, see
:func:`lightning_bnn.tracking.registry.register_run`) as a new version of ``NAME`` and prints the
URIs that name it, ready for ``mlflow models serve -m models:/NAME@champion --env-manager local``
(see docs/serving.md).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TextIO


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """``register RUN_ID --name NAME [--alias ALIAS]``: print the new version, return an exit code."""
    out = out or sys.stdout
    parser = argparse.ArgumentParser(
        prog="python -m lightning_bnn register",
        description="Register a run's pyfunc model in the MLflow model registry (a new version of NAME).",
    )
    parser.add_argument("run_id", help="MLflow run id (or runs:/<run_id>) of a finished training run")
    parser.add_argument("--name", "-n", required=True, help="registered model name, e.g. digits-bnn")
    parser.add_argument("--alias", "-a", default=None, help="alias to point at the new version, e.g. champion")
    parser.add_argument(
        "--tracking-uri", help="MLflow store (default $MLFLOW_TRACKING_URI or sqlite:///mlruns/mlflow.db)"
    )
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    from lightning_bnn.tracking.registry import RegistryError, register_run

    try:
        version = register_run(args.run_id, args.name, args.alias, args.tracking_uri)
    except RegistryError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"registered run {version.run_id} as {version.label}", file=out)
    print(f"  {version.version_uri}", file=out)
    for alias in version.aliases:
        print(f"  models:/{version.name}@{alias}", file=out)
    if version.model_id:
        print(f"  from the logged model models:/{version.model_id}", file=out)
    return 0
