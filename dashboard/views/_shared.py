"""The Streamlit edge shared by the pages: cached loaders, the selected runs, error display.

Loading and computing live in :mod:`dashboard.runs` and :mod:`dashboard.predictions`;
this module only wraps them in Streamlit caches (models per run with
``st.cache_resource``, tables with a short TTL) and turns known errors into messages.
"""

from __future__ import annotations

from datetime import datetime

import pandas as pd
import streamlit as st

from dashboard import runs
from lightning_bnn.tracking.heartbeat import DEFAULT_STALLED_AFTER_MIN

SELECTED = "selected_runs"
URI = "resolved_tracking_uri"
#: the sidebar's threshold (minutes) after which a RUNNING run without a heartbeat is STALLED
STALLED_AFTER = "stalled_after_min"


def tracking_uri() -> str:
    """The resolved tracking URI chosen in the sidebar (set by the entry script)."""
    return st.session_state[URI]


def stalled_after() -> float:
    """Minutes without a heartbeat after which a RUNNING run shows as STALLED (the sidebar's number)."""
    return float(st.session_state.get(STALLED_AFTER) or DEFAULT_STALLED_AFTER_MIN)


def selected_runs() -> list[str]:
    """Run ids carried between pages (chosen on the Runs page)."""
    return list(st.session_state.get(SELECTED, []))


def set_selected_runs(run_ids: list[str]) -> None:
    st.session_state[SELECTED] = list(run_ids)


@st.cache_data(ttl=5, show_spinner=False)
def runs_table(uri: str, stalled_after_min: float = DEFAULT_STALLED_AFTER_MIN) -> tuple[pd.DataFrame, datetime]:
    return runs.list_runs(uri, stalled_after_min=stalled_after_min), datetime.now()


@st.cache_data(ttl=10, show_spinner=False)
def metric_keys(uri: str, run_ids: tuple[str, ...]) -> list[str]:
    return runs.metric_keys(uri, list(run_ids))


@st.cache_data(ttl=10, show_spinner=False)
def metric_history(uri: str, run_ids: tuple[str, ...], key: str) -> pd.DataFrame:
    return runs.metric_history(uri, list(run_ids), key)


@st.cache_data(ttl=10, show_spinner=False)
def run_params(uri: str, run_ids: tuple[str, ...]) -> pd.DataFrame:
    return runs.run_params(uri, list(run_ids))


@st.cache_data(ttl=10, show_spinner=False)
def run_info(uri: str, run_id: str) -> dict:
    return runs.run_info(uri, run_id)


@st.cache_data(ttl=60, show_spinner=False)
def json_artifact(uri: str, run_id: str, path: str):
    return runs.read_json_artifact(uri, run_id, path)


@st.cache_data(ttl=60, show_spinner=False)
def train_sample(uri: str, run_id: str) -> pd.DataFrame:
    return runs.read_train_sample(uri, run_id)


@st.cache_data(ttl=30, show_spinner=False)
def sweeps(uri: str) -> pd.DataFrame:
    return runs.list_sweeps(uri)


@st.cache_data(ttl=10, show_spinner=False)
def sweep_trials(uri: str, parent: str, fields: tuple[str, ...]) -> pd.DataFrame:
    return runs.sweep_trials(uri, parent, list(fields))


@st.cache_resource(ttl=10, max_entries=4, show_spinner=False)
def study(storage: str, name: str):
    return runs.load_study(storage, name)


@st.cache_data(ttl=10, show_spinner=False)
def registered_models(uri: str) -> pd.DataFrame:
    return runs.registered_models(uri)


@st.cache_resource(max_entries=8, show_spinner="Loading the model...")
def model(uri: str, run_id: str):
    return runs.load_run_model(uri, run_id)


@st.cache_data(max_entries=4, show_spinner="Loading test examples...")
def test_examples(uri: str, run_id: str):
    config = runs.read_text_artifact(uri, run_id, "config.yaml")
    from dashboard import predictions  # torch: imported by the pages that predict, not by the Runs page

    return predictions.test_examples(config)


def run_label(table: pd.DataFrame):
    """A format_func showing "name · dataset · id" for run ids of ``table``."""
    names = dict(zip(table["run_id"], table["run_name"]))
    datasets = dict(zip(table["run_id"], table.get("dataset", pd.Series(dtype=object))))

    def label(run_id: str) -> str:
        return f"{names.get(run_id, run_id)} · {datasets.get(run_id) or '?'} · {run_id[:8]}"

    return label


def load_runs_or_stop() -> pd.DataFrame:
    """The runs table, or an error message and the end of this page."""
    try:
        table, _ = runs_table(tracking_uri(), stalled_after())
    except runs.StoreError as err:
        st.error(f"Tracking store unavailable: {err}")
        st.stop()
    if table.empty:
        st.info("No runs in this store yet. Open the **Runs** page to train the two demo runs.")
        st.stop()
    return table


def pick_run(table: pd.DataFrame, key: str, label: str = "Run") -> str:
    """A selectbox of runs, defaulting to the first selected run."""
    ids = list(table["run_id"])
    chosen = [r for r in selected_runs() if r in ids]
    index = ids.index(chosen[0]) if chosen else 0
    return st.selectbox(label, ids, index=index, format_func=run_label(table), key=key)


def run_page(title: str, key: str) -> tuple[str, pd.DataFrame, str]:
    """The head of a one-run page: its title, the runs table (or a message and stop) and the picked run.

    Returns:
        (tracking URI, runs table, picked run id).
    """
    st.title(title)
    table = load_runs_or_stop()
    return tracking_uri(), table, pick_run(table, key=key)


def pick_runs(table: pd.DataFrame, key: str, default_count: int = 3, max_selections: int | None = None) -> list[str]:
    """A multiselect of runs, defaulting to the selected runs (else the newest few); writes back the choice."""
    ids = list(table["run_id"])
    default = ([r for r in selected_runs() if r in ids] or ids[:default_count])[:max_selections]

    def sync() -> None:
        set_selected_runs(st.session_state[key])

    most = {"max_selections": max_selections}
    return st.multiselect("Runs", ids, default, format_func=run_label(table), key=key, on_change=sync, **most)


#: most models the Predict page compares at once
MAX_MODELS = 4
REGISTER_HINT = "python -m lightning_bnn register RUN_ID --name NAME --alias champion"


def pick_models(table: pd.DataFrame, key: str) -> dict[str, str]:
    """Runs, or registered models (``NAME@alias``, ``NAME vN``), to predict with: ``{label: run id}``."""
    source = st.radio("Models from", ["Runs", "Registered models"], horizontal=True, key=f"{key}_source")
    if source == "Runs":
        ids = pick_runs(table, key=f"{key}_runs", default_count=1, max_selections=MAX_MODELS)
        return {label: run_id for run_id, label in runs.model_labels(table, ids).items()}
    try:
        registry = registered_models(tracking_uri())
    except runs.StoreError as err:
        st.error(f"Model registry unavailable: {err}")
        return {}
    if registry.empty:
        st.info(f"No registered models in this store yet. Register a run's model: `{REGISTER_HINT}`.")
        return {}
    labels = list(registry["label"])
    picked = st.multiselect(
        "Registered models", labels, default=labels[:1], key=f"{key}_registered", max_selections=MAX_MODELS
    )
    run_of = dict(zip(registry["label"], registry["run_id"]))
    return {label: run_of[label] for label in picked}


def load_models(uri: str, chosen: dict[str, str]) -> dict:
    """The chosen runs' models (``{label: module}``); a run that cannot be used gives a message and is left out."""
    models = {}
    for label, run_id in chosen.items():
        try:
            models[label] = model(uri, run_id)
        except (runs.RunLoadError, runs.StoreError) as err:
            st.error(f"Cannot use this run ({label}): {err}")
    return models
