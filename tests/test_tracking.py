"""MLflow tracking: complete runs, reports, reload, pyfunc model, runs/compare commands (real MLflow, no mocks)."""

from __future__ import annotations

import io
import json
import math
import os
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
import yaml
from mlflow import MlflowClient

from lightning_bnn import load_model
from lightning_bnn.cli.commands import build_filter, compare_main, diff_params, format_table, parse_tags, runs_main
from lightning_bnn.evaluation.reports import histogram, posterior_summary, predictive_band, reliability
from lightning_bnn.tracking import artifacts
from lightning_bnn.tracking.serialization import ModelLoadError, save_model
from lightning_bnn.tracking.store import (
    CHECKPOINT_KEY,
    checkpoint_root,
    flatten_params,
    parse_run,
    resolve_tracking_uri,
    using_tracking_uri,
)
from lightning_bnn.training.module import BNNModule

EPOCH_METRICS = [
    "train/loss",
    "train/nll",
    "train/kl",
    "train/kl_weight",
    "train/lr",
    "train/epoch_time_s",
    "val/nll",
]
CLASSIFICATION_EPOCH_METRICS = ["val/acc", "val/ece", "val/brier"]
REGRESSION_EPOCH_METRICS = ["val/rmse", "val/picp95"]


def artifact_files(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    out = set()
    for item in client.list_artifacts(run_id, path):
        out |= artifact_files(client, run_id, item.path) if item.is_dir else {item.path}
    return out


def read_json(client: MlflowClient, run_id: str, path: str, tmp_path: Path) -> dict:
    return json.loads(Path(client.download_artifacts(run_id, path, str(tmp_path))).read_text())


# -- a complete run -----------------------------------------------------------------------------------
def test_params_are_the_resolved_config_with_readable_names(digits_run):
    uri, run_id = digits_run
    params = MlflowClient(uri).get_run(run_id).data.params
    expected = {
        "prior.name": "gaussian",
        "prior.sigma": "1.0",
        "estimator": "local",
        "num_samples_train": "1",
        "num_samples_eval": "20",
        "kl_weighting": "uniform",
        "hidden_sizes": "[32]",
        "lr": "0.003",
        "batch_size": "64",
        "seed": "0",
        "dataset": "digits",
        "layer_type": "bayes",
        "data.class": "lightning_bnn.data.DigitsDataModule",
        "trainer.max_epochs": "3",
    }
    assert {k: params.get(k) for k in expected} == expected
    assert "prior.sigma1" in params and "prior.pi" in params
    internal = [k for k in params if k.startswith("_") or "._" in k or "__path__" in k or "instantiator" in k]
    assert internal == []


def test_tags_say_what_and_where(digits_run):
    uri, run_id = digits_run
    tags = MlflowClient(uri).get_run(run_id).data.tags
    assert tags["task"] == "classification"
    assert tags["dataset"] == "digits"
    assert tags["model_family"] == "bayes-mlp"
    assert tags["version.torch"] == torch.__version__
    assert tags["version.mlflow"] == mlflow.__version__
    assert tags["version.lightning"]
    assert tags["host"]
    assert len(tags["git_commit"].split("-")[0]) == 40


def test_a_fit_beats_while_it_runs_and_stops_beating_when_it_ends(digits_run):
    import threading

    from lightning_bnn.tracking.heartbeat import HEARTBEAT_TAG

    uri, run_id = digits_run
    run = MlflowClient(uri).get_run(run_id)
    assert run.info.start_time <= int(run.data.tags[HEARTBEAT_TAG]) <= run.info.end_time
    # the writer thread of this session's fit is gone (a leaked thread would keep writing to a finished run)
    assert [t.name for t in threading.enumerate() if t.name.startswith("lightning_bnn heartbeat")] == []


def test_metric_history_has_one_point_per_epoch(digits_run):
    uri, run_id = digits_run
    client = MlflowClient(uri)
    for key in EPOCH_METRICS + CLASSIFICATION_EPOCH_METRICS:
        history = client.get_metric_history(run_id, key)
        assert len(history) == 3, key
        assert len({m.step for m in history}) == 3, key
        assert all(math.isfinite(m.value) for m in history), key
    assert client.get_metric_history(run_id, "train/lr")[0].value == pytest.approx(0.003)
    assert all(m.value > 0 for m in client.get_metric_history(run_id, "train/epoch_time_s"))
    for key in ("test/acc", "test/nll", "test/ece"):
        assert len(client.get_metric_history(run_id, key)) == 1, key


def test_classification_run_has_every_artifact(digits_run, tmp_path):
    uri, run_id = digits_run
    client = MlflowClient(uri)
    files = artifact_files(client, run_id)
    for path in (
        artifacts.CONFIG,
        artifacts.WEIGHTS,
        artifacts.MODEL_CONFIG,
        artifacts.BEST_CHECKPOINT,
        artifacts.POSTERIOR_SUMMARY,
        artifacts.POSTERIOR_CHART,
        artifacts.RELIABILITY,
        artifacts.RELIABILITY_CHART,
    ):
        assert path in files, path
    assert artifacts.PREDICTIVE_BAND not in files
    assert not any(f.startswith(f"{artifacts.PYFUNC_MODEL}/") for f in files)  # a LoggedModel now, not a folder
    summary = read_json(client, run_id, artifacts.POSTERIOR_SUMMARY, tmp_path)
    assert [layer["kind"] for layer in summary["layers"]] == ["BayesLinear", "BayesLinear"]
    assert sum(layer["num_weights"] for layer in summary["layers"]) == (64 * 32 + 32) + (32 * 10 + 10)
    for layer in summary["layers"]:
        for key in ("mu", "sigma", "log10_snr"):
            assert len(layer[key]["edges"]) == len(layer[key]["counts"]) + 1
        assert sum(layer["sigma"]["counts"]) == layer["num_weights"]
    doc = read_json(client, run_id, artifacts.RELIABILITY, tmp_path)
    assert doc["num_bins"] == len(doc["bins"]) == 15
    assert sum(b["count"] for b in doc["bins"]) == 359  # the digits test split (20% of 1,797)
    test_ece = client.get_run(run_id).data.metrics["test/ece"]
    assert doc["ece"] == pytest.approx(test_ece, abs=0.05)  # same model, other Monte Carlo draws
    html = Path(client.download_artifacts(run_id, artifacts.RELIABILITY_CHART, str(tmp_path))).read_text()
    assert "cdn.plot.ly" in html and len(html) < 200_000
    config = Path(client.download_artifacts(run_id, artifacts.CONFIG, str(tmp_path))).read_text()
    assert "DigitsDataModule" in config and "hidden_sizes" in config


def test_best_checkpoint_is_best_by_val_nll_and_loads_without_pickle(digits_run, tmp_path):
    uri, run_id = digits_run
    client = MlflowClient(uri)
    path = client.download_artifacts(run_id, artifacts.BEST_CHECKPOINT, str(tmp_path))
    checkpoint = torch.load(path, weights_only=True, map_location="cpu")
    assert checkpoint[CHECKPOINT_KEY]["run_id"] == run_id
    history = client.get_metric_history(run_id, "val/nll")
    states = [v for k, v in checkpoint["callbacks"].items() if k.startswith("BestValidationCheckpoint")]
    assert float(states[0]["best_model_score"]) == pytest.approx(min(m.value for m in history), rel=1e-5)


def test_checkpoints_land_beside_the_sqlite_store(digits_run):
    uri, run_id = digits_run
    store = Path(uri[len("sqlite:///") :]).parent
    assert checkpoint_root(uri) == store / "checkpoints"
    assert list((store / "checkpoints").glob(f"*/{run_id}/checkpoints/*.ckpt"))


def test_regression_run_has_band_and_train_sample(toy_run, tmp_path):
    uri, run_id = toy_run
    client = MlflowClient(uri)
    files = artifact_files(client, run_id)
    for path in (artifacts.PREDICTIVE_BAND, artifacts.PREDICTIVE_BAND_CHART, artifacts.TRAIN_SAMPLE):
        assert path in files, path
    assert artifacts.RELIABILITY not in files
    for key in EPOCH_METRICS + REGRESSION_EPOCH_METRICS:
        assert len(client.get_metric_history(run_id, key)) == 5, key
    band = read_json(client, run_id, artifacts.PREDICTIVE_BAND, tmp_path)
    assert band["feature"] == "x" and band["train_range"] == [0.0, 0.5]
    assert len(band["x"]) == len(band["target"]) == len(band["mean"]) == 256
    assert band["x"] == sorted(band["x"])
    assert all(lo <= m <= hi for lo, m, hi in zip(band["lower"], band["mean"], band["upper"]))
    import pandas as pd

    sample = pd.read_csv(client.download_artifacts(run_id, artifacts.TRAIN_SAMPLE, str(tmp_path)))
    assert list(sample.columns) == ["x", "y"] and len(sample) == 512
    assert sample["x"].between(0.0, 0.5).all()


# -- reload -------------------------------------------------------------------------------------------
def _sample(model: BNNModule, x: torch.Tensor, seed: int = 123) -> torch.Tensor:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return model.sample_predictions(x, 16)


def test_load_model_predicts_exactly_like_the_trained_model(digits_cli):
    uri, cli = digits_cli
    run_id = cli.trainer.logger.run_id
    x = cli.datamodule.splits.x_test[:32]
    trained = cli.model.eval()
    for ref in (run_id, f"runs:/{run_id}", f"runs:/{run_id}/model"):
        loaded = load_model(ref, tracking_uri=uri)
        assert not loaded.training
        assert torch.equal(_sample(loaded, x), _sample(trained, x))


def test_pyfunc_model_is_a_logged_model_of_the_run_with_its_final_metrics(digits_run, tmp_path):
    uri, run_id = digits_run
    client = MlflowClient(uri)
    run = client.get_run(run_id)
    with using_tracking_uri(uri):  # the fluent API, as a user with MLFLOW_TRACKING_URI set calls it
        found = mlflow.search_logged_models(
            experiment_ids=[run.info.experiment_id], filter_string=f"source_run_id = '{run_id}'", output_format="list"
        )
    assert len(found) == 1
    model = found[0]
    assert model.name == artifacts.PYFUNC_MODEL and str(model.status) in ("READY", "LoggedModelStatus.READY")
    assert [o.model_id for o in run.outputs.model_outputs] == [model.model_id]  # the run's Models tab
    assert model.params["hidden_sizes"] == "[32]" and model.params == run.data.params
    linked = {m.key: m.value for m in model.metrics}
    for key in ("val/nll", "val/acc", "test/acc", "test/nll", "test/ece"):  # test/* are logged after the fit
        assert linked[key] == pytest.approx(run.data.metrics[key]), key
    assert len(client.get_metric_history(run_id, "val/nll")) == 3  # linking adds no point to the run's history
    files = [f.path for f in client.list_logged_model_artifacts(model.model_id)]
    assert "MLmodel" in files and "python_model.pkl" not in files
    mlmodel = Path(mlflow.artifacts.download_artifacts(f"{model.artifact_location}/MLmodel", dst_path=str(tmp_path)))
    flavor = yaml.safe_load(mlmodel.read_text())["flavors"]["python_function"]
    assert flavor["loader_module"] == "mlflow.pyfunc.loaders.code_model"  # a model from code, never a pickle
    assert Path(flavor["model_code_path"]).name == "pyfunc_model.py"


def test_pyfunc_model_loads_and_predicts_statistics(digits_run, tmp_path):
    uri, run_id = digits_run
    with using_tracking_uri(uri):  # MLflow finds the run's LoggedModel through its global store
        local = mlflow.artifacts.download_artifacts(f"runs:/{run_id}/{artifacts.PYFUNC_MODEL}", dst_path=str(tmp_path))
    model = mlflow.pyfunc.load_model(local)
    signature = model.metadata.signature
    assert signature is not None and signature.params is not None
    assert {p.name for p in signature.params.params} == {"num_samples", "seed"}
    assert (Path(local) / "input_example.json").is_file()
    assert not list(Path(local).rglob("*.pkl"))  # a model from code: nothing pickled
    x = np.random.default_rng(0).random((5, 1, 8, 8), dtype=np.float32)
    out = model.predict(x, params={"num_samples": 8, "seed": 1})
    probs = out[[f"prob_{i}" for i in range(10)]].to_numpy()
    assert out.shape[0] == 5 and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert (out["entropy"] >= 0).all() and (out["mutual_information"] >= 0).all()
    again = model.predict(x, params={"num_samples": 8, "seed": 1})
    assert out.equals(again)  # seeded: the same request gives the same answer
    reloaded = load_model(run_id, tracking_uri=uri)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        mean = reloaded.sample_predictions(torch.from_numpy(x), 8).mean(0).numpy()
    assert np.allclose(probs, mean, atol=1e-6)


def test_pyfunc_model_loads_where_lightning_bnn_is_not_installed(digits_run, tmp_path):
    import subprocess
    import sys

    uri, run_id = digits_run
    with using_tracking_uri(uri):  # MLflow finds the run's LoggedModel through its global store
        local = mlflow.artifacts.download_artifacts(f"runs:/{run_id}/{artifacts.PYFUNC_MODEL}", dst_path=str(tmp_path))
    assert (Path(local) / "code" / "lightning_bnn" / "tracking" / "serialization.py").is_file()
    script = (
        "import importlib.util, json, sys, mlflow\n"
        "assert importlib.util.find_spec('lightning_bnn') is None, 'lightning_bnn must not be importable here'\n"
        "model = mlflow.pyfunc.load_model(sys.argv[1])\n"
        "example = json.load(open(sys.argv[1] + '/input_example.json'))\n"
        "import numpy as np\n"
        "out = model.predict(np.asarray(example, dtype=np.float32), params={'num_samples': 4})\n"
        "print(len(out), sorted(out.columns)[0])\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MLFLOW_TRACKING_URI")}
    proc = subprocess.run(
        [sys.executable, "-c", script, local], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["2", "entropy"]


def _log_model_dir(client: MlflowClient, experiment_id: str, folder: Path) -> str:
    run_id = client.create_run(experiment_id).info.run_id
    client.log_artifacts(run_id, str(folder), artifacts.MODEL_DIR)
    client.set_terminated(run_id)
    return run_id


@pytest.fixture(scope="module")
def scratch_uri(tmp_path_factory) -> str:
    """One store for this module's light tests (a new SQLite store costs seconds of schema migrations)."""
    root = tmp_path_factory.mktemp("scratch_store")
    return resolve_tracking_uri(f"sqlite:///{root}/mlflow.db")


@pytest.fixture
def bad_store(scratch_uri, digits_run, tmp_path, request):
    """A fresh experiment and a copy of the shared run's model folder (the shared run is never touched)."""
    uri, run_id = digits_run
    good = Path(MlflowClient(uri).download_artifacts(run_id, artifacts.MODEL_DIR, str(tmp_path / "good")))
    client = MlflowClient(scratch_uri)
    return client, client.create_experiment(request.node.name), good


def test_load_model_refuses_a_truncated_weights_file(bad_store, tmp_path):
    client, experiment, good = bad_store
    broken = tmp_path / "truncated"
    broken.mkdir()
    (broken / "model.json").write_bytes((good / "model.json").read_bytes())
    data = (good / "weights.safetensors").read_bytes()
    (broken / "weights.safetensors").write_bytes(data[: len(data) // 2])
    run_id = _log_model_dir(client, experiment, broken)
    before = artifact_files(client, run_id)
    with pytest.raises(ModelLoadError, match="not a valid safetensors file"):
        load_model(run_id, tracking_uri=client.tracking_uri)
    assert artifact_files(client, run_id) == before
    assert client.get_run(run_id).info.status == "FINISHED"


def test_load_model_refuses_weights_that_do_not_match_the_config(bad_store, tmp_path):
    client, experiment, good = bad_store
    mismatched = tmp_path / "mismatched"
    mismatched.mkdir()
    config = json.loads((good / "model.json").read_text())
    config["hparams"]["hidden_sizes"] = [48]
    (mismatched / "model.json").write_text(json.dumps(config))
    (mismatched / "weights.safetensors").write_bytes((good / "weights.safetensors").read_bytes())
    run_id = _log_model_dir(client, experiment, mismatched)
    with pytest.raises(ModelLoadError, match=r"do not match model\.json.*shape"):
        load_model(run_id, tracking_uri=client.tracking_uri)


def test_load_model_names_a_missing_run_and_a_run_without_weights(bad_store):
    client, experiment, _ = bad_store
    with pytest.raises(ModelLoadError, match="no run '0123456789abcdef0123456789abcdef'"):
        load_model("0123456789abcdef0123456789abcdef", tracking_uri=client.tracking_uri)
    empty = client.create_run(experiment).info.run_id
    client.set_terminated(empty, "FAILED")
    with pytest.raises(ModelLoadError, match="has no saved model.*status is FAILED"):
        load_model(f"runs:/{empty}", tracking_uri=client.tracking_uri)
    for bad in ("", "runs:/", "../etc/passwd"):
        with pytest.raises(ModelLoadError, match="run id"):
            parse_run(bad)
    assert len(client.search_runs([experiment])) == 1  # nothing created along the way


def test_load_model_reads_a_local_copy_without_the_store(tmp_path):
    torch.manual_seed(0)
    model = BNNModule(input_shape=[3], num_outputs=2, hidden_sizes=[4])
    save_model(model, tmp_path / "m")
    from lightning_bnn.tracking.serialization import load_model_dir

    x = torch.randn(4, 3)
    assert torch.equal(_sample(load_model_dir(tmp_path / "m"), x), _sample(model.eval(), x))


# -- pure pieces -----------------------------------------------------------------------------------------
def test_flatten_params_drops_internal_keys_and_reads_well():
    from lightning_bnn.nn.models import LayerType

    flat = flatten_params(
        {"_instantiator": "x", "__path__": "p", "prior": {"name": "gaussian", "sigma": 1.0}, "hidden_sizes": (8, 8)}
        | {"layer_type": LayerType.bayes, "config": ["a.yaml"]}
    )
    assert flat == {"prior.name": "gaussian", "prior.sigma": "1.0", "hidden_sizes": "[8, 8]", "layer_type": "bayes"}


def test_histogram_counts_edges_and_edge_cases():
    h = histogram(np.array([0.0, 1.0, 2.0, 3.0, np.nan, np.inf]), bins=3)
    assert h == {"edges": [0.0, 1.0, 2.0, 3.0], "counts": [1, 1, 2]}
    assert histogram(np.array([2.0, 2.0]), bins=2) == {"edges": [1.5, 2.0, 2.5], "counts": [0, 2]}
    assert histogram(np.array([np.nan]))["counts"] == [0]
    with pytest.raises(ValueError, match="bins"):
        histogram(np.zeros(3), bins=0)


def test_reliability_on_a_hand_made_case():
    probs = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.45, 0.55]])
    target = torch.tensor([0, 1, 1, 1])
    doc = reliability(probs, target, num_bins=2)
    low, high = doc["bins"]
    assert (low["lower"], low["upper"], high["upper"]) == (0.0, 0.5, 1.0)
    assert low["count"] == 0 and low["accuracy"] is None
    assert high["count"] == 4
    assert high["confidence"] == pytest.approx((0.9 + 0.8 + 0.7 + 0.55) / 4)
    assert high["accuracy"] == pytest.approx(0.75)
    assert doc["ece"] == pytest.approx(abs(0.75 - 0.7375))


def test_reliability_ece_agrees_with_torchmetrics():
    from torchmetrics.functional.classification import multiclass_calibration_error

    gen = torch.Generator().manual_seed(0)
    probs = torch.softmax(3 * torch.randn(500, 5, generator=gen), dim=1)
    target = torch.randint(0, 5, (500,), generator=gen)
    expected = multiclass_calibration_error(probs, target, num_classes=5, n_bins=15, norm="l1")
    assert reliability(probs, target)["ece"] == pytest.approx(float(expected), abs=1e-6)
    with pytest.raises(ValueError, match="expected probs"):
        reliability(probs[0], target)


def test_predictive_band_sorts_by_x_and_uses_a_95_percent_interval():
    x = torch.tensor([[0.3], [0.1], [0.2]])
    mean = torch.tensor([[3.0], [1.0], [2.0]])
    doc = predictive_band(x, mean + 0.5, mean, torch.ones(3, 1), train_range=(0.0, 0.5))
    assert doc["x"] == pytest.approx([0.1, 0.2, 0.3])
    assert doc["mean"] == [1.0, 2.0, 3.0] and doc["target"] == [1.5, 2.5, 3.5]
    assert doc["upper"][0] - doc["mean"][0] == pytest.approx(1.959964, abs=1e-5)
    assert doc["train_range"] == [0.0, 0.5]


def test_posterior_summary_covers_every_bayesian_weight():
    model = BNNModule(input_shape=[4], num_outputs=3, hidden_sizes=[5])
    summary = posterior_summary(model, bins=7)
    assert [layer["num_weights"] for layer in summary["layers"]] == [4 * 5 + 5, 5 * 3 + 3]
    assert sum(summary["all"]["log10_snr"]["counts"]) == 4 * 5 + 5 + 5 * 3 + 3
    deterministic = BNNModule(input_shape=[4], num_outputs=3, hidden_sizes=[5], layer_type="deterministic")
    assert posterior_summary(deterministic)["layers"] == []


# -- runs / compare ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def three_runs(scratch_uri):
    """Three lightweight runs (logged directly) that differ in their prior."""
    tracking_uri = scratch_uri
    client = MlflowClient(tracking_uri)
    experiment = client.create_experiment("priors")
    ids = []
    for i, prior in enumerate(("gaussian", "scale_mixture", "laplace")):
        run = client.create_run(experiment, tags={"dataset": "digits", "prior": prior}, run_name=f"run-{prior}")
        for key, value in {"prior.name": prior, "lr": "0.001", "hidden_sizes": "[32]"}.items():
            client.log_param(run.info.run_id, key, value)
        for step in range(3):
            client.log_metric(run.info.run_id, "val/nll", 1.0 / (step + 1) + i, step=step)
        client.set_terminated(run.info.run_id)
        ids.append(run.info.run_id)
    return tracking_uri, ids


def test_runs_command_lists_and_filters(three_runs):
    uri, ids = three_runs
    out = io.StringIO()
    assert runs_main(["--tracking-uri", uri, "--experiment", "priors"], out=out) == 0
    text = out.getvalue()
    assert all(i in text for i in ids) and "prior.name" in text and "val/nll" in text
    out = io.StringIO()
    assert runs_main(["--tracking-uri", uri, "--tag", "prior=laplace"], out=out) == 0
    assert ids[2] in out.getvalue() and ids[0] not in out.getvalue()
    assert runs_main(["--tracking-uri", uri, "--experiment", "nope"], out=io.StringIO()) == 2


def test_compare_command_shows_param_differences_and_final_metrics(three_runs):
    uri, ids = three_runs
    out = io.StringIO()
    assert compare_main([ids[0], f"runs:/{ids[1]}", "--tracking-uri", uri], out=out) == 0
    text = out.getvalue()
    assert "params that differ (1)" in text
    line = next(ln for ln in text.splitlines() if ln.startswith("prior.name"))
    assert "gaussian" in line and "scale_mixture" in line
    assert "lr" not in [ln.split()[0] for ln in text.splitlines() if ln.strip()]
    metric = next(ln for ln in text.splitlines() if ln.startswith("val/nll"))
    assert metric.split()[1:] == ["0.3333", "1.333"]
    assert compare_main(["0123456789abcdef0123456789abcdef", "--tracking-uri", uri], out=io.StringIO()) == 2


def test_command_helpers():
    assert parse_tags(["a=1", "b=x=y"]) == {"a": "1", "b": "x=y"}
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_tags(["oops"])
    assert (
        build_filter({"task": "it's"}, "finished", None) == "tags.`task` = 'it\\'s' and attributes.status = 'FINISHED'"
    )
    assert diff_params([{"a": "1", "b": "2"}, {"a": "1", "b": "3", "c": "4"}]) == [("b", ["2", "3"]), ("c", ["", "4"])]
    assert format_table(["h", "v"], [["x", ""]]).splitlines() == ["h  v", "-  -", "x  -"]


def test_a_test_run_from_a_checkpoint_is_recorded_completely(digits_run, scratch_uri, tmp_path):
    from bnn_testing import CONFIGS

    from lightning_bnn.cli.app import main

    uri, run_id = digits_run
    ckpt = MlflowClient(uri).download_artifacts(run_id, artifacts.BEST_CHECKPOINT, str(tmp_path))
    args = ["test", "--config", str(CONFIGS / "digits.yaml"), "--ckpt_path", ckpt, "--model.hidden_sizes", "[32]"]
    cli = main([*args, "--mlflow.tracking_uri", scratch_uri, "--mlflow.experiment", "test-only"])
    client = MlflowClient(scratch_uri)
    run = client.get_run(cli.trainer.logger.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["prior.name"] == "gaussian" and run.data.tags["dataset"] == "digits"
    assert "test/acc" in run.data.metrics and "train/loss" not in run.data.metrics
    assert {artifacts.CONFIG, artifacts.RELIABILITY} <= artifact_files(client, run.info.run_id)
    assert (
        run.info.start_time <= int(run.data.tags["lightning_bnn.heartbeat"]) <= run.info.end_time
    )  # a test run beats too


def test_runs_get_readable_names_not_the_seeded_random_one(digits_run):
    from mlflow import MlflowClient

    from lightning_bnn.tracking.store import default_run_name

    uri, run_id = digits_run
    name = MlflowClient(uri).get_run(run_id).info.run_name
    # MLflow's random names come from Python's random, seeded by seed_everything: every run would share one
    assert name.startswith("digits-bayes-gaussian-"), name
    assert default_run_name({"layer_type": "deterministic", "prior": {"name": "gaussian"}}, "toy").startswith(
        "toy-deterministic-"
    )


def test_reliability_diagram_and_test_ece_agree_exactly_at_bin_edges():
    from lightning_bnn.evaluation.metrics import classification_metrics

    # confidences of exactly 1 and exactly on bin edges (9/15, 12/15): where two bin conventions differ
    probs = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.4], [0.2, 0.8], [0.8, 0.2], [0.55, 0.45]])
    target = torch.tensor([0, 0, 1, 1, 0, 0])
    metrics = classification_metrics(2)
    metrics.update(probs[None], target)  # one Monte Carlo sample: the predictive is probs itself
    assert reliability(probs, target)["ece"] == float(metrics.compute()["ece"])
    assert sum(b["count"] for b in reliability(probs, target)["bins"]) == 6


def test_risk_coverage_by_hand():
    from lightning_bnn.evaluation.reports import risk_coverage_doc

    # ten inputs, most certain first; the two wrong ones are the least certain
    uncertainty = torch.arange(10, dtype=torch.float64)
    correct = torch.tensor([True] * 8 + [False] * 2)
    doc = risk_coverage_doc(uncertainty, correct)
    assert doc["accuracy_at"] == {"100": 0.8, "90": pytest.approx(8 / 9), "80": 1.0, "50": 1.0}
    assert doc["coverage"][0] == 0.1 and doc["coverage"][-1] == 1.0 and len(doc["coverage"]) == 10
    assert doc["aurc"] == pytest.approx((0 * 8 + 1 / 9 + 2 / 10) / 10)


def test_classification_runs_log_the_risk_coverage_curve(digits_run, tmp_path):
    from mlflow import MlflowClient

    uri, run_id = digits_run
    client = MlflowClient(uri)
    doc = read_json(client, run_id, artifacts.RISK_COVERAGE, tmp_path)
    assert doc["coverage"][-1] == 1.0 and len(doc["coverage"]) == len(doc["accuracy"]) <= 101
    metrics = client.get_run(run_id).data.metrics
    # the same model, other Monte Carlo draws: the full-coverage accuracy and the AURC agree closely
    assert doc["accuracy_at"]["100"] == pytest.approx(metrics["test/acc"], abs=0.03)
    assert doc["aurc"] == pytest.approx(metrics["test/aurc"], abs=0.02)
    # refusing the least certain half removes errors: a working classifier is least sure where it is wrong
    assert doc["accuracy_at"]["50"] > doc["accuracy_at"]["100"]
    assert artifacts.RISK_COVERAGE_CHART in artifact_files(client, run_id)
