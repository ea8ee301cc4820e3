"""Must hold 4: corrupted or hostile artifacts are refused with a clear error; nothing runs.

Each case plants a bad file where lightning_bnn reads one (a run's ``model/`` artifacts in
a real SQLite store, a run's ``config.yaml``, a checkpoint given to ``fit --ckpt_path``)
and asserts a :class:`ModelLoadError` (or CLI error) naming the problem. The hostile
payloads write a marker file if they are ever executed or imported; it must never appear.
"""

from __future__ import annotations

import json
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from bnn_testing import cli_env, fit_args

from lightning_bnn.tracking.serialization import CONFIG_FILE, WEIGHTS_FILE, ModelLoadError, load_model_dir, save_model
from tests.reliability.jobs import DIGITS, store_uri

#: a module that writes the marker when imported (never imported by these tests)
EVIL_MODULE = "tests.reliability.evil_module"
EVIL_CLASS = "Evil"
SMALL = {"input_shape": [4], "num_outputs": 3, "hidden_sizes": [8]}


class PickleBomb:
    """Unpickling this writes ``marker``: the stand-in for any code a pickle can run."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


@pytest.fixture
def marker(tmp_path, monkeypatch) -> Path:
    """Path that hostile payloads write if executed; asserted absent after each test."""
    path = tmp_path / "PWNED"
    monkeypatch.setenv("LIGHTNING_BNN_EVIL_MARKER", str(path))
    yield path
    assert not path.exists(), "a hostile payload was executed"
    assert EVIL_MODULE not in sys.modules, "a module named by a hostile file was imported"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A real SQLite store and a function logging a (possibly spoiled) model folder as a new run."""
    from mlflow import MlflowClient

    from lightning_bnn.tracking.store import ensure_experiment
    from lightning_bnn.training.module import BNNModule

    root = tmp_path_factory.mktemp("hostile")
    uri = store_uri(root)
    client = MlflowClient(uri)
    experiment = ensure_experiment(client, "hostile", uri)
    good = save_model(BNNModule(**SMALL), root / "good")

    def log_run(spoil) -> str:
        folder = root / f"model{len(list(root.glob('model*')))}"
        folder.mkdir()
        for name in (WEIGHTS_FILE, CONFIG_FILE):
            (folder / name).write_bytes((good / name).read_bytes())
        spoil(folder)
        run = client.create_run(experiment)
        client.log_artifacts(run.info.run_id, str(folder), "model")
        client.set_terminated(run.info.run_id)
        return run.info.run_id

    return uri, log_run


def load(store, spoil):
    from lightning_bnn.tracking.store import load_model

    uri, log_run = store
    return load_model(log_run(spoil), tracking_uri=uri)


def edit_config(change):
    def spoil(folder: Path) -> None:
        config = json.loads((folder / CONFIG_FILE).read_text())
        change(config)
        (folder / CONFIG_FILE).write_text(json.dumps(config))

    return spoil


def test_untouched_model_loads(store, marker):
    assert load(store, lambda folder: None).hparams.hidden_sizes == [8]


def test_truncated_safetensors(store, marker):
    def truncate(folder: Path) -> None:
        data = (folder / WEIGHTS_FILE).read_bytes()
        (folder / WEIGHTS_FILE).write_bytes(data[: len(data) // 2])

    with pytest.raises(ModelLoadError, match="not a valid safetensors file"):
        load(store, truncate)


def test_safetensors_header_claiming_huge_size(store, marker):
    def huge_header(folder: Path) -> None:
        (folder / WEIGHTS_FILE).write_bytes(struct.pack("<Q", 2**62) + b"{}")

    with pytest.raises(ModelLoadError, match="not a valid safetensors file"):
        load(store, huge_header)


def test_pickle_in_place_of_safetensors(store, marker):
    def plant(folder: Path) -> None:
        (folder / WEIGHTS_FILE).write_bytes(pickle.dumps(PickleBomb(marker)))

    with pytest.raises(ModelLoadError, match="not a valid safetensors file"):
        load(store, plant)


def test_weights_of_other_shapes(store, marker):
    with pytest.raises(ModelLoadError, match="weights do not match model.json: .* has shape"):
        load(store, edit_config(lambda c: c["hparams"].update(hidden_sizes=[9])))


def test_weights_of_another_architecture(store, marker):
    with pytest.raises(ModelLoadError, match="weights do not match model.json: missing"):
        load(store, edit_config(lambda c: c["hparams"].update(hidden_sizes=[8, 8])))


def test_unknown_top_level_key(store, marker):
    with pytest.raises(ModelLoadError, match=r"unknown key\(s\) \['extra'\]"):
        load(store, edit_config(lambda c: c.update(extra=1)))


def test_unknown_hyperparameter(store, marker):
    with pytest.raises(ModelLoadError, match="hparams do not fit BNNModule"):
        load(store, edit_config(lambda c: c["hparams"].update(exec_this="rm -rf /")))


def test_invalid_hyperparameter_value(store, marker):
    with pytest.raises(ModelLoadError, match="invalid hyperparameter: hidden_sizes"):
        load(store, edit_config(lambda c: c["hparams"].update(hidden_sizes=[-1])))


@pytest.mark.parametrize("name", [f"{EVIL_MODULE}.{EVIL_CLASS}", "os.system", "builtins.exec", "BNNModule "])
def test_class_outside_the_package(store, marker, name):
    with pytest.raises(ModelLoadError, match="is not a lightning_bnn model"):
        load(store, edit_config(lambda c: c.update({"class": name})))


def test_model_json_not_json_or_huge(tmp_path, marker):
    from lightning_bnn.training.module import BNNModule

    folder = save_model(BNNModule(**SMALL), tmp_path / "m")
    (folder / CONFIG_FILE).write_bytes(b"\x80\x04not json")
    with pytest.raises(ModelLoadError, match="not valid JSON"):
        load_model_dir(folder)
    (folder / CONFIG_FILE).write_text(" " * (2 * 1024 * 1024) + "{}")
    with pytest.raises(ModelLoadError, match="larger than"):
        load_model_dir(folder)


def test_nan_weights(tmp_path, marker):
    from safetensors.torch import load_file, save_file

    from lightning_bnn.training.module import BNNModule

    folder = save_model(BNNModule(**SMALL), tmp_path / "m")
    state = load_file(str(folder / WEIGHTS_FILE))
    key = next(iter(state))
    state[key] = torch.full_like(state[key], float("nan"))
    save_file(state, str(folder / WEIGHTS_FILE))
    with pytest.raises(ModelLoadError, match="NaN or infinite"):
        load_model_dir(folder)


def test_config_yaml_naming_a_foreign_data_class(marker):
    from lightning_bnn.data.stored import StoredDataError, datamodule_from_config

    config = {"data": {"class_path": f"{EVIL_MODULE}.{EVIL_CLASS}", "init_args": {}}}
    with pytest.raises(StoredDataError, match="is not a lightning_bnn data module"):
        datamodule_from_config(config)


# -- checkpoints ---------------------------------------------------------------------------------
def pickle_checkpoint(path: Path, marker: Path) -> Path:
    """A Lightning-looking checkpoint (torch zip format) whose pickle runs code when loaded."""
    torch.save({"epoch": 0, "global_step": 0, "state_dict": {}, "payload": PickleBomb(marker)}, path)
    return path


def test_checkpoint_run_info_never_unpickles(tmp_path, marker):
    from lightning_bnn.tracking.store import checkpoint_run_info

    assert checkpoint_run_info(pickle_checkpoint(tmp_path / "evil.ckpt", marker)) is None
    legacy = tmp_path / "legacy.ckpt"  # the pre-zip pickle format
    legacy.write_bytes(pickle.dumps({"payload": PickleBomb(marker)}))
    assert checkpoint_run_info(legacy) is None


def test_fit_refuses_pickle_checkpoint_with_clear_error(tmp_path, marker, capsys):
    from lightning_bnn.cli.app import main

    evil = pickle_checkpoint(tmp_path / "evil.ckpt", marker)
    args = fit_args(DIGITS, store_uri(tmp_path), "--trainer.max_epochs", "1", "--ckpt_path", str(evil))
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--weights_only", "false"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "refusing to load this checkpoint" in err and "GLOBAL exec" in err


def test_fit_loads_checkpoint_weights_only_even_when_told_otherwise(tmp_path, marker, monkeypatch):
    """Second line of defence: Trainer.fit itself is called with weights_only=True.

    The CLI's first read of the checkpoint is switched off here, and both ways a user can
    ask for unsafe loading are used (``--weights_only false``, TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD).
    """
    from lightning_bnn.cli.app import BNNCLI, main

    monkeypatch.setattr(BNNCLI, "_parse_ckpt_path", lambda self: None)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    evil = pickle_checkpoint(tmp_path / "evil.ckpt", marker)
    args = fit_args(DIGITS, store_uri(tmp_path), "--trainer.max_epochs", "1", "--model.hidden_sizes", "[8]")
    with pytest.raises(pickle.UnpicklingError, match="GLOBAL exec"):
        main([*args, "--ckpt_path", str(evil), "--weights_only", "false", "--mlflow.enabled", "false"])


def test_pickle_bomb_is_live(tmp_path):
    """Control: the payload above really does write its marker when unpickled."""
    marker = tmp_path / "PWNED"
    pickle.loads(pickle.dumps(PickleBomb(marker)))
    assert marker.read_text() == "pwned"
    module_marker = tmp_path / "IMPORTED"
    env = {**cli_env(), "LIGHTNING_BNN_EVIL_MARKER": str(module_marker)}
    subprocess.run([sys.executable, "-c", f"import {EVIL_MODULE}"], env=env, check=True, timeout=60)
    assert module_marker.read_text() == "imported\n"


def test_config_yaml_naming_a_foreign_class_in_the_dashboard(marker):
    from dashboard.predictions import ExamplesUnavailable, test_examples

    config = f"data:\n  class_path: {EVIL_MODULE}.{EVIL_CLASS}\n  init_args: {{}}\n"
    with pytest.raises(ExamplesUnavailable, match="only rebuilt for the bundled data sets"):
        test_examples(config)


def test_fit_refuses_pickle_checkpoint_from_a_store(tmp_path, marker, capsys):
    """``fit --ckpt_path runs:/<run>/...`` downloads a checkpoint from a store: it is loaded weights-only too."""
    from mlflow import MlflowClient

    from lightning_bnn.cli.app import main
    from lightning_bnn.tracking.store import ensure_experiment

    uri = store_uri(tmp_path)
    client = MlflowClient(uri)
    run = client.create_run(ensure_experiment(client, "digits", uri))
    client.log_artifact(run.info.run_id, str(pickle_checkpoint(tmp_path / "last.ckpt", marker)), "checkpoints")
    client.set_terminated(run.info.run_id, "KILLED")
    args = fit_args(DIGITS, uri, "--trainer.max_epochs", "1", "--model.hidden_sizes", "[8]")
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--ckpt_path", f"runs:/{run.info.run_id}/checkpoints/last.ckpt"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "refusing to load this checkpoint" in err and "GLOBAL exec" in err
    assert len(client.search_runs([run.info.experiment_id])) == 1  # no run was started for it
