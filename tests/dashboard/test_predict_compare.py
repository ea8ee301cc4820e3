"""Several models, the same inputs: the comparison's logic, its charts, the registry and the Predict page."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from dashboard import charts, inputs, predictions, runs
from lightning_bnn import BNNModule, load_model
from lightning_bnn.data.preprocessing import ImagePreprocessing, TabularPreprocessing
from tests.dashboard.conftest import LAYER_TYPES
from tests.dashboard.test_pages import app, digit_png, no_exceptions, open_page, png, texts
from tests.dashboard.test_pages import charts as page_charts


@pytest.fixture(scope="module")
def models(three_kinds) -> dict:
    return {k: load_model(three_kinds[k], tracking_uri=three_kinds["uri"]) for k in (*LAYER_TYPES, "toy")}


def blend_png(a: int = 3, b: int = 8) -> bytes:
    """An ambiguous upload: two test-set digits drawn on top of each other (dark on light, 64x64)."""
    from sklearn.datasets import load_digits

    images = load_digits().images
    mixed = (images[a] + images[b]) / 32.0
    return png((255 - np.kron(mixed, np.ones((8, 8))) * 255).astype(np.uint8))


def other_image_model(**preprocessing) -> BNNModule:
    """A real, untrained image classifier with its own preprocessing (for the checks that refuse a mix)."""
    digits = {"height": 8, "width": 8, "class_names": tuple(str(i) for i in range(10))}
    pre = ImagePreprocessing(**{**digits, **preprocessing})
    return BNNModule(input_shape=(1, pre.height, pre.width), hidden_sizes=[4], preprocessing=pre)


# -- logic ---------------------------------------------------------------------------------------------
def test_comparison_table_has_one_row_per_input_and_model(models):
    digits = {k: models[k] for k in LAYER_TYPES}
    x = np.random.default_rng(0).random((2, 1, 8, 8), dtype=np.float32)
    results = predictions.predict_all(digits, {k: x for k in digits}, 30)
    table = predictions.compare_classification(results, ["a", "b"], {k: f"id-{k}" for k in digits})
    assert list(zip(table["input_index"], table["model"])) == [(i, k) for i in (0, 1) for k in LAYER_TYPES]
    assert list(table["run_id"]) == [f"id-{k}" for k in LAYER_TYPES] * 2
    for label, result in results.items():  # each model's rows are its own one-model table
        single = predictions.classification_table(result, ["a", "b"])
        pd.testing.assert_frame_equal(table[table["model"] == label].reset_index(drop=True)[single.columns], single)
    det, bbb = table[table["model"] == "deterministic"], table[table["model"] == "bayes"]
    assert (det["epistemic_mutual_information"] < 1e-6).all() and (det["probability_std"] < 1e-6).all()
    assert (bbb["epistemic_mutual_information"] > 1e-4).all() and (bbb["probability_std"] > 1e-4).all()
    total = table["aleatoric_expected_entropy"] + table["epistemic_mutual_information"]
    np.testing.assert_allclose(total, table["predictive_entropy"], atol=1e-5)


def test_regression_comparison_table(models):
    frame = pd.DataFrame({"x": [0.1, 0.3], "y": [0.0, 1.0]})
    x = models["toy"].preprocessing.transform(frame[["x"]])
    results = predictions.predict_all({"a": models["toy"], "b": models["toy"]}, {"a": x, "b": x}, 20)
    table = predictions.compare_regression(results, frame)
    assert list(zip(table["input_index"], table["model"])) == [(0, "a"), (0, "b"), (1, "a"), (1, "b")]
    assert {"y_mean", "y_lower95", "y_upper95", "y_epistemic_std", "y_quantile"} <= set(table)
    fig = charts.compare_regression(table[table["input_index"] == 1], "y")
    assert len(fig.data) == 3 and list(fig.data[0].y) == ["b", "a"]  # the first model on top
    rows = table[table["input_index"] == 1][::-1]
    np.testing.assert_allclose(fig.data[0].error_x.array, rows["y_upper95"] - rows["y_mean"])
    np.testing.assert_allclose(fig.data[0].error_x.arrayminus, rows["y_mean"] - rows["y_lower95"])
    np.testing.assert_allclose(fig.data[1].error_x.array, 1.959963984540054 * rows["y_epistemic_std"])
    assert any(shape.x0 == 1.0 for shape in fig.layout.shapes)  # the observed y of row 1


def test_check_comparable_refuses_models_that_cannot_share_inputs(models):
    predictions.check_comparable({k: models[k] for k in LAYER_TYPES})  # three kinds of network, one kind of input
    cases = [
        (models["toy"], r"'bayes' and 'other' take different inputs \(image and tabular\)"),
        (other_image_model(height=28, width=28), r"inputs of different shapes \(\[1, 8, 8\] and \[1, 28, 28\]\)"),
        (other_image_model(class_names=tuple("abcdefghij")), r"have different outputs"),
    ]
    for other, message in cases:
        with pytest.raises(predictions.ComparisonError, match=message):
            predictions.check_comparable({"bayes": models["bayes"], "other": other})
    pre = TabularPreprocessing(("x",), class_names=("no", "yes"), target_names=("label",))
    classifier = BNNModule(input_shape=(1,), num_outputs=2, hidden_sizes=[4], preprocessing=pre)
    with pytest.raises(predictions.ComparisonError, match=r"kinds of answer \(regression and classification\)"):
        predictions.check_comparable({"toy": models["toy"], "other": classifier})
    renamed = TabularPreprocessing(("z",), target_names=("y",))
    regressor = BNNModule(input_shape=(1,), num_outputs=1, task="regression", hidden_sizes=[4], preprocessing=renamed)
    with pytest.raises(predictions.ComparisonError, match=r"different feature columns \(\['x'\] and \['z'\]\)"):
        predictions.check_comparable({"toy": models["toy"], "other": regressor})


def test_each_model_sees_the_same_pixels_through_its_own_preprocessing(models):
    pre = models["bayes"].preprocessing
    brighter = other_image_model(scale=pre.scale * 2)
    uploads = [("digit.png", digit_png(0)), ("notes.txt", b"text")]
    items, errors, arrays = inputs.images_for_models(uploads, {"a": pre, "b": brighter.preprocessing})
    assert [i.name for i in items] == ["digit.png"] and errors[0].startswith("notes.txt: this is not an image")
    assert arrays["a"].shape == (1, 1, 8, 8) and arrays["a"].max() > 0
    np.testing.assert_allclose(arrays["b"], 2 * arrays["a"], rtol=1e-6)
    assert inputs.images_for_models(uploads[1:], {"a": pre})[2] == {}
    x = arrays["a"]
    same = predictions.examples_for_models({"a": models["bayes"], "b": models["deterministic"]}, x)
    assert same["a"] is x and same["b"] is x  # same preprocessing: the same inputs
    scaled = predictions.examples_for_models({"a": models["bayes"], "b": brighter}, x)
    np.testing.assert_allclose(scaled["b"], 2 * x, rtol=1e-6)


def test_comparison_charts(models):
    digits = {f"m{i}": models[k] for i, k in enumerate(LAYER_TYPES)}
    x = np.random.default_rng(1).random((1, 1, 8, 8), dtype=np.float32)
    results = predictions.predict_all(digits, {k: x for k in digits}, 12)
    fig = charts.compare_class_distribution(results, 0)
    assert [t.name for t in fig.data] == ["m0 (S=12)", "m1 (S=12)", "m2 (S=12)"]  # one box trace per model
    assert all(len(t.y) == 12 * 10 for t in fig.data) and fig.layout.boxmode == "group"
    np.testing.assert_array_equal(fig.data[0].y, results["m0"].probs[:, 0, :].reshape(-1))
    assert np.ptp(np.asarray(fig.data[1].y).reshape(12, 10), axis=0).max() < 1e-6  # deterministic: flat boxes
    rows = predictions.compare_classification(results, ["x"])
    split = charts.compare_uncertainty(rows, 10)
    assert len(split.data) == 2 and list(split.data[0].y) == ["m2", "m1", "m0"]
    np.testing.assert_allclose(split.data[0].x, rows["aleatoric_expected_entropy"][::-1])
    np.testing.assert_allclose(split.data[1].x, rows["epistemic_mutual_information"][::-1])
    assert split.layout.xaxis.range[1] == pytest.approx(np.log(10) * 1.05)


def test_registered_models_name_their_runs(three_kinds):
    registry = runs.registered_models(three_kinds["uri"])
    assert list(registry["label"]) == ["digits-bnn@champion", "toy-bnn@champion", "digits-bnn v1", "toy-bnn v1"]
    assert list(registry["run_id"]) == [three_kinds[k] for k in ("bayes", "toy", "bayes", "toy")]
    client = MlflowClient(three_kinds["uri"])
    assert client.get_model_version_by_alias("digits-bnn", "champion").run_id == three_kinds["bayes"]


# -- the page ------------------------------------------------------------------------------------------
def expected_results(three_kinds, kinds, data: bytes) -> dict:
    """What the page must show for one upload: each model's own preprocessing and seeded sampling (S = 100)."""
    out = {}
    for kind in kinds:
        module = load_model(three_kinds[kind], tracking_uri=three_kinds["uri"])
        processed = inputs.image_to_model_input("blend.png", data, module.preprocessing)
        out[kind] = predictions.classify(module, processed.array[None], 100)
    return out


def test_predict_page_compares_three_runs_on_an_ambiguous_upload(monkeypatch, three_kinds):
    ids = [three_kinds[k] for k in LAYER_TYPES]
    at = app(monkeypatch, three_kinds["uri"], ids)
    open_page(at, "predict")
    no_exceptions(at)
    assert at.multiselect(key="predict_runs").value == ids
    at.file_uploader(key="image_upload").set_value([("blend.png", blend_png(), "image/png")])
    at.run()
    no_exceptions(at)
    labels = [f"digits-{k} ({three_kinds[k][:6]})" for k in LAYER_TYPES]
    assert [m for m in texts(at.markdown) if m.strip("*") in labels] == [f"**{label}**" for label in labels]
    shown = {label: [m.value for m in at.metric if m.label == label] for label in ("Predicted class", "Epistemic")}
    entropy = [float(m.value) for m in at.metric if m.label == "Predictive entropy (nats)"]
    expected = expected_results(three_kinds, LAYER_TYPES, blend_png())
    assert shown["Predicted class"] == [r.class_names[int(r.predicted[0])] for r in expected.values()]
    assert entropy == pytest.approx([float(r.predictive_entropy[0]) for r in expected.values()], abs=1e-3)
    mutual_information = [float(r.mutual_information[0]) for r in expected.values()]
    assert [float(v) for v in shown["Epistemic"]] == pytest.approx(mutual_information, abs=1e-3)
    figures = page_charts(at)
    assert len(figures) == 2  # one grouped distribution and one entropy split for the one upload
    assert len(figures[0]["data"]) == 3 and [t["name"] for t in figures[0]["data"]] == [f"{x} (S=100)" for x in labels]
    assert figures[1]["data"][1]["y"] == labels[::-1]
    table = at.dataframe[0].value  # the comparison table (the page's only table)
    assert list(table["run_id"]) == ids and list(table["model"]) == labels
    epistemic = dict(zip(LAYER_TYPES, table["epistemic_mutual_information"]))
    assert epistemic["deterministic"] < 1e-6 < epistemic["bayes"]  # the point estimate knows no doubt
    assert shown["Epistemic"][1] == "0.000"


def test_predict_page_refuses_to_mix_images_and_tables(monkeypatch, three_kinds):
    at = app(monkeypatch, three_kinds["uri"], [three_kinds["bayes"], three_kinds["toy"]])
    open_page(at, "predict")
    no_exceptions(at)
    assert any("cannot answer the same inputs" in e and "image and tabular" in e for e in texts(at.error))
    assert not at.file_uploader and not at.get("plotly_chart")
    at.multiselect(key="predict_runs").set_value([three_kinds["toy"]]).run()  # one of them works on its own
    no_exceptions(at)
    assert not at.error and at.number_input


def test_predict_page_picks_a_registered_model_by_alias(monkeypatch, three_kinds, rich_store):
    at = app(monkeypatch, three_kinds["uri"], [three_kinds["deterministic"]])
    open_page(at, "predict")
    at.radio(key="predict_source").set_value("Registered models").run()
    no_exceptions(at)
    picker = at.multiselect(key="predict_registered")
    assert picker.value == ["digits-bnn@champion"] and "digits-bnn v1" in picker.options
    at.file_uploader(key="image_upload").set_value([("digit.png", digit_png(0), "image/png")])
    at.run()
    no_exceptions(at)
    expected = expected_results(three_kinds, ["bayes"], digit_png(0))["bayes"]  # the alias's run, not the selected one
    k = int(expected.predicted[0])
    assert [m.value for m in at.metric if m.label == "Predicted class"] == [expected.class_names[k]]
    assert f"p = **{expected.mean[0, k]:.3f}** ± {expected.std[0, k]:.3f} across samples" in texts(at.markdown)
    at.multiselect(key="predict_registered").set_value(["digits-bnn@champion", "digits-bnn v1"]).run()
    no_exceptions(at)
    assert [m.value for m in at.metric if m.label == "Predicted class"] == [expected.class_names[k]] * 2
    # a store without registered models says how to register one
    other = app(monkeypatch, rich_store["uri"], [rich_store["digits"]])
    open_page(other, "predict")
    other.radio(key="predict_source").set_value("Registered models").run()
    no_exceptions(other)
    assert any("No registered models" in i and "lightning_bnn register" in i for i in texts(other.info))


def test_predict_page_compares_regression_models(monkeypatch, three_kinds):
    """Two registered names of the toy run: the regression comparison shows both, with the same numbers."""
    at = app(monkeypatch, three_kinds["uri"], [three_kinds["toy"]])
    open_page(at, "predict")
    at.radio(key="predict_source").set_value("Registered models").run()
    at.multiselect(key="predict_registered").set_value(["toy-bnn@champion", "toy-bnn v1"]).run()
    no_exceptions(at)
    titles = [f["layout"]["title"]["text"] for f in page_charts(at)]
    assert titles == ["Predictive distribution per model"]  # the form's row compared; the fan chart is for one model
    at.radio(key="tabular_source").set_value("Upload CSV").run()
    at.file_uploader(key="csv_upload").upload("rows.csv", b"x,y\n0.1,0.0\n0.4,0.5\n", "text/csv")
    at.run()
    no_exceptions(at)
    table = at.dataframe[0].value
    assert list(zip(table["input_index"], table["model"])) == [
        (0, "toy-bnn@champion"), (0, "toy-bnn v1"), (1, "toy-bnn@champion"), (1, "toy-bnn v1")
    ]  # fmt: skip
    assert set(table["run_id"]) == {three_kinds["toy"]} and list(table["y"]) == [0.0, 0.0, 0.5, 0.5]
    module = load_model(three_kinds["toy"], tracking_uri=three_kinds["uri"])
    expected = predictions.regress(module, module.preprocessing.transform(pd.DataFrame({"x": [0.1, 0.4]})), 100)
    np.testing.assert_allclose(table["y_mean"], np.repeat(expected.mean[:, 0], 2), rtol=1e-5)
    means = [m.value for m in at.metric if m.label == "Mean y"]
    assert means == [f"{expected.mean[0, 0]:.4g}"] * 2
    figure = page_charts(at)[-1]
    assert len(figure["data"]) == 3 and figure["data"][0]["y"] == ["toy-bnn v1", "toy-bnn@champion"]
    at.selectbox(key="regression_row").set_value(1).run()
    assert [m.value for m in at.metric if m.label == "Mean y"] == [f"{expected.mean[1, 0]:.4g}"] * 2
