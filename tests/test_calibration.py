"""The calibration experiment: its statistics, its targets, and its reduced version (CI: digits, seconds)."""

from __future__ import annotations

import math
import statistics

import pytest
import yaml
from bnn_testing import CONFIGS

from lightning_bnn.experiments.calibration import (
    COLUMNS,
    MODELS,
    Estimate,
    lower_by_two_se,
    main,
    ood_sets,
    summarise,
    targets,
)
from lightning_bnn.experiments.paper import EXPERIMENT_CONFIGS


def test_estimate_is_the_mean_and_its_standard_error():
    values = [0.31, 0.29, 0.36]
    estimate = Estimate.of(values)
    assert estimate.mean == pytest.approx(statistics.fmean(values))
    assert estimate.se == pytest.approx(statistics.stdev(values) / math.sqrt(3))  # sample sd (n - 1)
    assert Estimate.of([0.5]).se == 0.0
    assert Estimate(0.1234, 0.0056, 3).text(2, 100.0) == "12.34 ± 0.56"


def test_two_standard_errors_of_the_difference():
    # the difference's SE is sqrt(0.003^2 + 0.004^2) = 0.005: a gap above 0.010 is needed
    assert lower_by_two_se(Estimate(0.300, 0.003, 3), Estimate(0.3101, 0.004, 3))
    assert not lower_by_two_se(Estimate(0.300, 0.003, 3), Estimate(0.3099, 0.004, 3))
    assert not lower_by_two_se(Estimate(0.310, 0.0, 3), Estimate(0.300, 0.0, 3))


def _rows(acc, nll, ece, aurc, mi_noise, h_noise):
    return {
        "test/acc": acc,
        "test/nll": nll,
        "test/ece": ece,
        "test/brier": 0.1,
        "test/aurc": aurc,
        "test/ood_auroc_entropy_noise": h_noise,
        "test/ood_auroc_mi_noise": mi_noise,
    }


def test_targets_of_issue_13():
    runs = {
        "bbb": [_rows(0.890, 0.30, 0.010, 0.018, 0.95, 0.92), _rows(0.892, 0.31, 0.012, 0.018, 0.93, 0.91)],
        "deterministic": [_rows(0.895, 0.33, 0.020, 0.020, 0.50, 0.20), _rows(0.897, 0.34, 0.022, 0.020, 0.50, 0.30)],
        "mc_dropout": [_rows(0.890, 0.32, 0.015, 0.019, 0.94, 0.60), _rows(0.890, 0.32, 0.015, 0.019, 0.96, 0.60)],
    }
    summary = summarise(runs)
    assert summary["bbb"]["test/error"].mean == pytest.approx(0.109)  # 1 - accuracy
    assert ood_sets(summary) == ["noise"]
    met = {name: ok for name, _, ok in targets(summary)}
    assert met == {
        "BBB test error <= deterministic + 0.5 points": True,  # +0.5 points exactly
        "BBB NLL lower than deterministic by > 2 SE": True,  # 0.03 against 2 SE = 0.014
        "BBB ECE lower than deterministic by > 2 SE": True,
        "BBB AURC lower than deterministic by > 2 SE": True,  # SE 0 on both: any gap counts
        "BBB MI AUROC >= MC dropout's on noise": False,  # 0.940 < 0.950
        "BBB entropy AUROC on uniform noise >= 0.9": True,
    }
    runs["bbb"][0]["test/acc"] = 0.88  # now 1.0 point worse than the point estimate
    assert not dict((n, ok) for n, _, ok in targets(summarise(runs)))["BBB test error <= deterministic + 0.5 points"]


def test_the_shipped_configs_carry_the_recipe():
    """configs/fashion_mnist.yaml (and the CNN's) train what the calibration experiment calls BBB."""
    recipe = yaml.safe_load((EXPERIMENT_CONFIGS / MODELS["bbb"][1]).read_text())["model"]
    for shipped in ("fashion_mnist.yaml", "fashion_mnist_cnn.yaml"):
        model = yaml.safe_load((CONFIGS / shipped).read_text())["model"]
        assert {k: model.get(k) for k in recipe} == recipe, shipped


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    root = tmp_path_factory.mktemp("calibration")
    uri, doc = f"sqlite:///{root}/mlflow.db", root / "experiments.md"
    doc.write_text(
        "# Experiments\n\nprose before\n\n<!-- experiments:calibration-quick:start -->\nold\n"
        "<!-- experiments:calibration-quick:end -->\n\nprose after\n"
    )
    assert main(["--quick", "--jobs", "2", "--tracking-uri", uri, "--doc", str(doc)]) == 0
    return uri, doc.read_text()


def test_quick_calibration_table(quick):
    uri, text = quick
    assert "prose before" in text and "prose after" in text and "\nold\n" not in text
    block = text.split("<!-- experiments:calibration-quick:start -->")[1].split("<!-- experiments:")[0]
    header = next(line for line in block.splitlines() if line.startswith("| model | test error"))
    assert [c.strip() for c in header.strip("|").split("|")] == ["model", *(c[0] for c in COLUMNS), "runs"]
    rows = {line.split("|")[1].strip(): line for line in block.splitlines() if line.count(" ± ") == len(COLUMNS)}
    assert set(rows) == {label for label, _ in MODELS.values()}
    for line in rows.values():
        assert len(line.split("`")) == 2 * 2 + 1  # two seeds: two run ids
    assert "| AUROC inverted (H / MI) | AUROC noise (H / MI) | AUROC rotated (H / MI) |" in block
    assert "| BBB NLL lower than deterministic by > 2 SE |" in block


def test_quick_calibration_bbb_beats_the_point_estimate_on_nll(quick):
    """On the reduced case BBB's mean test NLL is below the deterministic network's (read from the runs)."""
    from mlflow import MlflowClient

    uri, _ = quick
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("calibration-digits")
    runs = client.search_runs([experiment.experiment_id])
    nll = {}
    for run in runs:
        nll.setdefault(run.info.run_name.split("-seed")[0], []).append(run.data.metrics["test/nll"])
    assert {k: len(v) for k, v in nll.items()} == {"bbb": 2, "deterministic": 2, "mc_dropout": 2}
    assert statistics.fmean(nll["bbb"]) < statistics.fmean(nll["deterministic"])
