"""The UCI benchmark: its data module on a small fixture folder, the batched trainer, and the command."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from lightning_bnn.data.uci import UCIDataError, UCIDataModule, inner_split, read_uci_folder
from lightning_bnn.experiments.uci import (
    BatchedRegressor,
    Candidate,
    CopyData,
    ModelName,
    TrainSettings,
    evaluate_batched,
    main,
    module_hparams,
    score_module,
    summarise,
    train_batched,
    unpack_copy,
)
from lightning_bnn.nn.layers import total_kl
from lightning_bnn.nn.predictive import mixture_log_likelihood
from lightning_bnn.nn.sampling import sampling

ROWS, FEATURES, SPLITS = 60, 3, 3


def write_uci_folder(root: Path, name: str = "toyset", rows: int = ROWS, splits: int = SPLITS, seed: int = 0) -> Path:
    """A folder in the benchmark's layout: target in column 1, features in columns 0, 2, 3 (raw units)."""
    rng = np.random.default_rng(seed)
    folder = root / name
    folder.mkdir(parents=True)
    x = rng.normal([5.0, -2.0, 100.0], [2.0, 0.5, 30.0], size=(rows, FEATURES))
    y = 3.0 * x[:, 0] - 4.0 * x[:, 1] + 0.05 * x[:, 2] + rng.normal(0.0, 0.5, rows) + 50.0
    data = np.column_stack([x[:, 0], y, x[:, 1], x[:, 2]])
    np.savetxt(folder / "data.txt", data, fmt="%.6f")
    np.savetxt(folder / "index_features.txt", [0, 2, 3], fmt="%d")
    np.savetxt(folder / "index_target.txt", [1], fmt="%d")
    for k in range(splits):
        order = np.random.default_rng(100 + k).permutation(rows)
        np.savetxt(folder / f"index_train_{k}.txt", order[: rows * 9 // 10], fmt="%d")
        np.savetxt(folder / f"index_test_{k}.txt", order[rows * 9 // 10 :], fmt="%d")
    for file, value in (("n_splits.txt", splits), ("n_hidden.txt", 8), ("n_epochs.txt", 2)):
        (folder / file).write_text(f"{value}\n")
    return folder


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return write_uci_folder(tmp_path)


# -- the data module ---------------------------------------------------------------------------------
def test_standardisation_uses_the_training_rows_only(folder: Path):
    raw = np.loadtxt(folder / "data.txt")
    train = np.loadtxt(folder / "index_train_1.txt", dtype=int)
    test = np.loadtxt(folder / "index_test_1.txt", dtype=int)
    dm = UCIDataModule(str(folder), split=1)
    pre = dm.preprocessing
    np.testing.assert_allclose(pre.feature_mean, raw[train][:, [0, 2, 3]].mean(0))
    np.testing.assert_allclose(pre.feature_std, raw[train][:, [0, 2, 3]].std(0))
    assert pre.target_mean == pytest.approx(raw[train, 1].mean())
    assert pre.target_std == pytest.approx(raw[train, 1].std())
    assert list(pre.feature_names) == ["x0", "x2", "x3"] and list(pre.target_names) == ["y"]
    # the model-space tensors are those rows, standardised
    s = dm.splits
    expected = (raw[test][:, [0, 2, 3]] - pre.feature_mean) / pre.feature_std
    np.testing.assert_allclose(s.x_test.numpy(), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(s.y_test[:, 0].numpy(), (raw[test, 1] - pre.target_mean) / pre.target_std, 1e-5)
    assert s.x_train.shape == (len(train), FEATURES) and s.x_test.shape == (len(test), FEATURES)
    # changing the test rows changes nothing learned from the training rows
    changed = raw.copy()
    changed[test] *= 1000.0
    np.savetxt(folder / "data.txt", changed, fmt="%.6f")
    assert UCIDataModule(str(folder), split=1).preprocessing == pre


def test_tuning_standardises_on_the_fitting_part_and_never_sees_test_rows(folder: Path):
    raw = np.loadtxt(folder / "data.txt")
    train = np.loadtxt(folder / "index_train_0.txt", dtype=int)
    test = set(np.loadtxt(folder / "index_test_0.txt", dtype=int).tolist())
    dm = UCIDataModule(str(folder), split=0, tuning=True)
    fit, val = inner_split(len(train), dm.seed + dm.split)
    assert len(val) == round(0.2 * len(train)) and not set(fit) & set(val)
    assert not (set(train[fit]) | set(train[val])) & test
    pre = dm.preprocessing
    np.testing.assert_allclose(pre.feature_mean, raw[train[fit]][:, [0, 2, 3]].mean(0))
    assert dm.splits.x_train.shape[0] == len(fit) and dm.splits.x_val.shape[0] == len(val)


def test_preprocessing_has_the_csv_data_modules_keys(folder: Path, tmp_path: Path):
    from lightning_bnn.data.tabular import CSVDataModule

    raw = np.loadtxt(folder / "data.txt")
    csv = tmp_path / "t.csv"
    csv.write_text("a,b,y\n" + "\n".join(f"{r[0]},{r[2]},{r[1]}" for r in raw))
    uci, csv_pre = UCIDataModule(str(folder)).preprocessing, CSVDataModule(str(csv), "y").preprocessing
    assert type(uci) is type(csv_pre) and set(uci.to_dict()) == set(csv_pre.to_dict())


def test_predictions_and_metrics_come_back_in_original_units(folder: Path):
    """A deterministic net whose output is a constant c with noise s (model space): hand-computed metrics."""
    dm = UCIDataModule(str(folder), split=2)
    pre = dm.preprocessing
    settings = TrainSettings(hidden_sizes=[4], num_samples_eval=3)
    module = unpack_copy(
        BatchedRegressor([Candidate()], FEATURES, [4], "deterministic", "learned"),
        0,
        module_hparams(Candidate(), ModelName.deterministic, settings, FEATURES, pre),
    )
    c, s = 0.3, 0.8
    with torch.no_grad():
        module.net.layers[3].weight.zero_()
        module.net.layers[3].bias.fill_(c)
        module.likelihood.log_noise_std.fill_(math.log(s))
    raw = np.loadtxt(folder / "data.txt")
    test = np.loadtxt(folder / "index_test_2.txt", dtype=int)
    y = raw[test, 1]
    mean, std = module.sample_predictions(dm.splits.x_test, 3)
    mu, sigma = c * pre.target_std + pre.target_mean, s * pre.target_std
    np.testing.assert_allclose(mean.numpy(), mu, rtol=1e-5)
    np.testing.assert_allclose(std.numpy(), sigma, rtol=1e-5)
    y_tensor = dm.splits.y_test * pre.target_std + pre.target_mean
    metrics = score_module(module, dm.splits.x_test, y_tensor, 3)
    assert metrics["rmse"] == pytest.approx(np.sqrt(np.mean((y - mu) ** 2)), rel=1e-4)
    hand_ll = np.mean(-np.log(sigma) - 0.5 * np.log(2 * np.pi) - 0.5 * ((y - mu) / sigma) ** 2)
    assert metrics["ll"] == pytest.approx(hand_ll, rel=1e-4)


def test_mixture_log_likelihood_in_original_units_matches_torch_distributions():
    gen = torch.Generator().manual_seed(0)
    s, b = 7, 5
    mean_z, std_z = torch.randn(s, b, 1, generator=gen), torch.rand(s, b, 1, generator=gen) + 0.2
    t_mean, t_std = 22.5, 9.2
    y = torch.randn(b, 1, generator=gen) * t_std + t_mean
    ours = mixture_log_likelihood(mean_z * t_std + t_mean, std_z * t_std, y)
    mixture = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(logits=torch.zeros(b, s)),
        torch.distributions.Normal((mean_z * t_std + t_mean)[..., 0].T, (std_z * t_std)[..., 0].T),
    )
    torch.testing.assert_close(ours, mixture.log_prob(y[:, 0]))
    # the same as the model-space likelihood less log(target_std) (the Jacobian)
    torch.testing.assert_close(ours, mixture_log_likelihood(mean_z, std_z, (y - t_mean) / t_std) - math.log(t_std))


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        (lambda f: (f / "data.txt").unlink(), "missing file"),
        (lambda f: (f / "index_train_1.txt").unlink(), "missing file"),
        (lambda f: (f / "index_test_1.txt").write_text("3\n999\n"), "row index 999 is out of range"),
        (lambda f: (f / "index_train_1.txt").write_text(""), "the split is empty"),
        (lambda f: (f / "index_features.txt").write_text("0\n7\n"), "column index 7 is out of range"),
        (lambda f: (f / "index_test_1.txt").write_text("1.5\n"), "indices must be integers"),
        (lambda f: (f / "data.txt").write_text("1 2 x\n"), "not whitespace-separated numbers"),
    ],
)
def test_broken_folders_give_clear_errors(folder: Path, broken, message: str):
    broken(folder)
    with pytest.raises(UCIDataError, match=message):
        UCIDataModule(str(folder), split=1).splits  # noqa: B018


def test_split_out_of_range_and_missing_folder(folder: Path, tmp_path: Path):
    with pytest.raises(UCIDataError, match=r"split must be an integer in 0\.\.2, got 3"):
        UCIDataModule(str(folder), split=3).splits  # noqa: B018
    with pytest.raises(UCIDataError, match="no such folder"):
        read_uci_folder(tmp_path / "nowhere")


# -- the batched trainer -------------------------------------------------------------------------------
@pytest.mark.parametrize("layer_type", ["bayes", "deterministic", "mc_dropout"])
def test_an_unpacked_copy_is_the_same_network(folder: Path, layer_type: str):
    """Copy k of the batched model and its BNNModule agree: outputs (at the posterior mean) and KL."""
    candidates = [Candidate(prior_sigma=0.5, dropout=0.1), Candidate(prior_sigma=2.0, dropout=0.2)]
    gen = torch.Generator().manual_seed(0)
    model = BatchedRegressor(candidates, FEATURES, [6], layer_type, "learned", rho_init=-3.0, generator=gen)
    dm = UCIDataModule(str(folder))
    settings = TrainSettings(hidden_sizes=[6], epochs=2, batch_size=16)
    name = {"bayes": ModelName.bbb, "deterministic": ModelName.deterministic, "mc_dropout": ModelName.mc_dropout}
    data = [CopyData(dm.splits.x_train, dm.splits.y_train, dm.splits.x_test, dm.splits.y_test, 0.0, 1.0)] * 2
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        train_batched(model, data, settings, gen)
    x = dm.splits.x_test
    for k, candidate in enumerate(candidates):
        module = unpack_copy(
            model, k, module_hparams(candidate, name[layer_type], settings, FEATURES, dm.preprocessing)
        )
        if layer_type == "bayes":
            torch.testing.assert_close(model.kl()[k], total_kl(module.net))
            with torch.no_grad():
                for rho in [*model.w_rho, *model.b_rho]:
                    rho.fill_(-40.0)  # sigma ~ 4e-18: the batched forward is the mean network
        if layer_type == "mc_dropout":
            model.dropout.zero_()
            module.net.layers[3].p = 0.0
        with torch.no_grad(), sampling(estimator="mean" if layer_type == "bayes" else None):
            expected = model(x.unsqueeze(0).expand(2, -1, -1), 1)[k, 0]
            torch.testing.assert_close(module(x, 1)[0], expected, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(module.likelihood.log_noise_std, model.log_noise_std[k])


def test_copies_train_independently():
    """A copy's result does not depend on which other copies share the batched model.

    Full-batch steps, so that the (per-copy random) minibatch order plays no part.
    """
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(40, 2, generator=gen)
    y = x[:, :1] * 2
    data = CopyData(x, y, x, y, 0.0, 1.0)
    settings = TrainSettings(hidden_sizes=[5], epochs=10, batch_size=40)

    def trained(candidates):
        g = torch.Generator().manual_seed(1)
        model = BatchedRegressor(candidates, 2, [5], "deterministic", "learned", generator=g)
        with torch.no_grad():  # the same start for copy 0 in both
            for p in model.parameters():
                p.copy_(torch.linspace(-0.5, 0.5, p[0].numel()).reshape(p[0].shape).expand_as(p))
        train_batched(model, [data] * len(candidates), settings, torch.Generator().manual_seed(2))
        return [p[0].detach().clone() for p in model.parameters()]

    alone = trained([Candidate(weight_decay=0.01)])
    together = trained([Candidate(weight_decay=0.01), Candidate(weight_decay=5.0), Candidate(noise_std=3.0)])
    for a, b in zip(alone, together):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_evaluate_batched_matches_the_hand_mixture():
    gen = torch.Generator().manual_seed(0)
    model = BatchedRegressor([Candidate(), Candidate(noise_std=2.0)], 2, [3], "bayes", "learned", -2.0, gen)
    x = torch.randn(9, 2, generator=gen)
    y = torch.randn(9, 1, generator=gen)
    data = [CopyData(x, y, x, y, 10.0, 3.0), CopyData(x, y, x[:5], y[:5], -1.0, 0.5)]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        got = evaluate_batched(model, data, 4)
        torch.manual_seed(3)
        outputs = model(torch.stack([x, x]), 4)
    for k, d in enumerate(data):
        n = d.x_eval.shape[0]
        mean = outputs[k, :, :n, 0] * d.target_std + d.target_mean
        std = model.log_noise_std[k].exp() * d.target_std
        mixture = torch.distributions.MixtureSameFamily(
            torch.distributions.Categorical(logits=torch.zeros(n, 4)),
            torch.distributions.Normal(mean.T, std.expand(n, 4)),
        )
        y_orig = d.y_eval[:, 0] * d.target_std + d.target_mean
        assert got["ll"][k] == pytest.approx(mixture.log_prob(y_orig).mean().item(), rel=1e-5)
        assert got["rmse"][k] == pytest.approx((mean.mean(0) - y_orig).square().mean().sqrt().item(), rel=1e-5)


def test_summarise_is_mean_and_standard_error():
    mean, se = summarise([1.0, 2.0, 3.0, 6.0])
    assert mean == 3.0 and se == pytest.approx(np.std([1, 2, 3, 6]) / 2)


# -- the command ----------------------------------------------------------------------------------------
def test_command_end_to_end(tmp_path: Path, capsys):
    from mlflow import MlflowClient

    from lightning_bnn.tracking.store import load_model

    root = tmp_path / "uci"
    write_uci_folder(root, "toyset")
    write_uci_folder(root, "other", rows=40, seed=1)
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    out = tmp_path / "results.json"
    argv = ["--data-dir", str(root), "--datasets", "toyset", "--splits", "2", "--epochs", "3", "--json", str(out)]
    argv += ["--tracking-uri", uri, "--models", "bbb", "deterministic", "mc_dropout", "bbb_heteroscedastic"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| toyset | BBB (ours) |" in printed and "wall time" in printed
    document = json.loads(out.read_text())
    assert list(document["results"]) == ["toyset"]
    for model in ("bbb", "deterministic", "mc_dropout", "bbb_heteroscedastic"):
        entry = document["results"]["toyset"][model]
        assert {"rmse_mean", "rmse_se", "ll_mean", "ll_se", "splits"} <= set(entry)
        assert entry["splits"] == 2 and all(math.isfinite(entry[k]) for k in ("rmse_mean", "ll_mean", "ll_se"))
        assert entry["rmse_mean"] == pytest.approx(np.mean([s["rmse"] for s in entry["per_split"]]))
    assert document["published"]["bostonHousing"]["pbp"]["ll_mean"] == -2.57
    # MLflow: one parent per data set, one child per model and split, each a loadable run
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("uci").experiment_id])
    parents = [r for r in runs if r.data.tags.get("lightning_bnn.uci") == "true"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(parents) == 1 and len(children) == 8
    parent = parents[0].info  # it beat while its models trained (else a long benchmark would show as stalled)
    assert parent.status == "FINISHED"
    assert parent.start_time <= int(parents[0].data.tags["lightning_bnn.heartbeat"]) <= parent.end_time
    child = next(r for r in children if r.data.tags["uci.model"] == "bbb" and r.data.tags["uci.split"] == "1")
    split_1 = document["results"]["toyset"]["bbb"]["per_split"][1]
    assert child.data.metrics["test/rmse"] == pytest.approx(split_1["rmse"])
    assert child.info.status == "FINISHED" and child.data.params["data.split"] == "1"
    module = load_model(child.info.run_id, uri)
    assert module.hparams.layer_type == "bayes" and module.hparams.hidden_sizes == [8]
    assert module.preprocessing == UCIDataModule(str(root / "toyset"), split=1).preprocessing


def test_command_errors(tmp_path: Path, capsys):
    write_uci_folder(tmp_path, "toyset")
    assert main(["--data-dir", str(tmp_path), "--datasets", "nope"]) == 2
    assert "--datasets: ['nope'] not in" in capsys.readouterr().out
    assert main(["--data-dir", str(tmp_path / "missing")]) == 2
    assert "no such folder" in capsys.readouterr().out
    assert main(["--data-dir", str(tmp_path), "--splits", "0"]) == 2
    # the same through the experiments' entry point: python -m lightning_bnn.experiments uci ...
    from lightning_bnn.experiments.__main__ import main as experiments

    assert experiments(["uci", "--data-dir", str(tmp_path / "missing")]) == 2
    assert "no such folder" in capsys.readouterr().out


def test_a_single_candidate_is_not_tuned(folder: Path):
    from lightning_bnn.experiments.uci import run_model

    settings = TrainSettings(hidden_sizes=[4], epochs=2, num_samples_eval=5)
    results, timings = run_model(folder, ModelName.bbb, [0, 2], settings, grid=[Candidate(prior_sigma=0.7)])
    assert [r.split for r in results] == [0, 2] and all(math.isnan(r.val_ll) for r in results)
    assert results[1].module.hparams.prior["sigma"] == 0.7 and timings["tune_s"] < 1.0
    assert results[1].module.preprocessing == UCIDataModule(str(folder), split=2).preprocessing
