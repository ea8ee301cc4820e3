"""Where runs are stored: the tracking URI, decided here and nowhere else (no torch, no Lightning, no MLflow).

Kept apart from :mod:`lightning_bnn.tracking.store` so that a reader of the store (the dashboard's
first screen) resolves the URI without importing torch and Lightning; ``store`` re-exports these names.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_STORE_DIR = "mlruns"
DEFAULT_TRACKING_URI = f"sqlite:///{DEFAULT_STORE_DIR}/mlflow.db"


def resolve_tracking_uri(uri: str | None = None) -> str:
    """The tracking URI to use: ``uri``, else ``$MLFLOW_TRACKING_URI``, else the local SQLite store.

    Relative SQLite paths are made absolute (against the current folder) and their
    folder is created, so a run's location does not depend on where it is read from.
    """
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI
    if uri.startswith("file:") or "://" not in uri:
        raise ValueError(
            f"tracking URI {uri!r} is a plain file store, which current MLflow refuses; "
            f"use a database such as {DEFAULT_TRACKING_URI} or an http(s):// server"
        )
    if uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///") :])
        if not path.is_absolute():
            path = Path.cwd() / path
        path.parent.mkdir(parents=True, exist_ok=True)
        uri = f"sqlite:///{path}"
    return uri
