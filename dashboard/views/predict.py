"""Predict: give a run inputs and see the sampled prediction distribution, next to a point estimate."""

import numpy as np
import pandas as pd
import streamlit as st

from dashboard import charts, inputs, predictions, runs
from dashboard.views import _shared as shared

uri = shared.tracking_uri()
st.title("Predict")
table = shared.load_runs_or_stop()
run_id = shared.pick_run(table, key="predict_run")

try:
    module = shared.model(uri, run_id)
except (runs.RunLoadError, runs.StoreError) as err:
    st.error(f"Cannot use this run: {err}")
    st.stop()

hp = module.hparams
pre = dict(hp.preprocessing or {})
num_samples = st.slider(
    "Posterior samples S",
    predictions.MIN_SAMPLES,
    predictions.MAX_SAMPLES,
    100,
    key="num_samples",
    help="Each sample draws new weights from the posterior q(w); more samples give smoother distributions.",
)
st.caption(
    f"{hp.task} model · {hp.layer_type} {hp.architecture} {list(hp.hidden_sizes)} · input {list(hp.input_shape)}"
)


def offer_download(frame: pd.DataFrame, key: str) -> None:
    """A button that downloads the results table as CSV."""
    st.download_button(
        "Download results (CSV)",
        predictions.to_csv_bytes(frame),
        file_name=f"predictions-{run_id[:8]}.csv",
        mime="text/csv",
        key=key,
    )


def show_classification(result, names, previews=None, captions=None) -> None:
    """Per input: preview, sampled class distribution, uncertainty split and point estimate; CSV download."""
    offer_download(predictions.classification_table(result, names), "download_classification")
    for i, name in enumerate(names):
        with st.container(border=True):
            st.markdown(f"**{name}**")
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


def image_inputs() -> None:
    """Uploaded images or test-set examples of an image classifier."""
    source = st.radio("Inputs", ["Upload images", "Test-set examples"], horizontal=True, key="image_source")
    names, arrays, previews, captions = [], [], [], []
    if source == "Upload images":
        files = st.file_uploader(
            f"PNG or JPEG images, one {'digit' if pre.get('height') == 8 else 'item'} each (up to {inputs.MAX_IMAGES})",
            accept_multiple_files=True,
            key="image_upload",
            help="Any size or colours: they are converted to grayscale, cropped, resized to "
            f"{pre.get('height')}x{pre.get('width')} and inverted if the ink is dark on a light background.",
        )
        files = list(files or [])
        if len(files) > inputs.MAX_IMAGES:
            st.warning(f"{len(files)} images uploaded; predicting the first {inputs.MAX_IMAGES}.")
        for f in files[: inputs.MAX_IMAGES]:
            try:
                item = inputs.image_to_model_input(f.name, f.getvalue(), pre)
            except inputs.InputError as err:
                st.error(str(err))
                continue
            names.append(item.name)
            arrays.append(item.array)
            previews.append(item.preview)
            size = f"{item.original_size[0]}x{item.original_size[1]}"
            captions.append(f"processed from {size}" + (", inverted" if item.inverted else ""))
        if not files:
            st.info("Upload images to see the sampled class distribution.")
    else:
        try:
            x, y = shared.test_examples(uri, run_id)
        except (predictions.ExamplesUnavailable, runs.ArtifactMissing, runs.StoreError) as err:
            st.error(f"Test-set examples unavailable for this run: {err}")
            return
        labels = predictions.class_names(module)
        picked = st.multiselect(
            "Examples",
            list(range(len(x))),
            default=[0, 1, 2][: len(x)],
            key="examples",
            format_func=lambda i: f"#{i} (true class {labels[int(y[i])]})",
        )
        for i in picked[: inputs.MAX_IMAGES]:
            names.append(f"test example #{i} (true class {labels[int(y[i])]})")
            arrays.append(x[i])
            previews.append(inputs.pixels_from_model_input(x[i], pre))
            captions.append("as the model sees it")
    if arrays:
        result = predictions.classify(module, np.stack(arrays), num_samples)
        show_classification(result, names, previews, captions)


def regression_rows(frame: pd.DataFrame, features: list[str]) -> None:
    """Sampled predictive distribution of regression inputs (one row inspected in detail)."""
    x = inputs.standardise(frame[features].to_numpy(), pre)
    result = predictions.regress(module, x, num_samples)
    out = predictions.regression_table(result, frame)
    offer_download(out, "download_regression")
    if len(out) > 1:
        st.dataframe(out, hide_index=True, key="regression_table")
        row = st.selectbox("Row to inspect", list(range(len(out))), key="regression_row")
    else:
        row = 0
    name = result.target_names[0]
    cols = st.columns(4)
    cols[0].metric(f"Mean {name}", f"{result.mean[row, 0]:.4g}")
    cols[1].metric(
        "Std",
        f"{result.std[row, 0]:.4g}",
        help=(f"aleatoric {result.aleatoric_std[row, 0]:.3g}, epistemic {result.epistemic_std[row, 0]:.3g}"),
    )
    cols[2].metric("95% interval", f"[{result.lower[row, 0]:.4g}, {result.upper[row, 0]:.4g}]")
    cols[3].metric("Point estimate", f"{result.point_mean[row, 0]:.4g}")
    if f"{name}_quantile" in out and np.isfinite(out[f"{name}_quantile"][row]):
        st.metric(
            f"Observed {name} {out[name][row]:.4g} falls at",
            f"quantile {out[f'{name}_quantile'][row]:.3f}",
            f"z = {out[f'{name}_z'][row]:+.2f}, " + ("inside" if out[f"{name}_in_95"][row] else "outside") + " the 95%",
            delta_color="off",
        )
    st.plotly_chart(charts.regression_distribution(result, row), key="regression_dist")


def tabular_inputs() -> None:
    """Form values or an uploaded CSV for a tabular model (plus the fan chart for 1-D regression)."""
    features = list(pre.get("feature_names") or [f"x{i}" for i in range(int(hp.input_shape[0]))])
    targets = list(pre.get("target_names") or [])
    if hp.task == "regression" and len(features) == 1:
        fan()
    source = st.radio("Inputs", ["Enter values", "Upload CSV"], horizontal=True, key="tabular_source")
    if source == "Enter values":
        means = pre.get("feature_mean") or [0.0] * len(features)
        cols = st.columns(min(len(features), 4))
        values = {
            f: cols[i % len(cols)].number_input(f, value=float(means[i]), format="%.4f", key=f"feature_{i}")
            for i, f in enumerate(features)
        }
        try:
            raw = inputs.validate_form_values(values, features)
        except inputs.InputError as err:
            st.error(str(err))
            return
        frame = pd.DataFrame(raw, columns=features)
    else:
        upload = st.file_uploader(
            f"CSV with the columns {features} (up to {inputs.MAX_CSV_ROWS} rows)", key="csv_upload"
        )
        if upload is None:
            st.info(f"Upload a CSV whose header has the model's feature columns: {', '.join(features)}.")
            return
        try:
            frame = inputs.parse_feature_csv(upload.name, upload.getvalue(), features, targets)
        except inputs.InputError as err:
            st.error(str(err))
            return
    if hp.task == "regression":
        regression_rows(frame, features)
    else:
        x = inputs.standardise(frame[features].to_numpy(), pre)
        result = predictions.classify(module, x, num_samples)
        truth = next((t for t in targets if t in frame), None)
        names = [f"row {i + 1}" + (f" (true {truth}: {frame[truth][i]})" if truth else "") for i in range(len(frame))]
        show_classification(result, names)


def fan() -> None:
    """Fan chart of sampled functions over an x range, with the training data when logged."""
    st.subheader("Sampled functions over an x range")
    feature = (pre.get("feature_names") or ["x"])[0]
    target = (pre.get("target_names") or ["y"])[0]
    train_range = pre.get("train_range")
    if train_range:
        width = float(train_range[1]) - float(train_range[0])
        low, high = float(train_range[0]) - width, float(train_range[1]) + width
    else:
        mean, std = (pre.get("feature_mean") or [0.0])[0], (pre.get("feature_std") or [1.0])[0]
        low, high = mean - 3 * std, mean + 3 * std
    c1, c2 = st.columns(2)
    x_low = c1.number_input(f"{feature} from", value=low, format="%.3f", key="fan_low")
    x_high = c2.number_input(f"{feature} to", value=high, format="%.3f", key="fan_high")
    try:
        data = predictions.fan_chart_data(module, float(x_low), float(x_high), num_samples)
    except ValueError as err:
        st.error(f"Cannot draw the fan chart: {err}")
        return
    try:
        train = shared.train_sample(uri, run_id)
        columns_ok = feature in train and target in train
        if not columns_ok:
            st.caption(f"The logged training sample has no '{feature}'/'{target}' columns; not overlaid.")
            train = None
    except runs.ArtifactMissing:
        st.caption("Training data not logged for this run (data/train_sample.csv); the shaded band is its x range.")
        train = None
    st.plotly_chart(charts.fan_chart(data, train, train_range, feature, target), key="fan_chart")
    spread = data["std"]
    st.caption(
        f"Predictive std ranges from {spread.min():.3g} to {spread.max():.3g} over this range "
        f"(largest at {feature} = {data['x'][int(spread.argmax())]:.3g})."
    )


if pre.get("kind") == "image" and hp.task == "classification":
    image_inputs()
elif pre.get("kind") == "tabular":
    tabular_inputs()
else:
    st.warning(f"This run's model has no known input format (preprocessing kind {pre.get('kind')!r}).")
