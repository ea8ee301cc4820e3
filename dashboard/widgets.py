"""Streamlit pieces the Predict page composes: result cards, the fan chart, download buttons.

Pages stay scripts of widgets; the logic these call lives in :mod:`dashboard.predictions`,
:mod:`dashboard.inputs` and :mod:`dashboard.charts` (no Streamlit there, unit-tested).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import streamlit as st

from dashboard import charts, inputs, predictions, runs


def offer_download(frame: pd.DataFrame, run_id: str, key: str) -> None:
    """A button that downloads the results table as CSV."""
    st.download_button(
        "Download results (CSV)",
        predictions.to_csv_bytes(frame),
        file_name=f"predictions-{run_id[:8]}.csv",
        mime="text/csv",
        key=key,
    )


def show_classification(
    result: predictions.ClassificationResult,
    names: list[str],
    run_id: str,
    previews: list | None = None,
    captions: list[str] | None = None,
    warnings: list[tuple[str, ...]] | None = None,
) -> None:
    """Per input: preview, sampled class distribution, uncertainty split and point estimate; CSV download."""
    offer_download(predictions.classification_table(result, names), run_id, "download_classification")
    for i, name in enumerate(names):
        with st.container(border=True):
            st.markdown(f"**{name}**")
            for message in warnings[i] if warnings else ():
                st.warning(f"{name}: {message}")
            left, middle, right = st.columns([1, 3, 2])
            if previews is not None:
                left.image(inputs.upscale(previews[i]), caption=captions[i] if captions else None, clamp=True)
            k = int(result.predicted[i])
            kp = int(result.point_predicted[i])
            right.metric("Predicted class", result.class_names[k])
            right.markdown(f"p = **{result.mean[i, k]:.3f}** ± {result.std[i, k]:.3f} across samples")
            right.metric("Predictive entropy (nats)", f"{result.predictive_entropy[i]:.3f}")
            a, b = right.columns(2)
            a.metric("Aleatoric", f"{result.expected_entropy[i]:.3f}", help="expected entropy (nats)")
            b.metric("Epistemic", f"{result.mutual_information[i]:.3f}", help="mutual information (nats)")
            right.metric(
                "Point estimate",
                f"{result.class_names[kp]} (p = {result.point_probs[i, kp]:.3f})",
                help="the network with every weight at its posterior mean: one deterministic answer",
            )
            middle.plotly_chart(charts.class_distribution(result, i), key=f"dist_{i}")
            middle.plotly_chart(charts.uncertainty_split(result, i), key=f"split_{i}")


def show_regression(result: predictions.RegressionResult, frame: pd.DataFrame, run_id: str) -> None:
    """The table of all rows, then one row's sampled predictive distribution in detail."""
    out = predictions.regression_table(result, frame)
    offer_download(out, run_id, "download_regression")
    row = 0
    if len(out) > 1:
        st.dataframe(out, hide_index=True, key="regression_table")
        row = st.selectbox("Row to inspect", list(range(len(out))), key="regression_row")
    name = result.target_names[0]
    cols = st.columns(4)
    cols[0].metric(f"Mean {name}", f"{result.mean[row, 0]:.4g}")
    cols[1].metric(
        "Std",
        f"{result.std[row, 0]:.4g}",
        help=f"aleatoric {result.aleatoric_std[row, 0]:.3g}, epistemic {result.epistemic_std[row, 0]:.3g}",
    )
    cols[2].metric("95% interval", f"[{result.lower[row, 0]:.4g}, {result.upper[row, 0]:.4g}]")
    cols[3].metric("Point estimate", f"{result.point_mean[row, 0]:.4g}")
    if f"{name}_quantile" in out and np.isfinite(out[f"{name}_quantile"][row]):  # the target was uploaded too
        st.metric(
            f"Observed {name} {out[name][row]:.4g} falls at",
            f"quantile {out[f'{name}_quantile'][row]:.3f}",
            f"z = {out[f'{name}_z'][row]:+.2f}, " + ("inside" if out[f"{name}_in_95"][row] else "outside") + " the 95%",
            delta_color="off",
        )
    st.plotly_chart(charts.regression_distribution(result, row), key="regression_dist")


def show_result(result, names: list[str], frame: pd.DataFrame, run_id: str) -> None:
    """:func:`show_classification` or :func:`show_regression`, by the result's type."""
    if isinstance(result, predictions.RegressionResult):
        show_regression(result, frame, run_id)
    else:
        show_classification(result, names, run_id)


def show_predictions(
    results: dict,
    names: list[str],
    run_ids: dict[str, str],
    frame: pd.DataFrame | None = None,
    previews: list | None = None,
    captions: list[str] | None = None,
    warnings: list[tuple[str, ...]] | None = None,
) -> None:
    """One model's results in detail, or several models' side by side (the same inputs for each).

    Args:
        results: model label -> its :class:`~dashboard.predictions.ClassificationResult` or
            :class:`~dashboard.predictions.RegressionResult` (all of one kind).
        names: a name per input.
        run_ids: model label -> run id.
        frame: the table rows predicted (tabular inputs).
        previews: per image input, its pixels as the model sees them.
        captions: per image input, how it was processed.
        warnings: per image input, why it may hold nothing to classify.
    """
    (label, result), *others = results.items()
    if not others:
        if isinstance(result, predictions.RegressionResult):
            show_regression(result, frame, run_ids[label])
        else:
            show_classification(result, names, run_ids[label], previews, captions, warnings)
    elif isinstance(result, predictions.RegressionResult):
        compare_regression(results, frame, run_ids)
    else:
        compare_classification(results, names, run_ids, previews, captions, warnings)


def _comparison_download(table: pd.DataFrame, key: str) -> None:
    st.download_button(
        "Download the comparison (CSV)",
        predictions.to_csv_bytes(table),
        file_name="comparison.csv",
        mime="text/csv",
        key=key,
    )


def compare_classification(
    results: dict[str, predictions.ClassificationResult],
    names: list[str],
    run_ids: dict[str, str],
    previews: list | None = None,
    captions: list[str] | None = None,
    warnings: list[tuple[str, ...]] | None = None,
) -> None:
    """Per input: each model's answer in its own column, the sampled class probabilities and the entropy split."""
    table = predictions.compare_classification(results, names, run_ids)
    _comparison_download(table, "download_comparison")
    num_classes = len(next(iter(results.values())).class_names)
    for i, name in enumerate(names):
        rows = table[table["input_index"] == i]
        with st.container(border=True):
            st.markdown(f"**{name}**")
            for message in warnings[i] if warnings else ():
                st.warning(f"{name}: {message}")
            columns = st.columns([1] + [2] * len(rows))
            if previews is not None:
                columns[0].image(inputs.upscale(previews[i]), caption=captions[i] if captions else None, clamp=True)
            for column, row in zip(columns[1:], rows.itertuples(index=False)):
                column.markdown(f"**{row.model}**")
                column.metric("Predicted class", row.predicted_class)
                column.markdown(f"p = **{row.probability:.3f}** ± {row.probability_std:.3f} across samples")
                column.metric("Predictive entropy (nats)", f"{row.predictive_entropy:.3f}")
                a, b = column.columns(2)
                a.metric("Aleatoric", f"{row.aleatoric_expected_entropy:.3f}", help="expected entropy (nats)")
                b.metric("Epistemic", f"{row.epistemic_mutual_information:.3f}", help="mutual information (nats)")
            left, right = st.columns([3, 2])
            left.plotly_chart(charts.compare_class_distribution(results, i), key=f"compare_dist_{i}")
            right.plotly_chart(charts.compare_uncertainty(rows, num_classes), key=f"compare_split_{i}")
    with st.expander("Comparison table"):
        st.dataframe(table, hide_index=True, key="comparison_table")


def compare_regression(
    results: dict[str, predictions.RegressionResult], frame: pd.DataFrame, run_ids: dict[str, str]
) -> None:
    """The tidy table of every row and model, then one row's predictive distributions side by side."""
    table = predictions.compare_regression(results, frame, run_ids)
    _comparison_download(table, "download_comparison")
    st.dataframe(table, hide_index=True, key="comparison_table")
    row = st.selectbox("Row to inspect", list(range(len(frame))), key="regression_row") if len(frame) > 1 else 0
    rows = table[table["input_index"] == row]
    name = next(iter(results.values())).target_names[0]
    for column, item in zip(st.columns(len(rows)), rows.to_dict("records")):
        column.markdown(f"**{item['model']}**")
        column.metric(f"Mean {name}", f"{item[f'{name}_mean']:.4g}")
        column.metric(
            "Std",
            f"{item[f'{name}_std']:.4g}",
            help=f"aleatoric {item[f'{name}_aleatoric_std']:.3g}, epistemic {item[f'{name}_epistemic_std']:.3g}",
        )
        column.metric("95% interval", f"[{item[f'{name}_lower95']:.4g}, {item[f'{name}_upper95']:.4g}]")
    st.plotly_chart(charts.compare_regression(rows, name), key="compare_regression")


def fan_chart(module, num_samples: int, train_sample: Callable[[], pd.DataFrame]) -> None:
    """Fan chart of sampled functions over an x range, with the training data when logged."""
    pre = module.preprocessing
    st.subheader("Sampled functions over an x range")
    feature, target = pre.feature_names[0], module.output_names()[0]
    low, high = predictions.fan_range(pre)
    c1, c2 = st.columns(2)
    x_low = c1.number_input(f"{feature} from", value=low, format="%.3f", key="fan_low")
    x_high = c2.number_input(f"{feature} to", value=high, format="%.3f", key="fan_high")
    try:
        data = predictions.fan_chart_data(module, float(x_low), float(x_high), num_samples)
    except ValueError as err:
        st.error(f"Cannot draw the fan chart: {err}")
        return
    try:
        train = train_sample()
        if feature not in train or target not in train:
            st.caption(f"The logged training sample has no '{feature}'/'{target}' columns; not overlaid.")
            train = None
    except runs.ArtifactMissing:
        st.caption("Training data not logged for this run (data/train_sample.csv); the shaded band is its x range.")
        train = None
    st.plotly_chart(charts.fan_chart(data, train, pre.train_range, feature, target), key="fan_chart")
    spread = data["std"]
    st.caption(
        f"Predictive std ranges from {spread.min():.3g} to {spread.max():.3g} over this range "
        f"(largest at {feature} = {data['x'][int(spread.argmax())]:.3g})."
    )


def study_view(sweep_row: pd.Series, load_study: Callable, select_runs: Callable[[list[str]], None]) -> None:
    """An Optuna study: its history, importances, parallel coordinates, a slice or contour, and its trials.

    Args:
        sweep_row: the sweep's row of :func:`dashboard.runs.list_sweeps`.
        load_study: ``(storage URL, study name) -> optuna.Study`` (cached by the page).
        select_runs: carries the ticked trials' runs to the other pages.
    """
    storage = st.text_input(
        "Optuna storage",
        value=sweep_row["storage"] or "",
        key="sweep_storage",
        help="The run records the URL without its password: type it here, or set PGPASSWORD for PostgreSQL.",
    )
    try:
        study = load_study(storage, sweep_row["study"])
    except runs.StoreError as err:
        st.error(str(err))
        return
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
        select_runs(picked)
        st.switch_page("views/run_detail.py")
