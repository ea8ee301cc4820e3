"""Compare: learning curves, a scatter of two final metrics, the params that differ, and sweeps."""

import streamlit as st

from dashboard import charts, runs, widgets
from dashboard.views import _shared as shared

uri = shared.tracking_uri()
st.title("Compare runs")
table = shared.load_runs_or_stop()

chosen = shared.pick_runs(table, key="compare_runs")
if not chosen:
    st.info("Choose at least one run.")
else:
    try:
        keys = shared.metric_keys(uri, tuple(chosen))
    except runs.StoreError as err:
        st.error(f"Tracking store unavailable: {err}")
        keys = []

    st.subheader("Learning curves")
    if keys:
        preferred = next((k for k in ("val/acc", "val/rmse", "val/nll", "train/loss") if k in keys), keys[0])
        left, right = st.columns([3, 1])
        metric = left.selectbox("Metric", keys, index=keys.index(preferred), key="compare_metric")
        axis = right.radio("x axis", ["step", "epoch"], horizontal=True, key="compare_axis")
        history = shared.metric_history(uri, tuple(chosen), metric)
        if history.empty:
            st.info(f"None of the chosen runs logged {metric}.")
        else:
            st.plotly_chart(charts.learning_curves(history, metric, axis), key="curves")
    else:
        st.info("The chosen runs logged no metrics yet.")

    st.subheader("Final metrics")
    finals = table[table["run_id"].isin(chosen)]
    metric_columns = [c for c in runs.KEY_METRICS if c in finals and finals[c].notna().any()]
    params = shared.run_params(uri, tuple(chosen))
    differing = runs.params_diff(params)
    if len(metric_columns) >= 1:
        c1, c2, c3 = st.columns(3)
        x_metric = c1.selectbox("x", metric_columns, key="scatter_x")
        y_default = 1 if len(metric_columns) > 1 else 0
        y_metric = c2.selectbox("y", metric_columns, index=y_default, key="scatter_y")
        colour_options = ["(none)", *[p for p in differing.index]]
        colour = c3.selectbox("colour by param", colour_options, key="scatter_colour")
        data = finals.copy()
        if colour != "(none)":
            data[colour] = data["run_id"].map(params.loc[colour])
        st.plotly_chart(
            charts.metric_scatter(data, x_metric, y_metric, None if colour == "(none)" else colour), key="scatter"
        )
    else:
        st.info("The chosen runs have no final test/validation metrics yet.")

    st.subheader("Params that differ")
    if len(chosen) < 2:
        st.info("Choose two or more runs to see which params differ.")
    elif differing.empty:
        st.success("The chosen runs have identical params.")
    else:
        st.dataframe(differing.fillna("—").astype(str).rename(columns=shared.run_label(table)), key="params_diff")

st.divider()
st.subheader("Sweeps")
try:
    sweep_table = shared.sweeps(uri)
except runs.StoreError as err:
    st.error(f"Tracking store unavailable: {err}")
    st.stop()
if sweep_table.empty:
    st.caption("No sweeps in this store (`python -m lightning_bnn sweep ...` creates them).")
else:
    labels = {
        r.run_id: f"{r.run_name} · {r.experiment} · fields {', '.join(r.swept_fields)}"
        for r in sweep_table.itertuples()
    }
    parent = st.selectbox("Sweep", list(labels), format_func=labels.get, key="sweep_parent")
    sweep_row = sweep_table.set_index("run_id").loc[parent]
    fields = list(sweep_row["swept_fields"])
    if isinstance(sweep_row["study"], str):  # an Optuna study: its trials and Optuna's figures
        widgets.study_view(sweep_row, shared.study, shared.set_selected_runs)
    else:  # a sweep from before Optuna: the final metric against each field
        trials = shared.sweep_trials(uri, parent, tuple(fields))
        metric_options = [c for c in trials.columns if "/" in c]
        if trials.empty or not metric_options:
            st.info("This sweep has no finished trials with metrics yet.")
        else:
            preferred = next((k for k in ("test/acc", "val/acc", "test/rmse", "val/nll") if k in metric_options), None)
            sweep_metric = st.selectbox(
                "Final metric",
                metric_options,
                index=metric_options.index(preferred) if preferred else 0,
                key="sweep_metric",
            )
            st.plotly_chart(charts.sweep_chart(trials, sweep_metric, fields), key="sweep_chart")
            st.dataframe(trials[["run_name", "status", *fields, sweep_metric]], hide_index=True, key="sweep_trials")
