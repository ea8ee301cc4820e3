"""The same training command against a real ``mlflow server`` over HTTP (a team's shared store)."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
from bnn_testing import CONFIGS, free_port, stop, train, wait_http
from mlflow import MlflowClient

from lightning_bnn import load_model
from lightning_bnn.cli.commands import runs_main
from lightning_bnn.tracking import artifacts
from lightning_bnn.tracking.registry import register_run


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A lean ``mlflow server`` (1 worker, no job runner) on a free port; stopped by PID (SIGTERM)."""
    root = tmp_path_factory.mktemp("server")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    log = open(root / "server.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{root}/server.db",
            "--artifacts-destination",
            str(root / "artifacts"),
        ],
        cwd=root,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        try:
            wait_http(f"{url}/health", timeout=90, proc=proc)
        except (RuntimeError, TimeoutError) as err:
            raise AssertionError(f"{err}\n{(root / 'server.log').read_text()[-3000:]}") from err
        yield url, root
    finally:
        stop(proc)  # by its PID
        log.close()


def test_train_against_a_server_and_read_it_back(mlflow_server, tmp_path):
    url, root = mlflow_server
    cli = train(
        CONFIGS / "digits.yaml",
        url,
        "--trainer.max_epochs",
        "2",
        "--model.hidden_sizes",
        "[16]",
        "--model.num_samples_eval",
        "4",
        "--mlflow.experiment",
        "team",
        "--trainer.default_root_dir",
        str(tmp_path / "ckpt"),
    )
    run_id = cli.trainer.logger.run_id
    client = MlflowClient(url)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "team"
    assert run.data.params["hidden_sizes"] == "[16]" and run.data.tags["dataset"] == "digits"
    assert len(client.get_metric_history(run_id, "val/nll")) == 2
    paths = {a.path for a in client.list_artifacts(run_id, artifacts.MODEL_DIR)}
    assert {artifacts.WEIGHTS, artifacts.MODEL_CONFIG} <= paths
    # artifacts went through the server into its --artifacts-destination, not to a local folder
    assert list((root / "artifacts").rglob("weights.safetensors"))
    model = load_model(f"runs:/{run_id}", tracking_uri=url)
    assert model.hparams.hidden_sizes == [16]
    # the pyfunc LoggedModel and the registry work through the server too
    (logged,) = client.search_logged_models([run.info.experiment_id], filter_string=f"source_run_id = '{run_id}'")
    version = register_run(run_id, "team-digits", "champion", tracking_uri=url)
    assert version.model_id == logged.model_id and version.run_id == run_id
    assert load_model("models:/team-digits@champion", tracking_uri=url).hparams.hidden_sizes == [16]
    out = io.StringIO()
    assert runs_main(["--tracking-uri", url, "--experiment", "team"], out=out) == 0
    assert run_id in out.getvalue() and "team-digits v1 @champion" in out.getvalue()
    assert list((tmp_path / "ckpt").rglob("*.ckpt"))
