"""Bring your own network through BNNModule, the CLI, model files and the trusted-modules rule."""

from __future__ import annotations

import json
import sys

import pytest
import torch
from bnn_testing import CONFIGS, new_store, train
from byon_nets import TinyNet
from safetensors.torch import save_file

from lightning_bnn.nn.convert import SampledNetwork, bayesian_layer_names
from lightning_bnn.nn.custom import TRUSTED_MODULES_ENV
from lightning_bnn.tracking.serialization import ModelLoadError, load_model_dir, save_model
from lightning_bnn.tracking.store import load_model
from lightning_bnn.training.module import BNNModule

NET = {"class_path": "byon_nets.TinyNet", "init_args": {"width": 4}}


def _module(**kwargs) -> BNNModule:
    return BNNModule(**{"input_shape": [1, 8, 8], "num_outputs": 10, "network": NET, **kwargs})


@pytest.fixture(scope="module")
def custom_run(tmp_path_factory):
    """(uri, run id, in-memory module) of a CLI fit of byon_nets.TinyNet with only its head Bayesian."""
    uri = new_store(tmp_path_factory, "byon_store")
    cli = train(
        CONFIGS / "digits.yaml",
        uri,
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        "3",
        "--model.network.class_path",
        "byon_nets.TinyNet",
        "--model.network.init_args.width",
        "6",
        "--model.bayesian_layers",
        '["head.*"]',
    )
    return uri, cli.trainer.logger.run_id, cli.model


def test_cli_fit_of_a_user_network_reloads_with_equal_predictions(custom_run, tmp_path):
    uri, run_id, trained = custom_run
    assert isinstance(trained.net, SampledNetwork)
    assert type(trained.net.module).__name__ == "TinyNet"
    assert bayesian_layer_names(trained.net.module) == ["head.0", "head.2"]
    assert trained.hparams.network == {"class_path": "byon_nets.TinyNet", "init_args": {"width": 6}}
    assert trained.hparams.bayesian_layers == ["head.*"]
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    config = json.loads(open(client.download_artifacts(run_id, "model/model.json", str(tmp_path))).read())
    assert config["format_version"] == 2
    assert config["hparams"]["network"] == {"class_path": "byon_nets.TinyNet", "init_args": {"width": 6}}
    params = client.get_run(run_id).data.params
    assert params["network"] == "byon_nets.TinyNet" and params["network.width"] == "6"

    loaded = load_model(run_id, uri, trusted_modules=["byon_nets"])
    x = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    trained.eval()
    for estimator in ("auto", "reparameterization", "mean"):
        expected = trained.sample_predictions(x, 7, estimator, torch.Generator().manual_seed(3))
        got = loaded.sample_predictions(x, 7, estimator, torch.Generator().manual_seed(3))
        torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_the_pyfunc_model_of_a_user_network_answers_like_load_model(custom_run, tmp_path, monkeypatch):
    """The run's MLflow model (a LoggedModel, code from the run) imports the network only where trusted."""
    import mlflow
    import numpy as np

    from lightning_bnn.tracking.store import using_tracking_uri

    uri, run_id, _ = custom_run
    monkeypatch.delenv(TRUSTED_MODULES_ENV, raising=False)
    with using_tracking_uri(uri):
        local = mlflow.artifacts.download_artifacts(f"runs:/{run_id}/pyfunc", dst_path=str(tmp_path))
        assert (tmp_path / "pyfunc" / "code" / "byon_nets.py").is_file()  # the network's source travels along
        with pytest.raises(Exception, match=f"byon_nets.TinyNet.*{TRUSTED_MODULES_ENV}=byon_nets"):
            mlflow.pyfunc.load_model(local)
        monkeypatch.setenv(TRUSTED_MODULES_ENV, "byon_nets")
        model = mlflow.pyfunc.load_model(f"runs:/{run_id}/pyfunc")
    x = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    out = model.predict(x.numpy(), params={"num_samples": 7, "seed": 3})
    loaded = load_model(run_id, uri, trusted_modules=["byon_nets"])
    summary = loaded.summarise(loaded.sample_predictions(x, 7, generator=torch.Generator().manual_seed(3)))
    assert np.allclose(out[[f"prob_{c}" for c in range(10)]].to_numpy(), summary.probs.numpy(), atol=1e-6)
    assert np.allclose(out["mutual_information"], summary.mutual_information.numpy(), atol=1e-6)
    assert list(out["predicted"]) == [str(int(c)) for c in summary.predicted]


def test_a_class_path_outside_the_trusted_modules_is_refused_before_any_import(custom_run, tmp_path, monkeypatch):
    _, _, trained = custom_run
    folder = save_model(trained, tmp_path / "model")
    (tmp_path / "evil_pkg_xyz").mkdir()
    (tmp_path / "evil_pkg_xyz" / "__init__.py").write_text(
        "import sys\nsys.modules['evil_pkg_xyz_ran'] = sys\nfrom byon_nets import TinyNet as Net\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    config = json.loads((folder / "model.json").read_text())
    config["hparams"]["network"]["class_path"] = "evil_pkg_xyz.Net"
    (folder / "model.json").write_text(json.dumps(config))
    monkeypatch.delenv(TRUSTED_MODULES_ENV, raising=False)

    with pytest.raises(ModelLoadError) as err:
        load_model_dir(folder)
    message = str(err.value)
    assert "refusing to import the network class 'evil_pkg_xyz.Net'" in message
    assert "trusted_modules=['evil_pkg_xyz']" in message and f"{TRUSTED_MODULES_ENV}=evil_pkg_xyz" in message
    assert "evil_pkg_xyz" not in sys.modules and "evil_pkg_xyz_ran" not in sys.modules
    # a trusted prefix must end at a dot: "evil" does not allow "evil_pkg_xyz"
    with pytest.raises(ModelLoadError, match="refusing to import"):
        load_model_dir(folder, trusted_modules=["evil"])
    assert "evil_pkg_xyz" not in sys.modules

    # allowed by the environment variable: imported and loaded
    monkeypatch.setenv(TRUSTED_MODULES_ENV, "other, evil_pkg_xyz")
    try:
        loaded = load_model_dir(folder)
        assert "evil_pkg_xyz_ran" in sys.modules
        assert loaded.hparams.network["class_path"] == "evil_pkg_xyz.Net"
    finally:
        for name in ("evil_pkg_xyz", "evil_pkg_xyz_ran"):
            sys.modules.pop(name, None)


def test_the_built_in_example_network_needs_no_trust(tmp_path):
    module = BNNModule(
        input_shape=[1, 28, 28],
        network={"class_path": "lightning_bnn.nn.resnet.ResidualCNN", "init_args": {"width": 4}},
        bayesian_layers=["blocks.2", "head"],
    )
    assert bayesian_layer_names(module.net.module) == [
        "blocks.2.conv1",
        "blocks.2.conv2",
        "blocks.2.shortcut.0",
        "head",
    ]
    loaded = load_model_dir(save_model(module, tmp_path / "m"))
    x = torch.rand(2, 1, 28, 28)
    module.eval()
    torch.testing.assert_close(
        loaded.sample_predictions(x, 3, "mean"), module.sample_predictions(x, 3, "mean"), rtol=0, atol=0
    )


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_pretrained_weights_start_the_posterior_means(tmp_path, suffix):
    torch.manual_seed(0)
    source = TinyNet(width=4)
    path = tmp_path / f"weights{suffix}"
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save({"state_dict": state}, path)
    module = _module(pretrained=str(path), delta=0.0)
    net = module.net.module
    torch.testing.assert_close(net.head[0].weight.mu, source.head[0].weight)
    torch.testing.assert_close(net.stem.weight.mu, source.stem.weight)
    torch.testing.assert_close(net.bn.running_var, source.bn.running_var)
    x = torch.rand(3, 1, 8, 8)
    source.eval()
    out = module.eval().net(x, 4)
    torch.testing.assert_close(out, source(x).expand(4, -1, -1), atol=1e-5, rtol=1e-5)
    # the model file records the path; loading does not read it again (the file may be gone)
    folder = save_model(module, tmp_path / "model")
    path.unlink()
    loaded = load_model_dir(folder, trusted_modules=["byon_nets"])
    assert loaded.hparams.pretrained == str(path)
    torch.testing.assert_close(loaded.net.module.head[0].weight.mu, source.head[0].weight)


def test_pickled_pretrained_files_are_refused(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"state_dict": TinyNet().state_dict(), "extra": TinyNet}, path)  # pickles a class
    with pytest.raises(ValueError, match="torch.load\\(weights_only=True\\)"):
        _module(pretrained=str(path))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"network": None, "bayesian_layers": ["head"]}, "bayesian_layers applies to a user network"),
        ({"network": None, "pretrained": "w.pt"}, "pretrained applies to a user network"),
        ({"layer_type": "mc_dropout"}, "layer_type='mc_dropout' needs the built-in architectures"),
        ({"layer_type": "deterministic", "bayesian_layers": ["head"]}, "bayesian_layers needs layer_type='bayes'"),
        ({"bayesian_layers": "head"}, "bayesian_layers must be a list"),
        ({"bayesian_layers": ["haed"]}, "include pattern 'haed' matches no"),
        ({"network": {"class_path": "byon_nets"}}, "network.class_path must be a dotted path"),
        ({"network": {"class_path": "byon_nets.Missing"}}, "is not a torch.nn.Module subclass"),
        ({"network": {"class_path": "byon_nets.TinyNet", "init_args": {"depth": 3}}}, "do not fit"),
        ({"network": {"class_path": "byon_nets.WrongWidth"}}, "must return \\[B, 10\\]"),
        ({"pretrained": "/nonexistent/w.pt"}, "no such file"),
        ({"delta": -0.1}, "delta must be a finite number >= 0"),
    ],
)
def test_bad_network_options_name_the_problem(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _module(**kwargs)


def test_deterministic_user_network_has_no_kl():
    module = _module(layer_type="deterministic")
    assert bayesian_layer_names(module.net) == []
    out, kl = module.net.forward_with_kl(torch.rand(2, 1, 8, 8), 3)
    assert out.shape == (3, 2, 10) and kl.item() == 0.0
