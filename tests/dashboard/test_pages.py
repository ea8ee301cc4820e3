"""Every page driven with Streamlit's AppTest against real temp stores with real tiny runs."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from PIL import Image
from streamlit.testing.v1 import AppTest

from dashboard import demo
from tests.dashboard.conftest import APP

TIMEOUT = 90


def app(monkeypatch, uri: str, selected: list[str] | None = None) -> AppTest:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    if selected is not None:
        at.session_state["selected_runs"] = selected
    return at.run()


def open_page(at: AppTest, page: str) -> AppTest:
    return at.switch_page(f"views/{page}.py").run()


def no_exceptions(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def _decode(value):
    """Plotly's JSON stores arrays as {"dtype", "bdata"(, "shape")}: turn them back into lists."""
    if isinstance(value, dict) and "bdata" in value and "dtype" in value:
        array = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
        if "shape" in value:
            array = array.reshape([int(n) for n in str(value["shape"]).split(",")])
        return array.tolist()
    if isinstance(value, dict):
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def charts(at: AppTest) -> list[dict]:
    """The plotly figures on the page, as plain JSON (arrays decoded)."""
    return [_decode(json.loads(el.proto.spec)) for el in at.get("plotly_chart")]


def texts(elements) -> list[str]:
    return [str(e.value) for e in elements]


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def digit_png(index: int = 0) -> bytes:
    """A test-set digit from scikit-learn, enlarged 8x and drawn dark on light (as a scan would be)."""
    from sklearn.datasets import load_digits

    image = load_digits().images[index] / 16.0
    return png((255 - np.kron(image, np.ones((8, 8))) * 255).astype(np.uint8))


def shows(value: str, expected: float, decimals: int) -> bool:
    """Whether a number shown rounded to ``decimals`` places is ``expected`` (up to that rounding)."""
    return abs(float(value) - expected) <= 0.5 * 10**-decimals + 1e-6


def check_classification(shown: dict[str, str], uri: str, run_id: str, image: bytes, num_samples: int = 100) -> None:
    """The predict page shows, for one uploaded image, the model's own sampled answer to its pixels.

    Computed here: the model's samples for the uploaded pixels (the page's seed 0 and S), with the class
    and the entropies computed with numpy from the sampled probabilities.
    """
    from dashboard import inputs, predictions
    from lightning_bnn import load_model

    module = load_model(run_id, tracking_uri=uri)
    x = inputs.image_to_model_input("digit.png", image, module.preprocessing).array[None]
    p = predictions.classify(module, x, num_samples).probs[:, 0].astype(np.float64)  # [S, C]
    total = -(p.mean(0) * np.log(p.mean(0))).sum()
    aleatoric = -(p * np.log(p)).sum(-1).mean()
    assert shown["Predicted class"] == module.output_names()[int(p.mean(0).argmax())]
    assert shows(shown["Predictive entropy (nats)"], total, 3)
    assert shows(shown["Aleatoric"], aleatoric, 3) and shows(shown["Epistemic"], total - aleatoric, 3)


# -- Runs ---------------------------------------------------------------------------------------------
def test_runs_page_shows_table_with_metrics(monkeypatch, rich_store):
    at = app(monkeypatch, rich_store["uri"])
    no_exceptions(at)
    table = at.dataframe[0].value
    assert len(table) == 6
    real = MlflowClient(rich_store["uri"]).get_run(rich_store["digits"]).data.metrics
    row = table.set_index("run_id").loc[rich_store["digits"]]
    assert row["test/acc"] == pytest.approx(real["test/acc"])
    assert row["status"] == "FINISHED" and row["dataset"] == "digits"
    assert any("6 of 6 runs · last updated" in c for c in texts(at.caption))
    at.text_input(key="runs_filter").set_value("flipout").run()
    assert list(at.dataframe[0].value["run_id"]) == [rich_store["fake"]]
    assert any("1 of 6 runs" in c for c in texts(at.caption))


def test_the_first_screen_imports_no_torch_and_no_mlflow(rich_store):
    """The entry script and the Runs page, run for real on a SQLite store of runs, leave torch, Lightning and
    MLflow unimported.

    (Importing torch and Lightning took 5-6 s of the first screen: the entry script's URI resolution imported
    the tracking store module, which imports Lightning. MLflow and its SQLAlchemy store took about 1.4 s more:
    a local store's runs are now read with sqlite3, :mod:`lightning_bnn.tracking.sqlite_runs`.)
    """
    from bnn_testing import modules_after_import

    run_app = (
        "import os\n"
        f"os.environ['MLFLOW_TRACKING_URI'] = {rich_store['uri']!r}\n"
        "from streamlit.testing.v1 import AppTest\n"
        f"at = AppTest.from_file({str(APP)!r}, default_timeout={TIMEOUT}).run()\n"
        "assert not at.exception and len(at.dataframe[0].value) == 6, (at.exception, at.error)"
    )
    assert modules_after_import(run_app, ("torch", "lightning", "lightning_bnn.training", "mlflow")) == []


def test_unreachable_server_gives_a_message_on_every_page(monkeypatch, closed_port_uri):
    at = app(monkeypatch, closed_port_uri)
    no_exceptions(at)
    assert any("could not reach the tracking server" in e for e in texts(at.error))
    assert at.sidebar.text_input[0].value == closed_port_uri  # the sidebar still works
    for page in ("compare", "run_detail", "predict"):
        open_page(at, page)
        no_exceptions(at)
        assert any("could not reach the tracking server" in e for e in texts(at.error)), page


def test_bad_uri(monkeypatch):
    at = app(monkeypatch, "file:./mlruns")
    no_exceptions(at)
    assert any("Tracking URI not usable" in e and "plain file store" in e for e in texts(at.error))
    assert not at.dataframe
    assert at.sidebar.text_input[0].value == ""  # the sidebar input stays usable


def test_running_run_shows_as_running_and_polls(monkeypatch, tracking_uri):
    client = MlflowClient(tracking_uri)
    experiment = client.create_experiment("live")
    run = client.create_run(experiment, run_name="still-training")
    client.log_metric(run.info.run_id, "val/acc", 0.5, step=0)
    at = app(monkeypatch, tracking_uri)
    no_exceptions(at)
    table = at.dataframe[0].value
    assert list(table["status"]) == ["RUNNING"] and list(table["run_name"]) == ["still-training"]
    assert any("1 running, refreshing every 5 s" in c and "last updated" in c for c in texts(at.caption))


def test_a_running_run_without_a_recent_heartbeat_shows_as_stalled(monkeypatch, tracking_uri):
    import time

    from lightning_bnn.tracking.heartbeat import HEARTBEAT_TAG

    client = MlflowClient(tracking_uri)
    experiment = client.create_experiment("live")
    now = int(time.time() * 1000)
    old = now - 20 * 60_000

    def make(name: str, start: int, tags: dict, status: str | None = None) -> None:
        run_id = client.create_run(experiment, start_time=start, run_name=name, tags=tags).info.run_id
        if status:
            client.set_terminated(run_id, status)

    make("killed", old, {HEARTBEAT_TAG: str(old)})  # its process died 20 minutes ago
    make("finished", old, {HEARTBEAT_TAG: str(old)}, "FINISHED")
    at = app(monkeypatch, tracking_uri)
    no_exceptions(at)
    assert at.dataframe[0].value.set_index("run_name")["status"].to_dict() == {
        "killed": "STALLED",
        "finished": "FINISHED",
    }
    captions = texts(at.caption)  # a stalled run alone does not keep the page polling
    assert any("1 stalled (no heartbeat for 10 min)" in c for c in captions), captions
    assert not any("refreshing" in c for c in captions), captions

    make("beating", old, {HEARTBEAT_TAG: str(now)})  # started as long ago, still beats
    make("just-started", int(time.time() * 1000), {})  # no heartbeat yet: judged by its start
    at.button(key="runs_refresh").click().run()
    no_exceptions(at)
    table = at.dataframe[0].value.set_index("run_name")
    assert table["status"].to_dict() == {
        "killed": "STALLED",
        "finished": "FINISHED",
        "beating": "RUNNING",
        "just-started": "RUNNING",
    }
    assert table.loc["killed", "heartbeat"] == pd.Timestamp(old, unit="ms")
    assert any(
        "2 running, refreshing every 5 s · 1 stalled (no heartbeat for 10 min)" in c for c in texts(at.caption)
    ), texts(at.caption)
    at.sidebar.number_input(key="stalled_after_min").set_value(30.0).run()  # the sidebar's threshold
    assert at.dataframe[0].value.set_index("run_name").loc["killed", "status"] == "RUNNING"
    assert not any("stalled" in c for c in texts(at.caption)), texts(at.caption)


@pytest.mark.slow
def test_empty_store_first_screen_trains_the_demos(monkeypatch, tracking_uri):
    at = app(monkeypatch, tracking_uri)
    no_exceptions(at)
    assert any("no runs yet" in s for s in texts(at.subheader))
    assert any("python -m lightning_bnn fit --config" in c for c in texts(at.code))
    tiny = [
        demo.Demo("toy-regression", "toy_regression.yaml", 2, ["--model.hidden_sizes", "[8]"]),
        demo.Demo("digits", "digits.yaml", 1, ["--model.hidden_sizes", "[8]"]),
    ]
    monkeypatch.setattr(demo, "DEMOS", tiny)
    at.button(key="train_demos").click().run(timeout=300)
    no_exceptions(at)
    assert not at.error
    table = at.dataframe[0].value
    assert sorted(table["run_name"]) == ["demo-digits", "demo-toy-regression"]
    assert set(table["status"]) == {"FINISHED"}


# -- Compare ------------------------------------------------------------------------------------------
def test_compare_page(monkeypatch, rich_store):
    at = app(monkeypatch, rich_store["uri"], [rich_store["digits"], rich_store["fake"]])
    open_page(at, "compare")
    no_exceptions(at)
    figures = charts(at)
    curves = figures[0]
    assert len(curves["data"]) == 2  # one learning curve per selected run
    assert "val/acc" in curves["layout"]["title"]["text"]
    scatter = figures[1]
    assert sum(len(t["x"]) for t in scatter["data"]) == 2
    diff = at.dataframe[0].value
    assert {"lr", "estimator"} <= set(diff.index)
    assert "dataset" not in diff.index
    at.selectbox(key="scatter_colour").set_value("lr").run()
    assert len(charts(at)[1]["data"]) == 2  # one colour group per lr value
    sweep = charts(at)[2]
    assert len(sweep["data"]) == 2  # one panel per swept field (lr, prior.sigma)
    assert sorted(sweep["data"][0]["y"]) == pytest.approx([0.7, 0.75, 0.8])
    assert len(at.dataframe[1].value) == 3
    # changing the runs here changes the selection carried to the other pages
    at.multiselect(key="compare_runs").set_value([rich_store["fake"]]).run()
    assert at.session_state["selected_runs"] == [rich_store["fake"]]
    assert len(charts(at)[0]["data"]) == 1
    assert any("two or more runs" in i for i in texts(at.info))


# -- Run detail ---------------------------------------------------------------------------------------
def test_run_detail_page(monkeypatch, rich_store):
    uri, digits = rich_store["uri"], rich_store["digits"]
    at = app(monkeypatch, uri, [digits])
    open_page(at, "run_detail")
    no_exceptions(at)
    assert metrics(at)["Status"] == "FINISHED" and metrics(at)["Dataset"] == "digits"
    figures = charts(at)
    assert len(figures[0]["data"]) == 1 and len(figures[0]["data"][0]["y"]) == 3  # val/acc over 3 epochs
    # every finished training run logs its posterior summary: the page shows mu and sigma of each Bayesian
    # layer of the model, each histogram counting all of that layer's weights and biases
    from lightning_bnn import load_model
    from lightning_bnn.evaluation.reports import posterior_layers

    layers = posterior_layers(load_model(digits, tracking_uri=uri))
    assert [name for name, _, _ in layers] == ["net.layers.1", "net.layers.3"]  # hidden [32]: two Bayesian layers
    assert not any("Posterior summary not logged" in w for w in texts(at.warning))
    posterior = [f for f in figures if "μ and σ" in f["layout"]["title"]["text"]]
    assert len(posterior) == 1
    traces = posterior[0]["data"]
    assert [t["name"] for t in traces] == [f"{name} {part}" for name, _, _ in layers for part in ("μ", "σ")]
    counts = [sum(p.mu.numel() for p in posteriors) for _, _, posteriors in layers for _ in range(2)]
    assert [sum(t["y"]) for t in traces] == counts  # 64*32 + 32 and 32*10 + 10 weights
    params = at.dataframe[1].value
    assert params.set_index("param").loc["lr", "value"] == "0.003"
    # a run without artifacts: clear messages, the rest of the page still works
    at.selectbox(key="detail_run").set_value(rich_store["fake"]).run()
    no_exceptions(at)
    warnings = texts(at.warning)
    assert any("Posterior summary not logged for this run" in w for w in warnings)
    assert any("Reliability diagram not logged for this run" in w for w in warnings)
    assert len(charts(at)) == 1  # the learning curve still shows


# -- Predict ------------------------------------------------------------------------------------------
def test_predict_digits_uploads(monkeypatch, rich_store):
    at = app(monkeypatch, rich_store["uri"], [rich_store["digits"]])
    open_page(at, "predict")
    no_exceptions(at)
    assert any("Upload images" in i for i in texts(at.info))
    truncated = digit_png(1)[:60]
    uploader = at.file_uploader(key="image_upload")
    uploader.set_value(
        [
            ("digit.png", digit_png(0), "image/png"),
            ("notes.txt", b"just text", "text/plain"),
            ("cut.png", truncated, "image/png"),
            ("empty.png", b"", "image/png"),
        ]
    )
    at.run()
    no_exceptions(at)
    errors = texts(at.error)
    assert any(e.startswith("notes.txt: this is not an image") for e in errors)
    assert any(e.startswith("cut.png:") and ("truncated" in e or "corrupt" in e) for e in errors)
    assert any(e.startswith("empty.png: the file is empty") for e in errors)
    shown = metrics(at)
    check_classification(shown, rich_store["uri"], rich_store["digits"], digit_png(0))
    # the digit is a 0 and the model says so (mean p of class 0: 0.543 on seeds 0 and 1 of the shared run)
    assert shown["Predicted class"] == "0"
    figures = charts(at)
    assert len(figures) == 2  # distribution + uncertainty split, for the one good image
    assert len(figures[0]["data"]) == 3  # sampled box, BNN mean, point estimate
    assert len(figures[0]["data"][0]["y"]) == 100 * 10  # default S = 100 samples x 10 classes
    assert at.get("download_button")
    at.slider(key="num_samples").set_value(7).run()
    no_exceptions(at)
    assert len(charts(at)[0]["data"][0]["y"]) == 7 * 10
    assert "S=7" in charts(at)[0]["data"][0]["name"]


def test_predict_digits_test_examples(monkeypatch, rich_store):
    at = app(monkeypatch, rich_store["uri"], [rich_store["digits"]])
    open_page(at, "predict")
    at.radio(key="image_source").set_value("Test-set examples").run()
    no_exceptions(at)
    assert len(charts(at)) == 6  # three examples, two charts each
    assert len([m for m in at.metric if m.label == "Predicted class"]) == 3
    assert any("true class" in m for m in texts(at.markdown))


def test_predict_run_without_model(monkeypatch, rich_store):
    at = app(monkeypatch, rich_store["uri"], [rich_store["fake"]])
    open_page(at, "predict")
    no_exceptions(at)
    assert any("Cannot use this run" in e and "no saved model" in e for e in texts(at.error))
    at.multiselect(key="predict_runs").set_value([rich_store["digits"]]).run()  # the page keeps working
    no_exceptions(at)
    assert not at.error and at.file_uploader


def test_predict_toy_regression(monkeypatch, toy_run):
    uri, run_id = toy_run
    at = app(monkeypatch, uri, [run_id])
    open_page(at, "predict")
    no_exceptions(at)
    fan = charts(at)[0]
    has_train = any(t.get("name") == "training data" for t in fan["data"])
    assert len(fan["data"]) == 4 + 30 + int(has_train)  # bands, 30 drawn functions, mean, point (+ data)
    shown = metrics(at)
    assert {"Mean y", "Std", "95% interval", "Point estimate"} <= set(shown)
    # the model's own sampled predictive at the form's x (the training mean), its moments computed here
    from dashboard import predictions
    from lightning_bnn import load_model

    module = load_model(run_id, tracking_uri=uri)
    x = module.preprocessing.transform(pd.DataFrame({"x": [at.number_input(key="feature_0").value]}))
    result = predictions.predict(module, x, 100)
    m, s = result.sample_mean[:, 0, 0].astype(np.float64), result.sample_std[:, 0, 0].astype(np.float64)
    mean, std = m.mean(), np.sqrt((s**2).mean() + m.var())  # the mixture's moments
    low, high = json.loads(shown["95% interval"])
    assert float(shown["Mean y"]) == pytest.approx(mean, rel=6e-4)  # shown to 4 significant digits
    assert float(shown["Std"]) == pytest.approx(std, rel=6e-4)
    assert [low, high] == pytest.approx([mean - 1.959964 * std, mean + 1.959964 * std], rel=6e-4)
    assert float(shown["Point estimate"]) == pytest.approx(float(result.point_mean[0, 0]), rel=6e-4)
    assert len(charts(at)[1]["data"]) == 2  # histogram of sampled y + point estimate
    at.slider(key="num_samples").set_value(5).run()
    assert len(charts(at)[0]["data"]) == 4 + 5 + int(has_train)
    # CSV upload: good, then bad
    at.radio(key="tabular_source").set_value("Upload CSV").run()
    at.file_uploader(key="csv_upload").upload("x.csv", b"x\n0.1\n0.25\n3.0\n", "text/csv")
    at.run()
    no_exceptions(at)
    result = at.dataframe[0].value
    assert list(result["x"]) == [0.1, 0.25, 3.0] and {"y_mean", "y_lower95", "y_point_estimate"} <= set(result)
    at.file_uploader(key="csv_upload").upload("bad.csv", b"x,z\n0.1,2\n", "text/csv")
    at.run()
    no_exceptions(at)
    assert any("unexpected column(s) ['z']" in e for e in texts(at.error))
    assert len(charts(at)) == 1  # the fan chart still shows


def test_predict_csv_classifier(monkeypatch, iris_run):
    uri, run_id = iris_run
    at = app(monkeypatch, uri, [run_id])
    open_page(at, "predict")
    no_exceptions(at)
    features = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    fields = [n.label for n in at.number_input if (n.key or "").startswith("feature_")]
    assert fields == features  # a form field per feature, at the training means
    shown = metrics(at)
    assert shown["Predicted class"] in {"setosa", "versicolor", "virginica"}
    assert len(charts(at)) == 2 and len(charts(at)[0]["data"][0]["y"]) == 100 * 3
    at.number_input(key="feature_2").set_value(1.4).run()  # a typical setosa petal length
    no_exceptions(at)
    at.radio(key="tabular_source").set_value("Upload CSV").run()
    rows = "sepal_length,sepal_width,petal_length,petal_width,target\n5.1,3.5,1.4,0.2,setosa\n6.7,3.0,5.2,2.3,x\n"
    at.file_uploader(key="csv_upload").set_value(("rows.csv", rows.encode(), "text/csv"))
    at.run()
    no_exceptions(at)
    assert len([m for m in at.metric if m.label == "Predicted class"]) == 2
    assert len(charts(at)) == 4
    assert "**row 1 (true target: setosa)**" in texts(at.markdown)
    # the classes shown are the model's own answers to these raw rows (the page's seed 0, S = 100): a
    # wrong standardisation or column order on the upload path would show other classes or probabilities
    from dashboard import predictions
    from lightning_bnn import load_model

    module = load_model(run_id, tracking_uri=uri)
    raw = pd.DataFrame([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], columns=features)
    expected = predictions.classify(module, module.preprocessing.transform(raw).numpy(), 100)
    shown = [m.value for m in at.metric if m.label == "Predicted class"]
    assert shown == [expected.class_names[k] for k in expected.predicted]
    shown_p = [m.value for m in at.markdown if m.value.startswith("p = **")]
    assert shown_p == [
        f"p = **{expected.mean[i, k]:.3f}** ± {expected.std[i, k]:.3f} across samples"
        for i, k in enumerate(expected.predicted)
    ]
    at.file_uploader(key="csv_upload").set_value(("bad.csv", b"sepal_length\nabc\n", "text/csv"))
    at.run()
    no_exceptions(at)
    assert any("missing column(s)" in e and "petal_width" in e for e in texts(at.error))


def test_no_legacy_pages_folder():
    # A pages/ folder beside the entry makes Streamlit run a page URL opened first on a fresh server
    # (e.g. a bookmark of /predict) without the entry script; the pages live in views/ instead.
    assert not (APP.parent / "pages").exists()
    assert sorted(p.name for p in (APP.parent / "views").glob("*.py")) == [
        "_shared.py",
        "compare.py",
        "predict.py",
        "run_detail.py",
        "runs.py",
    ]


def test_predict_page_on_a_run_of_your_own_network(monkeypatch, resnet_run):
    """The example residual CNN (a user network, last block Bayesian) predicts on the page as a built-in model does."""
    uri, run_id = resnet_run
    at = app(monkeypatch, uri, [run_id])
    open_page(at, "predict")
    no_exceptions(at)
    at.file_uploader(key="image_upload").set_value([("digit.png", digit_png(0), "image/png")])
    at.run()
    no_exceptions(at)
    shown = metrics(at)
    check_classification(shown, uri, run_id, digit_png(0))
    figures = charts(at)
    assert len(figures) == 2
    assert len(figures[0]["data"][0]["y"]) == 100 * 10
    at.slider(key="num_samples").set_value(7).run()
    no_exceptions(at)
    assert len(charts(at)[0]["data"][0]["y"]) == 7 * 10
