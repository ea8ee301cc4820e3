"""Predict: give a run inputs and see the sampled prediction distribution, next to a point estimate."""

import numpy as np
import pandas as pd
import streamlit as st

from dashboard import inputs, predictions, runs, widgets
from dashboard.views import _shared as shared
from lightning_bnn.data.preprocessing import ImagePreprocessing, TabularPreprocessing

uri, table, run_id = shared.run_page("Predict", key="predict_run")
try:
    module = shared.model(uri, run_id)
except (runs.RunLoadError, runs.StoreError) as err:
    st.error(f"Cannot use this run: {err}")
    st.stop()

hp, pre = module.hparams, module.preprocessing
num_samples = st.slider(
    "Posterior samples S",
    predictions.MIN_SAMPLES,
    predictions.MAX_SAMPLES,
    100,
    key="num_samples",
    help="Each sample draws new weights from the posterior q(w); more samples give smoother distributions.",
)
st.caption(f"{hp.task} model · {predictions.describe_network(hp)} · input {list(hp.input_shape)}")


def image_inputs() -> None:
    """Uploaded images or test-set examples of an image classifier."""
    source = st.radio("Inputs", ["Upload images", "Test-set examples"], horizontal=True, key="image_source")
    names, arrays, previews, captions, warnings = [], [], [], [], []
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
        items, errors = inputs.images_to_model_inputs([(f.name, f.getvalue()) for f in files[: inputs.MAX_IMAGES]], pre)
        for message in errors:
            st.error(message)
        names, arrays = [i.name for i in items], [i.array for i in items]
        previews, captions = [i.preview for i in items], [i.caption for i in items]
        warnings = [i.warnings for i in items]
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
        )
        for i in picked[: inputs.MAX_IMAGES]:
            names.append(f"test example #{i} ({labels[i]})")
            arrays.append(x[i])
            previews.append(pre.to_pixels(x[i]))
            captions.append("as the model sees it")
    if arrays:
        result = predictions.classify(module, np.stack(arrays), num_samples)
        widgets.show_classification(result, names, run_id, previews, captions, warnings)


def tabular_inputs() -> None:
    """Form values or an uploaded CSV for a tabular model (plus the fan chart for 1-D regression)."""
    features = list(pre.feature_names)
    if predictions.wants_fan_chart(module):
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
    result = predictions.predict(module, pre.transform(frame[features]), num_samples)
    widgets.show_result(result, predictions.row_names(frame, list(pre.target_names)), frame, run_id)


show_inputs = {ImagePreprocessing: image_inputs, TabularPreprocessing: tabular_inputs}.get(type(pre))
if show_inputs is None:
    st.warning(f"This run's model has no known input format ({pre.kind}).")
else:
    show_inputs()
