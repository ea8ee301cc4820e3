"""Runs: the table of all runs; selecting rows carries them to the other pages."""

import streamlit as st

from dashboard import demo, runs
from dashboard.views import _shared as shared

uri = shared.tracking_uri()
st.title("Runs")


def empty_store() -> None:
    """First screen of an empty store: how to train, and a button that trains the demos."""
    st.subheader("Welcome! This store has no runs yet")
    st.markdown(
        f"The dashboard reads the MLflow store at `{uri}`. Train a Bayes-by-Backprop network from the "
        "repository root, for example:"
    )
    st.code(
        "python -m lightning_bnn fit --config lightning_bnn/configs/toy_regression.yaml\n"
        "python -m lightning_bnn fit --config lightning_bnn/configs/digits.yaml\n"
        "# another store: add --mlflow.tracking_uri sqlite:///path/to/mlflow.db",
        language="bash",
    )
    st.markdown(
        "Or train the **two demo runs** here: the paper's 1-D regression curve and scikit-learn's 8x8 digits "
        "(about a minute on 2 CPU cores)."
    )
    if st.button("Train the two demo runs", type="primary", key="train_demos"):
        bar = st.progress(0.0, text="Starting the demo runs...")
        try:
            names = demo.train_demos(uri, on_progress=lambda fraction, text: bar.progress(fraction, text=text))
        except demo.DemoError as err:
            st.error(f"Demo training failed: {err}")
            return
        shared.runs_table.clear()
        bar.progress(1.0, text="Done")
        st.success(f"Trained {', '.join(names)}.")
        st.rerun()


try:
    table, fetched = shared.runs_table(uri, shared.stalled_after())
except runs.StoreError as err:
    st.error(f"Tracking store unavailable: {err}")
    st.stop()

if table.empty:
    empty_store()
    st.stop()

running = int((table["status"] == "RUNNING").sum())
left, right = st.columns([3, 1])
text = left.text_input("Filter", placeholder="name, dataset, prior, estimator...", key="runs_filter")
statuses = right.multiselect("Status", sorted(table["status"].unique()), key="runs_status")
shown = runs.filter_runs(table, text, statuses).reset_index(drop=True)


def on_select() -> None:
    """Carry the ticked rows to the other pages."""
    rows = st.session_state["runs_table"]["selection"]["rows"]
    ids = st.session_state.get("runs_table_ids", [])
    shared.set_selected_runs([ids[i] for i in rows if i < len(ids)])


def table_view() -> None:
    """The runs table, its last-updated time and the selection."""
    current, when = shared.runs_table(uri, shared.stalled_after())
    view = runs.filter_runs(current, text, statuses).reset_index(drop=True)
    st.session_state["runs_table_ids"] = list(view["run_id"])
    columns = [c for c in view.columns if c not in ("sweep", "parent_run_id")]
    st.dataframe(
        view[columns],
        key="runs_table",
        on_select=on_select,
        selection_mode="multi-row",
        hide_index=True,
        column_config={
            "run_id": st.column_config.TextColumn("run id", width="small"),
            "start_time": st.column_config.DatetimeColumn("started", format="YYYY-MM-DD HH:mm:ss"),
            "duration_s": st.column_config.NumberColumn("duration (s)", format="%.1f"),
            "heartbeat": st.column_config.DatetimeColumn("last heartbeat", format="YYYY-MM-DD HH:mm:ss"),
            **{k: st.column_config.NumberColumn(k, format="%.4f") for k in runs.KEY_METRICS if k in view},
        },
    )
    live = int((current["status"] == "RUNNING").sum())
    note = f" · {live} running, refreshing every 5 s" if live else ""
    stalled = int((current["status"] == runs.STALLED).sum())
    note += f" · {stalled} stalled (no heartbeat for {shared.stalled_after():g} min)" if stalled else ""
    st.caption(f"{len(view)} of {len(current)} runs · last updated {when:%H:%M:%S}{note}")
    chosen = shared.selected_runs()
    if chosen:
        st.success(f"Selected {len(chosen)} run(s): open **Compare**, **Run detail** or **Predict** to use them.")
    else:
        st.info("Tick rows in the table to select runs for the other pages.")


if running:  # poll while runs train: only the table reruns, every 5 s
    st.fragment(run_every=5)(table_view)()
else:
    table_view()

cols = st.columns(4)
cols[0].page_link("views/compare.py", label="Compare runs", icon=":material/monitoring:")
cols[1].page_link("views/run_detail.py", label="Run detail", icon=":material/biotech:")
cols[2].page_link("views/predict.py", label="Predict", icon=":material/target:")
if cols[3].button("Refresh now", key="runs_refresh"):
    shared.runs_table.clear()
    st.rerun()
