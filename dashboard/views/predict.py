"""Predict: give one or several models the same inputs and see their sampled predictions side by side."""

import pandas as pd
import streamlit as st

from dashboard import inputs, predictions, runs, widgets
from dashboard.views import _shared as shared
from lightning_bnn.data.preprocessing import ImagePreprocessing, TabularPreprocessing

st.title("Predict")
uri, table = shared.tracking_uri(), shared.load_runs_or_stop()
chosen = shared.pick_models(table, key="predict")
models = shared.load_models(uri, chosen)
if not models:
    st.info("Choose one or more runs (or registered models) whose model to ask.")
    st.stop()
try:
    predictions.check_comparable(models)
except predictions.ComparisonError as err:
    st.error(f"These models cannot answer the same inputs: {err}.")
    st.stop()
label, module = next(iter(models.items()))
run_id, pre = chosen[label], module.preprocessing
num_samples = st.slider(
    "Posterior samples S",
    predictions.MIN_SAMPLES,
    predictions.MAX_SAMPLES,
    100,
    key="num_samples",
    help="Each sample draws new weights from the posterior q(w); more samples give smoother distributions.",
)
for name, m in models.items():
    st.caption(predictions.describe_model(m) if len(models) == 1 else f"**{name}**: {predictions.describe_model(m)}")


def image_inputs() -> None:
    """Uploaded images or test-set examples, given to each model through its own preprocessing."""
    source = st.radio("Inputs", ["Upload images", "Test-set examples"], horizontal=True, key="image_source")
    names, arrays, previews, captions, warnings = [], {}, [], [], []
    if source == "Upload images":
        files = st.file_uploader(
            f"PNG or JPEG images, one {'digit' if pre.height == 8 else 'item'} each (up to {inputs.MAX_IMAGES})",
            accept_multiple_files=True,
            key="image_upload",
            help="Any size or colours: they are converted to grayscale, cropped, resized to "
            f"{pre.height}x{pre.width} and inverted if the ink is dark on a light background.",
        )
        files = list(files or [])
        if len(files) > inputs.MAX_IMAGES:
            st.warning(f"{len(files)} images uploaded; predicting the first {inputs.MAX_IMAGES}.")
        uploads = [(f.name, f.getvalue()) for f in files[: inputs.MAX_IMAGES]]
        items, errors, arrays = inputs.images_for_models(uploads, {k: m.preprocessing for k, m in models.items()})
        for message in errors:
            st.error(message)
        names, previews = [i.name for i in items], [i.preview for i in items]
        captions, warnings = [i.caption for i in items], [i.warnings for i in items]
        if not files:
            st.info("Upload images to see the sampled class distribution.")
    else:
        try:
            x, y = shared.test_examples(uri, run_id)
        except (predictions.ExamplesUnavailable, runs.ArtifactMissing, runs.StoreError) as err:
            st.error(f"Test-set examples unavailable for this run: {err}")
            return
        labels = predictions.example_labels(module, y)
        picked = st.multiselect(
            "Examples",
            list(range(len(x))),
            [0, 1, 2][: len(x)],
            key="examples",
            format_func=lambda i: f"#{i} ({labels[i]})",
        )[: inputs.MAX_IMAGES]
        names = [f"test example #{i} ({labels[i]})" for i in picked]
        previews, captions = [pre.to_pixels(x[i]) for i in picked], ["as the model sees it"] * len(picked)
        arrays = predictions.examples_for_models(models, x[picked]) if picked else {}
    if arrays:
        results = predictions.predict_all(models, arrays, num_samples)
        widgets.show_predictions(results, names, chosen, previews=previews, captions=captions, warnings=warnings)


def tabular_inputs() -> None:
    """Form values or an uploaded CSV for tabular models (plus the fan chart of one 1-D regression model)."""
    features = list(pre.feature_names)
    if len(models) == 1 and predictions.wants_fan_chart(module):
        widgets.fan_chart(module, num_samples, lambda: shared.train_sample(uri, run_id))
    source = st.radio("Inputs", ["Enter values", "Upload CSV"], horizontal=True, key="tabular_source")
    if source == "Enter values":
        cols = st.columns(min(len(features), 4))
        values = {
            f: cols[i % len(cols)].number_input(f, value=pre.feature_mean[i], format="%.4f", key=f"feature_{i}")
            for i, f in enumerate(features)
        }
        try:
            frame = pd.DataFrame(inputs.validate_form_values(values, features), columns=features)
        except inputs.InputError as err:
            st.error(str(err))
            return
    else:
        upload = st.file_uploader(
            f"CSV with the columns {features} (up to {inputs.MAX_CSV_ROWS} rows)", key="csv_upload"
        )
        if upload is None:
            st.info(f"Upload a CSV whose header has the model's feature columns: {', '.join(features)}.")
            return
        try:
            frame = inputs.parse_feature_csv(upload.name, upload.getvalue(), features, list(pre.target_names))
        except inputs.InputError as err:
            st.error(str(err))
            return
    arrays = {k: m.preprocessing.transform(frame[features]) for k, m in models.items()}
    results = predictions.predict_all(models, arrays, num_samples)
    widgets.show_predictions(results, predictions.row_names(frame, list(pre.target_names)), chosen, frame=frame)


show_inputs = {ImagePreprocessing: image_inputs, TabularPreprocessing: tabular_inputs}.get(type(pre))
if show_inputs is None:
    st.warning(f"This run's model has no known input format ({pre.kind}).")
else:
    show_inputs()
