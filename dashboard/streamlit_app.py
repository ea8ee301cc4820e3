"""lightning-bnn dashboard: ``streamlit run dashboard`` (from the repository root).

The page scripts live in ``views/``, not ``pages/``: Streamlit treats a ``pages/`` folder
beside the entry script as a legacy multipage app until ``st.navigation`` first runs,
so a fresh server opened directly at a page URL (``/predict``) would run that page
without this entry script.

The entry script only sets up the page, the navigation and the sidebar's tracking
URI and stalled-run threshold; each page lives in ``dashboard/views/`` and calls plain modules
(:mod:`dashboard.runs`, :mod:`dashboard.charts`, :mod:`dashboard.inputs`,
:mod:`dashboard.predictions`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# A dashboard must answer quickly: MLflow's HTTP client otherwise retries a dead server for minutes.
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "15")

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `streamlit run dashboard` puts only dashboard/ on the path
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from dashboard import runs  # noqa: E402
from dashboard.views._shared import STALLED_AFTER, URI  # noqa: E402
from lightning_bnn.tracking.heartbeat import DEFAULT_STALLED_AFTER_MIN  # noqa: E402

st.set_page_config(page_title="lightning-bnn", page_icon=":material/casino:", layout="wide")

PAGES = [
    st.Page("views/runs.py", title="Runs", icon=":material/table_rows:", default=True),
    st.Page("views/compare.py", title="Compare", icon=":material/monitoring:"),
    st.Page("views/run_detail.py", title="Run detail", icon=":material/biotech:"),
    st.Page("views/predict.py", title="Predict", icon=":material/target:"),
]
page = st.navigation(PAGES)


def _default_uri() -> str:
    try:
        return runs.resolve_uri(None)
    except runs.StoreError:
        return ""


with st.sidebar:
    st.markdown("### lightning-bnn")
    typed = st.text_input(
        "MLflow tracking URI",
        value=_default_uri(),
        key="tracking_uri",
        help="sqlite:///path/to/mlflow.db or http://host:port; defaults to $MLFLOW_TRACKING_URI "
        "or sqlite:///mlruns/mlflow.db",
    )
    st.number_input(
        "Stalled after (min)",
        min_value=0.1,
        value=DEFAULT_STALLED_AFTER_MIN,
        step=1.0,
        key=STALLED_AFTER,
        help="A RUNNING run with no heartbeat for this many minutes shows as STALLED (its process was "
        "probably killed). `python -m lightning_bnn runs --mark-stalled` ends such runs KILLED.",
    )
    selected = st.session_state.get("selected_runs") or []
    st.caption(f"{len(selected)} run(s) selected" if selected else "No runs selected (choose them on Runs).")

try:
    st.session_state[URI] = runs.resolve_uri(typed)
except runs.StoreError as err:
    st.session_state[URI] = None
    st.error(f"Tracking URI not usable: {err}. Set a usable MLflow tracking URI in the sidebar.")
else:
    page.run()
