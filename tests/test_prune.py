"""SNR pruning: masks by hand, 0% changes nothing, 100% of a layer, counts, the sparse file, the command."""

from __future__ import annotations

import json

import pytest
import torch

from lightning_bnn.cli.prune import main
from lightning_bnn.evaluation.prune import (
    PruneError,
    apply_masks,
    check_fraction,
    load_pruned,
    point_metric,
    prune_and_evaluate,
    prune_masks,
    save_pruned,
    snr_record,
    table_markdown,
    weight_snr,
)
from lightning_bnn.tracking.artifacts import PRUNING_SNR as SNR_RECORD
from lightning_bnn.tracking.artifacts import PRUNING_SNR_CHART as SNR_CHART
from lightning_bnn.tracking.artifacts import PRUNING_TABLE as TABLE
from lightning_bnn.training.module import BNNModule


def _model(seed: int = 0) -> BNNModule:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = BNNModule(input_shape=[1, 8, 8], num_outputs=10, hidden_sizes=[16], rho_init=-3.0)
        # make the SNRs distinct and spread, as after training
        for module in model.net.modules():
            if hasattr(module, "weight") and hasattr(module.weight, "rho"):
                module.weight.rho.data.uniform_(-6.0, 0.0)
    return model.eval()


def _mean_outputs(model: BNNModule, x: torch.Tensor) -> torch.Tensor:
    from lightning_bnn.nn.sampling import sampling

    with sampling(estimator="mean"):
        return model.net(x, 1)[0]


def test_masks_by_hand():
    snr = {"a": torch.tensor([[3.0, 1.0], [2.0, 5.0]]), "b": torch.tensor([4.0, 0.5])}
    masks = prune_masks(snr, 0.5)  # remove the 3 lowest of 6: 0.5, 1, 2 (global across tensors)
    assert masks["a"].tolist() == [[True, False], [False, True]]
    assert masks["b"].tolist() == [True, False]
    assert all(m.all() for m in prune_masks(snr, 0.0).values())
    assert not any(m.any() for m in prune_masks(snr, 1.0).values())


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.5, 0.75, 0.95, 0.98, 1.0])
def test_count_left_matches_fraction(fraction):
    snr = weight_snr(_model())
    total = sum(v.numel() for v in snr.values())
    left = sum(int(m.sum()) for m in prune_masks(snr, fraction).values())
    assert left == total - round(fraction * total)
    # the removed ones have the lowest SNR
    if 0 < left < total:
        masks = prune_masks(snr, fraction)
        kept = torch.cat([v[masks[k]] for k, v in snr.items()])
        removed = torch.cat([v[~masks[k]] for k, v in snr.items()])
        assert float(removed.max()) <= float(kept.min())


def test_snr_covers_weights_not_biases():
    model = _model()
    snr = weight_snr(model)
    assert set(snr) == {"net.layers.1.weight", "net.layers.3.weight"}
    assert sum(v.numel() for v in snr.values()) == 64 * 16 + 16 * 10
    layer = model.net.layers[1]
    assert torch.allclose(snr["net.layers.1.weight"], layer.weight.mu.abs() / layer.weight.sigma)


def test_removing_nothing_changes_nothing():
    model = _model()
    x = torch.rand(20, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    before_state = {k: v.clone() for k, v in model.state_dict().items()}
    before = _mean_outputs(model, x)
    apply_masks(model, prune_masks(weight_snr(model), 0.0))
    for key, value in model.state_dict().items():
        assert torch.equal(value, before_state[key]), key
    assert torch.equal(_mean_outputs(model, x), before)


def test_removing_all_of_a_layer_makes_the_output_independent_of_the_input():
    model = _model()
    snr = weight_snr(model)
    masks = prune_masks({"net.layers.1.weight": snr["net.layers.1.weight"]}, 1.0)
    apply_masks(model, masks)
    assert float(model.net.layers[1].weight.mu.detach().abs().max()) == 0.0
    assert float(model.net.layers[1].weight.sigma.detach().max()) < 1e-10
    assert model.net.layers[3].weight.mu.abs().sum() > 0  # the other layer is untouched
    x = torch.rand(20, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    out = _mean_outputs(model, x)
    assert torch.isfinite(out).all()
    assert torch.allclose(out, out[:1].expand_as(out))  # every input gets the bias-only output
    # sampling still works, and with whole-function samples (one weight draw per sample, shared by the
    # batch) each sampled function is constant in x: removed weights have sigma ~ 0 and biases are shared
    probs = model.sample_predictions(x, 5, estimator="reparameterization")
    assert torch.isfinite(probs).all() and torch.allclose(probs, probs[:, :1].expand_as(probs), atol=1e-6)


def test_pruned_file_is_smaller_and_round_trips(tmp_path):
    model = _model()
    dense = save_pruned(model, prune_masks(weight_snr(model), 0.0), tmp_path / "p0.safetensors", 0.0)
    masks = prune_masks(weight_snr(model), 0.95)
    apply_masks(model, masks)
    sparse = save_pruned(model, masks, tmp_path / "p95.safetensors", 0.95)
    assert sparse < dense / 5
    restored = load_pruned(tmp_path / "p95.safetensors", _model(seed=1))
    for key, value in model.state_dict().items():
        assert torch.allclose(restored.state_dict()[key], value), key


def test_bad_inputs_have_clear_errors(tmp_path):
    with pytest.raises(PruneError, match="fractions must lie in"):
        check_fraction(1.5)
    with pytest.raises(PruneError, match="^no Bayesian weights to prune$"):
        prune_masks({}, 0.5)
    (tmp_path / "x.safetensors").write_bytes(b"")
    from safetensors.torch import save_file

    save_file({"a": torch.zeros(1)}, str(tmp_path / "x.safetensors"), metadata={"format": "other"})
    with pytest.raises(PruneError, match=r"^x.safetensors is not a lightning_bnn.pruned file \(format 'other'\)$"):
        load_pruned(tmp_path / "x.safetensors", _model())


def test_snr_record_density_integrates_to_one():
    record = snr_record(weight_snr(_model()), bins=20)
    edges, density = record["density"]["edges"], record["density"]["density"]
    width = edges[1] - edges[0]
    assert sum(density) * width == pytest.approx(1.0, rel=1e-6)
    assert record["cdf"]["fraction"][-1] == pytest.approx(1.0)
    assert record["cdf"]["db"] == sorted(record["cdf"]["db"])


def test_snr_record_by_hand():
    # SNR 0.1 .. 1000 is -10 .. 30 dB; 3 bins of 40/3 dB (no value on an inner edge)
    record = snr_record({"a": torch.tensor([10.0, 0.1]), "b": torch.tensor([[1.0, 100.0, 1000.0]])}, bins=3)
    assert record["unit"] == "dB" and record["num_weights"] == 5
    assert record["density"]["edges"] == pytest.approx([-10.0, 10 / 3, 50 / 3, 30.0])
    assert record["density"]["density"] == pytest.approx([0.03, 0.015, 0.03])  # counts 2, 1, 2 / (5 * 40/3 dB)
    assert record["cdf"]["db"] == pytest.approx([-10.0, 0.0, 10.0, 20.0, 30.0])
    assert record["cdf"]["fraction"] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])


def test_snr_record_of_equal_snrs_spans_one_db():
    record = snr_record({"a": torch.full((4,), 10.0)}, bins=2)  # all at 10 dB: one 1-dB-wide range
    assert record["density"]["edges"] == pytest.approx([10.0, 10.5, 11.0])
    assert record["density"]["density"] == pytest.approx([2.0, 0.0])  # all 4 in the first half-dB bin


def test_snr_record_cdf_keeps_512_quantiles_of_many_weights():
    snr = {"a": 10.0 ** (torch.arange(1000, dtype=torch.float64) / 100)}  # 0 .. 99.9 dB in steps of 0.1
    cdf = snr_record(snr)["cdf"]
    assert len(cdf["db"]) == 512 and cdf["db"][0] == pytest.approx(0.0) and cdf["db"][-1] == pytest.approx(99.9)
    idx = [round(i * 999 / 511) for i in range(512)]  # evenly spaced ranks, first and last included
    assert cdf["db"] == pytest.approx([i / 10 for i in idx], abs=1e-9)
    assert cdf["fraction"] == pytest.approx([(i + 1) / 1000 for i in idx])


def test_snr_of_a_bare_layer_is_keyed_weight():
    from lightning_bnn.nn.layers import BayesLinear

    layer = BayesLinear(3, 2)
    snr = weight_snr(layer)
    assert list(snr) == ["weight"]
    assert torch.allclose(snr["weight"], layer.weight.mu.abs() / torch.nn.functional.softplus(layer.weight.rho))


@pytest.mark.parametrize("bad", [True, "0.5", None, float("nan"), float("inf"), -0.1, 1.5])
def test_fraction_must_be_a_real_number_in_0_1(bad):
    with pytest.raises(PruneError, match=r"fractions must lie in \[0, 1\], got"):
        check_fraction(bad)


def test_masks_break_ties_by_position_across_three_tensors():
    # 100 equal SNRs: a stable sort removes the first ones (an unstable one picks others)
    masks = prune_masks({"a": torch.ones(100)}, 0.3)
    assert masks["a"].tolist() == [False] * 30 + [True] * 70
    # three tensors: each mask is cut from its own place in the flat order
    snr = {"a": torch.tensor([5.0, 1.0]), "b": torch.tensor([6.0, 2.0]), "c": torch.tensor([0.5, 7.0, 3.0])}
    masks = prune_masks(snr, 3 / 7)  # the 3 lowest: 0.5, 1, 2
    assert [masks[k].tolist() for k in "abc"] == [[True, False], [True, False], [False, True, True]]


def test_pruned_file_records_its_fraction(tmp_path):
    from safetensors import safe_open

    model = _model()
    save_pruned(model, prune_masks(weight_snr(model), 0.25), tmp_path / "p.safetensors", 0.25)
    with safe_open(str(tmp_path / "p.safetensors"), framework="pt") as handle:
        metadata = handle.metadata()
    assert metadata["format"] == "lightning_bnn.pruned" and metadata["fraction"] == "0.25"
    assert metadata["format_version"] == "1"
    with safe_open(str(tmp_path / "p.safetensors"), framework="pt") as handle:
        assert handle.get_tensor("net.layers.1.weight.indices").dtype == torch.int32  # the format's index type


def test_pruned_file_that_lacks_a_tensor_of_the_model_is_refused(tmp_path):
    model = _model()
    save_pruned(model, prune_masks(weight_snr(model), 0.5), tmp_path / "p.safetensors", 0.5)
    other = _model(seed=1)
    other.register_buffer("extra", torch.zeros(1))  # a model with one more tensor than the file
    with pytest.raises(PruneError, match=r"(?s)p.safetensors does not fit the model: .*extra"):
        load_pruned(tmp_path / "p.safetensors", other)


def test_prune_and_evaluate_by_hand(tmp_path):
    """Each row: the fraction, the weights left, the mean network's test error and the file written."""
    model = _model()
    g = torch.Generator().manual_seed(0)
    batches = [(torch.rand(7, 1, 8, 8, generator=g), torch.randint(0, 10, (7,), generator=g)) for _ in range(3)]
    original = {k: v.clone() for k, v in model.state_dict().items()}
    rows, snr = prune_and_evaluate(model, batches, [0.0, 0.5, 1.0], tmp_path)
    for key, value in model.state_dict().items():  # restored afterwards
        assert torch.equal(value, original[key]), key
    total = 64 * 16 + 16 * 10
    assert [r["fraction"] for r in rows] == [0.0, 0.5, 1.0]
    assert [r["weights_left"] for r in rows] == [total, total - round(0.5 * total), 0]
    for row, name in zip(rows, ["pruned-0", "pruned-50", "pruned-100"]):
        assert row["file_bytes"] == (tmp_path / f"{name}.safetensors").stat().st_size
        pruned = _model()  # the error of the mean network with these weights removed, computed here
        apply_masks(pruned, prune_masks(weight_snr(pruned), row["fraction"]))
        wrong = sum(int((_mean_outputs(pruned, x).argmax(-1) != y).sum()) for x, y in batches)
        assert row["test_error"] == pytest.approx(wrong / 21)
    assert set(snr) == {"net.layers.1.weight", "net.layers.3.weight"}
    with pytest.raises(PruneError, match="fractions must lie in"):
        prune_and_evaluate(model, batches, [0.5, 2.0], tmp_path)


def test_table_markdown_by_hand():
    rows = [
        {"fraction": 0.0, "weights_left": 1184, "test_error": 0.125, "file_bytes": 10000},
        {"fraction": 0.5, "weights_left": 592, "test_error": 0.13333, "file_bytes": 6000},
    ]
    assert point_metric(rows) == "test_error"
    lines = table_markdown(rows).splitlines()
    assert all(cell.endswith(":") for cell in lines[1].strip("|").split("|"))  # every column right-aligned
    assert [c.strip() for c in lines[0].strip("|").split("|")] == [
        "removed",
        "weights left",
        "test error %",
        "file bytes",
    ]
    assert [c.strip() for c in lines[2].strip("|").split("|")] == ["0%", "1184", "12.5", "10000"]
    assert [c.strip() for c in lines[3].strip("|").split("|")] == ["50%", "592", "13.33", "6000"]
    regression = [{"fraction": 0.25, "weights_left": 3, "test_rmse": 0.123456, "file_bytes": 5}]
    assert point_metric(regression) == "test_rmse"
    lines = table_markdown(regression).splitlines()
    assert [c.strip() for c in lines[0].strip("|").split("|")] == ["removed", "weights left", "test RMSE", "file bytes"]
    assert [c.strip() for c in lines[2].strip("|").split("|")] == ["25%", "3", "0.1235", "5"]


def test_prune_command_logs_a_child_run(digits_run, tmp_path, capsys):
    from mlflow import MlflowClient

    uri, run_id = digits_run
    code = main([run_id, "--fractions", "0", "0.5", "0.98", "--tracking-uri", uri, "--save-dir", str(tmp_path)])
    assert code == 0
    client = MlflowClient(uri)
    parent = client.get_run(run_id)
    children = client.search_runs([parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run_id}'")
    assert len(children) >= 1
    child = children[0]
    assert child.info.status == "FINISHED"
    paths = {a.path for a in client.list_artifacts(child.info.run_id, "pruning")}
    assert {TABLE, SNR_RECORD, SNR_CHART} <= paths
    with open(client.download_artifacts(child.info.run_id, TABLE)) as handle:
        table = json.load(handle)
    rows = [dict(zip(table["columns"], row)) for row in table["data"]]
    total = int(child.data.params["total_weights"])
    assert [r["weights_left"] for r in rows] == [total, total - round(0.5 * total), total - round(0.98 * total)]
    # 0% is the unpruned posterior-mean network. Measured on this fixture's model (digits, hidden [32],
    # 3 epochs) over seeds 0-4 (2026-12-03): test error 0.125-0.178 unpruned, 0.131-0.240 with the
    # lowest-SNR half removed, 0.80-0.92 with 98% removed (what a model missing its important weights
    # gives, as a mask that removes the wrong half would); chance is 0.9.
    assert rows[0]["test_error"] < 0.25
    assert rows[1]["test_error"] < 0.35
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["model.json", "pruned-0.safetensors", "pruned-50.safetensors", "pruned-98.safetensors"]
    assert (tmp_path / "pruned-98.safetensors").stat().st_size < (tmp_path / "pruned-0.safetensors").stat().st_size
    assert "weights left" in capsys.readouterr().out


def test_prune_command_refuses_unknown_run(digits_run, capsys):
    assert main(["0123456789abcdef", "--tracking-uri", digits_run[0]]) == 2
    assert "no run" in capsys.readouterr().out
