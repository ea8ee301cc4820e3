"""Compare: learning curves, a scatter of two final metrics, the params that differ, and sweeps."""

import streamlit as st

from dashboard import charts, runs
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
        storage = st.text_input(
            "Optuna storage",
            value=sweep_row["storage"] or "",
            key="sweep_storage",
            help="The run records the URL without its password: type it here, or set PGPASSWORD for PostgreSQL.",
        )
        try:
            study = shared.study(storage, sweep_row["study"])
        except runs.StoreError as err:
            st.error(str(err))
            st.stop()
        study_metric = sweep_row["metric"] or "objective"
        trials = runs.study_trials(study)
        st.caption(
            f"Study `{sweep_row['study']}` · {len(trials)} trials · "
            + " · ".join(f"{n} {s.lower()}" for s, n in trials["state"].value_counts().items())
            if not trials.empty
            else f"Study `{sweep_row['study']}` has no trials yet."
        )
        if trials.empty or "COMPLETE" not in set(trials["state"]):
            st.info("This study has no complete trials yet.")
        else:
            left, right = st.columns(2)
            left.plotly_chart(charts.optimisation_history(study, study_metric), key="study_history")
            importances = charts.param_importances(study, study_metric)
            if importances is None:
                right.info("Parameter importances need two complete trials with different values.")
            else:
                right.plotly_chart(importances, key="study_importances")
            st.plotly_chart(charts.parallel_coordinates(study, study_metric), key="study_parallel")
            names = [c for c in trials.columns if c not in ("number", "state", "value", "run_id", "duration_s")]
            pair = st.multiselect(
                "One field (slice) or two (contour)", names, default=names[:2], max_selections=2, key="study_pair"
            )
            if pair:
                st.plotly_chart(charts.two_fields(study, study_metric, pair), key="study_pair_chart")
        st.dataframe(
            trials,
            hide_index=True,
            key="study_trials",
            on_select="rerun",
            selection_mode="multi-row",
            column_config={"value": st.column_config.NumberColumn(study_metric, format="%.4f")},
        )
        rows = (st.session_state.get("study_trials") or {}).get("selection", {}).get("rows", [])
        picked = [r for r in trials.iloc[rows]["run_id"] if isinstance(r, str)] if rows else []
        if st.button("Open the ticked trials' runs in Run detail", disabled=not picked, key="study_open"):
            shared.set_selected_runs(picked)
            st.switch_page("views/run_detail.py")
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
