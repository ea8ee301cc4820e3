"""The model registry: ``register``, registered names in ``runs``/``compare``, ``models:/`` URIs in ``load_model``.

Everything runs on a copy of the shared digits store (an SQLite backup: the shared run is only
read), plus a run in the old layout (the pyfunc model as a plain ``pyfunc/`` artifact folder).
"""

from __future__ import annotations

import io
import sqlite3
from contextlib import closing

import mlflow
import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from lightning_bnn import load_model
from lightning_bnn.cli.commands import compare_main, runs_main
from lightning_bnn.cli.register import main as register_main
from lightning_bnn.tracking import artifacts
from lightning_bnn.tracking.registry import (
    RegisteredVersion,
    RegistryError,
    parse_model_uri,
    register_run,
    registered_labels,
    registered_versions,
)
from lightning_bnn.tracking.serialization import ModelLoadError
from lightning_bnn.tracking.store import using_tracking_uri


@pytest.fixture(scope="module")
def store(digits_run, tmp_path_factory):
    """(copy uri, digits run id, id of a run in the old layout) in a copy of the shared digits store."""
    uri, run_id = digits_run
    root = tmp_path_factory.mktemp("registry")
    with closing(sqlite3.connect(uri[len("sqlite:///") :])) as src, closing(sqlite3.connect(root / "m.db")) as dst:
        src.backup(dst)
    copy = f"sqlite:///{root}/m.db"
    client = MlflowClient(copy)
    # the layout of runs recorded before LoggedModels: model/ and a plain pyfunc/ folder in the run's artifacts
    model_dir = client.download_artifacts(run_id, artifacts.MODEL_DIR, str(root / "dl"))
    with using_tracking_uri(copy):  # MLflow finds the run's LoggedModel through its global store
        pyfunc_dir = mlflow.artifacts.download_artifacts(
            f"runs:/{run_id}/{artifacts.PYFUNC_MODEL}", dst_path=str(root / "dl")
        )
    legacy = client.create_run(client.get_run(run_id).info.experiment_id, run_name="legacy").info.run_id
    client.log_artifacts(legacy, model_dir, artifacts.MODEL_DIR)
    client.log_artifacts(legacy, pyfunc_dir, artifacts.PYFUNC_MODEL)
    client.set_terminated(legacy)
    return copy, run_id, legacy


def _draws(model, seed: int = 5) -> torch.Tensor:
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    return model.sample_predictions(x, 8, generator=torch.Generator().manual_seed(seed))


def test_register_names_a_run_and_load_model_reads_every_model_uri(store, capsys):
    uri, run_id, _ = store
    assert register_main([run_id, "--name", "digits-bnn", "--alias", "champion", "--tracking-uri", uri]) == 0
    printed = capsys.readouterr().out
    assert f"registered run {run_id} as digits-bnn v1 @champion" in printed
    assert "models:/digits-bnn/1" in printed and "models:/digits-bnn@champion" in printed
    client = MlflowClient(uri)
    version = client.get_model_version_by_alias("digits-bnn", "champion")
    experiment = client.get_run(run_id).info.experiment_id
    (logged,) = client.search_logged_models([experiment], filter_string=f"source_run_id = '{run_id}'")
    assert version.run_id == run_id and version.source == f"models:/{logged.model_id}"
    expected = _draws(load_model(run_id, tracking_uri=uri))
    for ref in (
        f"models:/{logged.model_id}",
        "models:/digits-bnn/1",
        "models:/digits-bnn/latest",
        "models:/digits-bnn@champion",
    ):
        assert torch.equal(_draws(load_model(ref, tracking_uri=uri)), expected), ref


def test_a_new_version_takes_the_alias_and_runs_and_compare_show_both(store):
    uri, run_id, legacy = store
    register_run(run_id, "digits-bnn", "champion", tracking_uri=uri)  # idempotent start: v1 or a later one
    newest = register_run(legacy, "digits-bnn", "champion", tracking_uri=uri)
    assert newest.aliases == ("champion",) and newest.run_id == legacy and newest.model_id is None
    versions = [v for v in registered_versions(uri) if v.name == "digits-bnn"]
    assert [v.version for v in versions] == sorted((v.version for v in versions), key=int, reverse=True)
    assert [v.aliases for v in versions if v.aliases] == [("champion",)]  # the alias moved to the newest
    out = io.StringIO()
    assert runs_main(["--tracking-uri", uri], out=out) == 0
    header, _, *rows = out.getvalue().splitlines()
    assert "registered" in header.split()
    legacy_row = next(r for r in rows if r.startswith(legacy))
    assert f"digits-bnn v{newest.version} @champion" in legacy_row
    assert "@champion" not in next(r for r in rows if r.startswith(run_id))
    out = io.StringIO()
    assert compare_main([run_id, legacy, "--tracking-uri", uri], out=out) == 0
    line = next(ln for ln in out.getvalue().splitlines() if ln.startswith("registered"))
    assert "digits-bnn v1" in line and f"v{newest.version} @champion" in line


def test_an_old_run_with_a_plain_pyfunc_folder_registers_and_loads(store, tmp_path):
    uri, run_id, legacy = store
    version = register_run(legacy, "legacy-bnn", tracking_uri=uri)
    source = MlflowClient(uri).get_model_version("legacy-bnn", version.version).source
    assert source.endswith(f"/{artifacts.PYFUNC_MODEL}") and version.model_id is None
    assert torch.equal(_draws(load_model(version.version_uri, tracking_uri=uri)), _draws(load_model(run_id, uri)))
    with using_tracking_uri(uri):  # MLflow reads models:/ URIs from its global store
        model = mlflow.pyfunc.load_model(version.version_uri, dst_path=str(tmp_path))
    x = np.random.default_rng(0).random((2, 1, 8, 8), dtype=np.float32)
    assert len(model.predict(x, params={"num_samples": 4})) == 2


def test_register_refuses_what_it_cannot_register_with_a_clear_message(store, capsys):
    uri, run_id, _ = store
    client = MlflowClient(uri)
    experiment = client.get_run(run_id).info.experiment_id
    failed = client.create_run(experiment).info.run_id
    client.set_terminated(failed, "FAILED")
    deleted = client.create_run(experiment).info.run_id
    client.delete_run(deleted)
    cases = [
        ([failed, "--name", "x"], f"run {failed} has no pyfunc model to register (its status is FAILED"),
        ([deleted, "--name", "x"], f"run {deleted} is deleted"),
        (["0123456789abcdef0123456789abcdef", "--name", "x"], "no run '0123456789abcdef0123456789abcdef'"),
        (["../x", "--name", "x"], "is not a run id"),
        ([run_id, "--name", "a/b"], "model name 'a/b' is not allowed"),
        ([run_id, "--name", "x", "--alias", "v3"], "alias 'v3' is not allowed"),
        ([run_id, "--name", "x", "--alias", "latest"], "alias 'latest' is not allowed"),
    ]
    before = {m.name for m in client.search_registered_models()}
    for argv, message in cases:
        assert register_main([*argv, "--tracking-uri", uri]) == 2, argv
        assert message in capsys.readouterr().err, argv
    assert {m.name for m in client.search_registered_models()} == before  # nothing registered on the way


def test_load_model_names_a_model_uri_it_cannot_resolve(store):
    uri, _, _ = store
    for ref, message in (
        ("models:/nope/1", "models:/nope/1: .*not found"),
        ("models:/digits-bnn@nobody", "alias nobody not found"),
        ("models:/m-0000", "m-0000.*not found"),
        ("models:/", "is not a model URI"),
        ("models:/a/b/c", "is not a model URI"),
    ):
        with pytest.raises(ModelLoadError, match=message):
            load_model(ref, tracking_uri=uri)


def test_model_uris_and_labels_by_hand():
    assert parse_model_uri("models:/m-abc") == ("m-abc", None, None)
    assert parse_model_uri("models:/digits/3") == ("digits", "3", None)
    assert parse_model_uri("models:/digits/Latest") == ("digits", "latest", None)
    assert parse_model_uri("models:/digits@champion") == ("digits", None, "champion")
    for bad in ("runs:/x", "models:/a@", "models:/@b", "models:/a/b", "models:/a/1/2"):
        with pytest.raises(ModelLoadError):
            parse_model_uri(bad)
    versions = [
        RegisteredVersion("b", "1", (), "r1", None),
        RegisteredVersion("a", "2", ("champion", "prod"), "r1", "m-1"),
        RegisteredVersion("a", "10", (), "r2", None),
        RegisteredVersion("a", "3", (), None, None),
    ]
    assert registered_labels(versions) == {"r1": "a v2 @champion @prod, b v1", "r2": "a v10"}
    assert versions[1].uri == "models:/a@champion" and versions[2].uri == "models:/a/10"
    with pytest.raises(RegistryError):
        register_run("r", "bad@name")
