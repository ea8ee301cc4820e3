"""Dashboard fixtures: copies of the shared real stores, extended with synthetic runs and a sweep."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from bnn_testing import free_port  # noqa: F401 - re-exported for the dashboard tests

APP = Path(__file__).resolve().parents[2] / "dashboard" / "streamlit_app.py"


def copy_store(uri: str, root: Path) -> str:
    """Copy a SQLite store's database (artifacts stay where the runs logged them: read-only use)."""
    src = sqlite3.connect(uri[len("sqlite:///") :])
    (root / "mlruns").mkdir(parents=True)
    dst = sqlite3.connect(root / "mlruns" / "mlflow.db")
    with dst:
        src.backup(dst)  # consistent even with a write-ahead log beside the file
    src.close()
    dst.close()
    return f"sqlite:///{root}/mlruns/mlflow.db"


def log_fake_run(client, experiment_id: str, name: str, params: dict, metrics: dict, tags: dict | None = None) -> str:
    """A finished run with params, a short metric history and tags, but no artifacts."""
    run = client.create_run(experiment_id, run_name=name, tags=tags or {})
    run_id = run.info.run_id
    for key, value in params.items():
        client.log_param(run_id, key, str(value))
    for key, value in metrics.items():
        for step in range(3):
            client.log_metric(run_id, key, value * (1 + 0.1 * (2 - step)), step=step)
    client.set_terminated(run_id)
    return run_id


@pytest.fixture(scope="session")
def rich_store(digits_run, tmp_path_factory) -> dict:
    """The digits run plus: a second (fake, artifact-less) digits run and a 3-trial sweep over lr.

    Returns ``{"uri", "digits", "fake", "sweep", "trials"}``.
    """
    from mlflow import MlflowClient

    uri = copy_store(digits_run[0], tmp_path_factory.mktemp("rich_store"))
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("digits").experiment_id
    fake = log_fake_run(
        client,
        experiment,
        "no-artifacts",
        {"lr": 0.01, "dataset": "digits", "prior.name": "gaussian", "prior.sigma": "0.5", "estimator": "flipout"},
        {"val/acc": 0.5, "test/acc": 0.55, "test/ece": 0.2},
        {"dataset": "digits", "task": "classification"},
    )
    sweep_experiment = client.create_experiment("sweeps")
    parent = log_fake_run(
        client,
        sweep_experiment,
        "lr-sweep",
        {},
        {},
        {"lightning_bnn.sweep": "true", "swept_fields": json.dumps(["lr", "prior.sigma"])},
    )
    trials = [
        log_fake_run(
            client,
            sweep_experiment,
            f"trial-{i}",
            {"lr": lr, "prior.sigma": sigma},
            {"test/acc": acc},
            {"mlflow.parentRunId": parent},
        )
        for i, (lr, sigma, acc) in enumerate([(0.001, 1.0, 0.7), (0.003, 0.5, 0.8), (0.01, 0.1, 0.75)])
    ]
    return {"uri": uri, "digits": digits_run[1], "fake": fake, "sweep": parent, "trials": trials}


@pytest.fixture
def closed_port_uri() -> str:
    """An http:// tracking URI where nothing listens."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture(scope="session")
def iris_run(tmp_path_factory) -> tuple[str, str]:
    """(tracking_uri, run_id) of a tiny real CSV classification run (scikit-learn's iris as a CSV file)."""
    from bnn_testing import train
    from sklearn.datasets import load_iris

    root = tmp_path_factory.mktemp("iris_store")
    (root / "mlruns").mkdir()
    iris = load_iris(as_frame=True)
    frame = iris.frame.rename(columns=lambda c: c.replace(" (cm)", "").replace(" ", "_"))
    frame["target"] = [iris.target_names[t] for t in iris.target]
    frame.to_csv(root / "iris.csv", index=False)
    config = root / "iris.yaml"
    config.write_text(
        "trainer: {max_epochs: 2, accelerator: cpu, log_every_n_steps: 1}\n"
        "model: {hidden_sizes: [8], num_samples_eval: 5}\n"
        "data:\n  class_path: lightning_bnn.data.tabular.CSVDataModule\n"
        f"  init_args: {{path: {root / 'iris.csv'}, target: target, task: classification, batch_size: 32}}\n"
    )
    uri = f"sqlite:///{root}/mlruns/mlflow.db"
    cli = train(config, uri)
    return uri, cli.trainer.logger.run_id


@pytest.fixture(scope="session")
def study_store(tmp_path_factory) -> dict:
    """A real MLflow store and a real Optuna SQLite storage holding a finished 8-trial study (no training).

    The parent and child runs carry the tags ``lightning_bnn sweep`` writes; trial 7 is pruned.
    Returns ``{"uri", "storage", "study", "parent", "runs"}`` (runs: trial number -> run id).
    """
    import optuna
    from mlflow import MlflowClient

    root = tmp_path_factory.mktemp("study_store")
    (root / "mlruns").mkdir()
    uri = f"sqlite:///{root}/mlruns/mlflow.db"
    storage = f"sqlite:///{root}/mlruns/optuna.db"
    client = MlflowClient(uri)
    experiment = client.create_experiment("digits-sweeps")
    tags = {
        "lightning_bnn.sweep": "true",
        "swept_fields": json.dumps(["prior.pi", "prior.sigma1"]),
        "lightning_bnn.optuna_study": "prior",
        "lightning_bnn.optuna_storage": storage,
        "lightning_bnn.sweep_metric": "val/nll",
    }
    parent = log_fake_run(client, experiment, "prior", {}, {}, tags)
    study = optuna.create_study(study_name="prior", storage=storage, direction="minimize")
    pi = optuna.distributions.FloatDistribution(0.1, 0.9)
    sigma1 = optuna.distributions.FloatDistribution(0.1, 1.0, log=True)
    run_ids = {}
    for number in range(8):
        params = {"prior.pi": 0.1 + 0.1 * number, "prior.sigma1": 1.0 / (1 + number)}
        value = 0.3 + (params["prior.pi"] - 0.5) ** 2 + 0.2 * params["prior.sigma1"]
        run_id = log_fake_run(
            client,
            experiment,
            f"prior-{number:03d}",
            params,
            {"val/nll": value},
            {"mlflow.parentRunId": parent, "lightning_bnn.optuna_trial": str(number)},
        )
        run_ids[number] = run_id
        state = optuna.trial.TrialState.PRUNED if number == 7 else optuna.trial.TrialState.COMPLETE
        study.add_trial(
            optuna.trial.create_trial(
                params=params,
                distributions={"prior.pi": pi, "prior.sigma1": sigma1},
                value=value,
                state=state,
                intermediate_values={0: value},
                user_attrs={"mlflow_run_id": run_id},
            )
        )
    return {"uri": uri, "storage": storage, "study": "prior", "parent": parent, "runs": run_ids}


@pytest.fixture(scope="session")
def resnet_run(tmp_path_factory) -> tuple[str, str]:
    """(tracking_uri, run_id) of the example residual CNN (your own network) on digits, last block Bayesian."""
    from bnn_testing import CONFIGS, new_store, train

    uri = new_store(tmp_path_factory, "resnet_store")
    cli = train(
        CONFIGS / "digits.yaml",
        uri,
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        "3",
        "--model.num_samples_eval",
        "4",
        "--model.network.class_path",
        "lightning_bnn.nn.resnet.ResidualCNN",
        "--model.network.init_args.width",
        "4",
        "--model.bayesian_layers",
        '["blocks.2", "head"]',
    )
    return uri, cli.trainer.logger.run_id


#: the layer types of :func:`three_kinds`, newest run first (the order of the Runs table)
LAYER_TYPES = ("bayes", "deterministic", "mc_dropout")


def register(uri: str, run_id: str, name: str, alias: str) -> str:
    """Register a run's pyfunc model as ``name`` with ``alias``; returns the version.

    The run's LoggedModel when it has one (``models:/<model id>``), else the run's ``pyfunc`` folder
    (``runs:/<run id>/pyfunc``, models logged as plain artifacts): either way the version's ``run_id``
    is the run.
    """
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(uri)
    try:
        logged = mlflow.search_logged_models(filter_string=f"source_run_id = '{run_id}'", output_format="list")
        source = f"models:/{logged[0].model_id}" if logged else f"runs:/{run_id}/pyfunc"
        version = mlflow.register_model(source, name).version
        MlflowClient(uri).set_registered_model_alias(name, alias, version)
    finally:
        mlflow.set_tracking_uri(None)
    return str(version)


@pytest.fixture(scope="session")
def three_kinds(tmp_path_factory) -> dict:
    """One store with tiny real runs: a toy regression run, then digits runs of each layer type.

    The digits runs (1 epoch, hidden [16]) are a Bayes-by-Backprop, a deterministic and an
    MC-dropout network; the BBB run is registered as ``digits-bnn`` and the toy run as ``toy-bnn``,
    each with the alias ``champion``.
    Returns ``{"uri", "toy", "bayes", "deterministic", "mc_dropout", "registered": (name, version)}``.
    """
    from bnn_testing import CONFIGS, new_store, train

    uri = new_store(tmp_path_factory, "three_kinds")
    out = {"uri": uri}
    toy = train(CONFIGS / "toy_regression.yaml", uri, "--trainer.max_epochs", "2", "--model.hidden_sizes", "[8]")
    out["toy"] = toy.trainer.logger.run_id
    for layer_type in LAYER_TYPES[::-1]:
        cli = train(
            CONFIGS / "digits.yaml",
            uri,
            "--trainer.max_epochs",
            "1",
            "--model.hidden_sizes",
            "[16]",
            "--model.layer_type",
            layer_type,
            "--mlflow.run_name",
            f"digits-{layer_type}",
        )
        out[layer_type] = cli.trainer.logger.run_id
    out["registered"] = ("digits-bnn", register(uri, out["bayes"], "digits-bnn", "champion"))
    register(uri, out["toy"], "toy-bnn", "champion")
    return out
