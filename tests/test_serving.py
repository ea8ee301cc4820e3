"""Registry and serving for real: register a run, ``mlflow models serve -m models:/NAME@champion``, query it.

The registered models live in *copies* of the shared digits and toy stores (an SQLite backup of
the database; the artifacts stay where the shared runs wrote them and are only read), so the
shared runs and their stores are not changed. Both servers start together (``--env-manager
local``, the venv's ``bin/`` first on PATH, as docs/serving.md says) and are stopped by PID.
"""

from __future__ import annotations

import json
import math
import sqlite3
import subprocess
import sys
import urllib.error
import urllib.request
from contextlib import closing
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from bnn_testing import cli_env, free_port, stop, wait_http
from mlflow import MlflowClient

from lightning_bnn import load_model
from lightning_bnn.tracking.pyfunc_model import predict_frame

pytestmark = pytest.mark.slow  # two real model servers (about 20-40 s to start on 2 cores)


def _copy_store(uri: str, folder: Path) -> str:
    """A copy of the SQLite store ``uri`` in ``folder`` (an online backup; its artifact URIs name the original)."""
    target = folder / "mlflow.db"
    with closing(sqlite3.connect(uri[len("sqlite:///") :])) as src, closing(sqlite3.connect(target)) as dst:
        src.backup(dst)
    return f"sqlite:///{target}"


def _serve(uri: str, model_uri: str, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    venv_bin = str(Path(sys.executable).parent)
    env = cli_env(MLFLOW_TRACKING_URI=uri, OMP_NUM_THREADS="1")
    env["PATH"] = f"{venv_bin}:{env.get('PATH', '')}"  # `mlflow models serve` execs uvicorn from PATH
    cmd = [f"{venv_bin}/mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local"]
    cmd += ["-h", "127.0.0.1", "-p", str(port), "-w", "1"]
    out = open(log, "w")  # noqa: SIM115 - the child holds it; closed with the process
    proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=log.parent)
    out.close()
    return proc, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def served(digits_run, toy_run, tmp_path_factory):
    """{"digits"|"toy": (store uri, run id, server url)}: each run registered as NAME@champion and served."""
    from lightning_bnn.cli.register import main as register_main

    root = tmp_path_factory.mktemp("serving")
    setup, procs = {}, []
    try:
        for kind, (uri, run_id) in (("digits", digits_run), ("toy", toy_run)):
            folder = root / kind
            folder.mkdir()
            copy = _copy_store(uri, folder)
            assert register_main([run_id, "--name", f"{kind}-bnn", "--alias", "champion", "--tracking-uri", copy]) == 0
            proc, url = _serve(copy, f"models:/{kind}-bnn@champion", folder / "serve.log")
            procs.append(proc)
            setup[kind] = (copy, run_id, url, proc, folder / "serve.log")
        for _, _, url, proc, log in setup.values():
            try:
                wait_http(f"{url}/ping", timeout=240, proc=proc)
            except (RuntimeError, TimeoutError) as err:
                raise AssertionError(f"{err}\n{log.read_text()[-3000:]}") from err
        yield {kind: value[:3] for kind, value in setup.items()}
    finally:
        for proc in procs:
            stop(proc)  # by its PID


def _post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        f"{url}/invocations", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def _digits(n: int) -> np.ndarray:
    from sklearn.datasets import load_digits

    images = load_digits().images[:n] / 16.0  # model space, as training saw them
    return images.reshape(n, 1, 8, 8).astype(np.float32)


def test_served_classifier_answers_probabilities_class_entropy_and_mutual_information(served):
    uri, run_id, url = served["digits"]
    x = _digits(4)
    status, body = _post(url, {"inputs": x.tolist(), "params": {"num_samples": 16, "seed": 1}})
    assert status == 200, body
    out = pd.DataFrame(body["predictions"])
    classes = [f"prob_{c}" for c in range(10)]
    assert list(out.columns) == [*classes, "predicted", "entropy", "mutual_information"] and len(out) == 4
    probs = out[classes].to_numpy()
    assert ((probs >= 0) & (probs <= 1)).all() and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert (out["predicted"] == [str(c) for c in probs.argmax(axis=1)]).all()
    assert (out["mutual_information"] >= -1e-6).all()
    assert (out["entropy"] >= out["mutual_information"]).all() and (out["entropy"] <= math.log(10) + 1e-5).all()
    # the served answer is the model that load_model rebuilds from the registered name, same draws
    model = load_model("models:/digits-bnn@champion", tracking_uri=uri)
    summary = model.summarise(
        model.sample_predictions(torch.from_numpy(x), 16, generator=torch.Generator().manual_seed(1))
    )
    assert np.allclose(probs, summary.probs.numpy(), atol=1e-6)
    assert np.allclose(out["entropy"], summary.entropy.numpy(), atol=1e-5)
    assert np.allclose(out["mutual_information"], summary.mutual_information.numpy(), atol=1e-5)
    assert MlflowClient(uri).get_model_version_by_alias("digits-bnn", "champion").run_id == run_id


def test_served_num_samples_is_a_request_parameter(served):
    _, _, url = served["digits"]
    x = _digits(3).tolist()
    _, default = _post(url, {"inputs": x})  # the model's num_samples_eval (20) draws, seed 0
    _, one = _post(url, {"inputs": x, "params": {"num_samples": 1}})
    _, again = _post(url, {"inputs": x, "params": {"num_samples": 20, "seed": 0}})
    assert default == again  # the defaults are what the signature says
    mi_one = [row["mutual_information"] for row in one["predictions"]]
    assert max(abs(v) for v in mi_one) < 1e-6  # one draw has no spread between draws: no epistemic part
    assert max(row["mutual_information"] for row in default["predictions"]) > 1e-4
    status, body = _post(url, {"inputs": x, "params": {"num_samples": 0}})
    assert status == 400 and "num_samples" in body["message"], body
    status, body = _post(url, {"inputs": [[1.0, 2.0]]})
    assert status == 400 and "shape" in body["message"], body


def test_served_regression_answers_mean_std_and_a_95_percent_interval(served):
    uri, _, url = served["toy"]
    rows = [[0.1], [0.25], [1.2]]  # the last is outside the training range [0, 0.5]
    split = {"dataframe_split": {"columns": ["x"], "data": rows}, "params": {"num_samples": 32, "seed": 2}}
    status, body = _post(url, split)
    assert status == 200, body
    out = pd.DataFrame(body["predictions"])
    expected = ["y_mean", "y_std", "y_aleatoric_std", "y_epistemic_std", "y_lower", "y_upper"]
    assert sorted(out.columns) == sorted(expected) and len(out) == 3
    assert (
        (out["y_std"] > 0).all() and (out["y_lower"] < out["y_mean"]).all() and (out["y_mean"] < out["y_upper"]).all()
    )
    assert np.allclose(out["y_upper"] - out["y_lower"], 2 * 1.959964 * out["y_std"], rtol=1e-4)
    assert np.allclose(out["y_std"] ** 2, out["y_aleatoric_std"] ** 2 + out["y_epistemic_std"] ** 2, rtol=1e-4)
    model = load_model("models:/toy-bnn/1", tracking_uri=uri)
    local = predict_frame(model, pd.DataFrame({"x": [r[0] for r in rows]}), {"num_samples": 32, "seed": 2})
    assert np.allclose(out[expected].to_numpy(), local[expected].to_numpy(), atol=1e-5)
    # the same rows as tensor "inputs" give the same answer
    status, body = _post(url, {"inputs": {"x": [r[0] for r in rows]}, "params": {"num_samples": 32, "seed": 2}})
    assert status == 200 and np.allclose(pd.DataFrame(body["predictions"])[expected], out[expected], atol=1e-6), body
