"""The Predict page on a child run of the UCI benchmark: CSV rows of raw features, with and without the target."""

from __future__ import annotations

import numpy as np
import pytest
from mlflow import MlflowClient

from dashboard import inputs, predictions
from lightning_bnn.experiments.uci import main
from lightning_bnn.tracking.store import load_model
from tests.dashboard.test_pages import app, metrics, no_exceptions, open_page
from tests.test_uci import write_uci_folder


@pytest.fixture(scope="module")
def uci_run(tmp_path_factory) -> tuple[str, str, np.ndarray]:
    """(tracking_uri, child run id of BBB on split 0, the raw data rows) from a 2-split run of the command."""
    root = tmp_path_factory.mktemp("uci")
    folder = write_uci_folder(root / "data", "toyset")
    uri = f"sqlite:///{root}/mlruns/mlflow.db"
    argv = ["--data-dir", str(folder), "--splits", "2", "--epochs", "20", "--tracking-uri", uri]
    assert main(argv) == 0
    client = MlflowClient(uri)
    runs = client.search_runs(
        [client.get_experiment_by_name("uci").experiment_id], "tags.`uci.model` = 'bbb' and tags.`uci.split` = '0'"
    )
    return uri, runs[0].info.run_id, np.loadtxt(folder / "data.txt")


def test_predict_page_on_a_uci_run(monkeypatch, uci_run):
    uri, run_id, data = uci_run
    at = app(monkeypatch, uri, [run_id])
    open_page(at, "predict")
    no_exceptions(at)
    at.radio(key="tabular_source").set_value("Upload CSV").run()
    rows = data[:3]
    features = rows[:, [0, 2, 3]]
    header = "x0,x2,x3"
    without = header + "\n" + "\n".join(",".join(f"{v:.6f}" for v in r) for r in features) + "\n"
    at.file_uploader(key="csv_upload").upload("rows.csv", without.encode(), "text/csv")
    at.run()
    no_exceptions(at)
    table = at.dataframe[0].value
    # the same numbers as sampling the run's model by hand (seed 0, S = 100), in the target's units
    module = load_model(run_id, uri)
    expected = predictions.regress(module, inputs.standardise(features, module.preprocessing), 100)
    np.testing.assert_allclose(table["y_mean"], expected.mean[:, 0], rtol=1e-5)
    np.testing.assert_allclose(table["y_std"], expected.std[:, 0], rtol=1e-5)
    np.testing.assert_allclose(table["y_lower95"], expected.mean[:, 0] - 1.959964 * expected.std[:, 0], rtol=1e-4)
    np.testing.assert_allclose(table["y_upper95"], expected.mean[:, 0] + 1.959964 * expected.std[:, 0], rtol=1e-4)
    pre = module.preprocessing
    assert abs(table["y_mean"].mean() - pre.target_mean) < 3 * pre.target_std  # original units, not z-scores
    assert "y_quantile" not in table
    # with the target column: where each observed y falls
    with_target = "x0,x2,x3,y\n" + "\n".join(",".join(f"{v:.6f}" for v in [*r[[0, 2, 3]], r[1]]) for r in rows) + "\n"
    at.file_uploader(key="csv_upload").upload("rows_y.csv", with_target.encode(), "text/csv")
    at.run()
    no_exceptions(at)
    table = at.dataframe[0].value
    np.testing.assert_allclose(table["y"], rows[:, 1], rtol=1e-6)
    np.testing.assert_allclose(table["y_mean"], expected.mean[:, 0], rtol=1e-5)
    z = (rows[:, 1] - expected.mean[:, 0]) / expected.std[:, 0]
    np.testing.assert_allclose(table["y_z"], z, rtol=1e-4, atol=1e-6)
    assert ((table["y_quantile"] > 0) & (table["y_quantile"] < 1)).all()
    assert list(table["y_in_95"]) == list(np.abs(z) <= 1.959964)
    shown = metrics(at)
    assert {"Mean y", "Std", "95% interval"} <= set(shown)
    assert any(label.startswith("Observed y") for label in shown)
