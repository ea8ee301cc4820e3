"""Charts: the right number of traces with the right data, from hand-made inputs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dashboard import charts
from dashboard.predictions import ClassificationResult, RegressionResult

HIST = {"edges": [0.0, 0.5, 1.0], "counts": [3, 1]}


def test_learning_curves_one_trace_per_run():
    history = pd.DataFrame(
        {
            "run_id": ["a", "a", "b"],
            "run_name": ["A", "A", "B"],
            "step": [1, 2, 1],
            "epoch": [0, 1, 0],
            "value": [1, 2, 3],
        }
    )
    fig = charts.learning_curves(history, "val/acc", "epoch")
    assert len(fig.data) == 2
    assert list(fig.data[0].y) == [1, 2] and list(fig.data[0].x) == [0, 1]


def test_metric_scatter_groups_by_colour():
    runs = pd.DataFrame({"run_id": list("abc"), "run_name": list("ABC"), "x": [1, 2, 3], "y": [3, 2, None]})
    runs["lr"] = ["0.1", "0.1", "0.2"]
    assert len(charts.metric_scatter(runs, "x", "y").data) == 1
    fig = charts.metric_scatter(runs, "x", "y", "lr")
    assert len(fig.data) == 1  # run c has no y: dropped, leaving one colour group
    assert list(fig.data[0].x) == [1, 2]


def test_sweep_chart_one_subplot_per_field():
    trials = pd.DataFrame({"run_name": list("abc"), "lr": [0.01, 0.001, 0.1], "act": ["relu", "tanh", "relu"]})
    trials["test/acc"] = [0.8, 0.7, 0.75]
    fig = charts.sweep_chart(trials, "test/acc", ["lr", "act"])
    assert len(fig.data) == 2
    assert list(fig.data[0].x) == [0.001, 0.01, 0.1]  # numeric fields sorted
    assert fig.layout.xaxis.type == "log"


def test_posterior_charts():
    summary = {
        "layers": [
            {"name": f"l{i}", "kind": "linear", "num_weights": 4, "mu": HIST, "sigma": HIST, "log10_snr": HIST}
            for i in range(2)
        ],
        "all": {"log10_snr": HIST},
    }
    assert len(charts.posterior_histograms(summary).data) == 4
    fig = charts.snr_density(summary)
    assert len(fig.data) == 3
    np.testing.assert_allclose(fig.data[0].y, [0.75 / 0.5, 0.25 / 0.5])  # a density: integrates to 1
    with pytest.raises(ValueError, match="no layers"):
        charts.posterior_histograms({"layers": []})


def test_reliability_and_band():
    reliability = {
        "num_bins": 2,
        "ece": 0.1,
        "bins": [
            {"lower": 0.0, "upper": 0.5, "confidence": 0.3, "accuracy": 0.2, "count": 5},
            {"lower": 0.5, "upper": 1.0, "confidence": None, "accuracy": None, "count": 0},
        ],
    }
    fig = charts.reliability_diagram(reliability)
    assert len(fig.data) == 3 and list(fig.data[0].y) == [0.2] and fig.data[1].y[0] == pytest.approx(0.1)
    assert "ECE 0.100" in fig.layout.title.text
    band = {
        "feature": "x",
        "x": [0, 1],
        "target": [0, 1],
        "mean": [0, 1],
        "lower": [-1, 0],
        "upper": [1, 2],
        "train_range": [0, 0.5],
    }
    assert len(charts.predictive_band(band).data) == 3


def classification_result(s: int = 5, b: int = 2, c: int = 3) -> ClassificationResult:
    probs = np.random.default_rng(0).dirichlet(np.ones(c), size=(s, b))
    return ClassificationResult(
        class_names=[str(i) for i in range(c)],
        probs=probs,
        mean=probs.mean(0),
        std=probs.std(0),
        predicted=probs.mean(0).argmax(-1),
        predictive_entropy=np.ones(b),
        expected_entropy=np.full(b, 0.7),
        mutual_information=np.full(b, 0.3),
        point_probs=np.full((b, c), 1 / c),
    )


def test_class_distribution_and_uncertainty_split():
    result = classification_result()
    fig = charts.class_distribution(result, 1)
    assert len(fig.data) == 3
    assert len(fig.data[0].y) == 5 * 3  # every sampled probability of input 1
    np.testing.assert_allclose(fig.data[0].y, result.probs[:, 1, :].reshape(-1))
    np.testing.assert_allclose(fig.data[1].y, result.mean[1])
    split = charts.uncertainty_split(result, 0)
    assert len(split.data) == 2 and split.data[0].x[0] == pytest.approx(0.7) and split.data[1].x[0] == 0.3


def test_regression_distribution_and_fan_chart():
    s, b = 50, 2
    result = RegressionResult(
        target_names=["y"],
        sample_mean=np.zeros((s, b, 1)),
        sample_std=np.ones((s, b, 1)),
        draws=np.random.default_rng(0).normal(size=(s, b, 1)),
        mean=np.zeros((b, 1)),
        std=np.ones((b, 1)),
        aleatoric_std=np.ones((b, 1)),
        epistemic_std=np.zeros((b, 1)),
        lower=-np.ones((b, 1)),
        upper=np.ones((b, 1)),
        point_mean=np.zeros((b, 1)),
        point_std=np.ones((b, 1)),
    )
    fig = charts.regression_distribution(result, 1)
    assert len(fig.data) == 2 and len(fig.data[0].x) == s
    x = np.linspace(0, 1, 5)
    data = {
        "x": x,
        "mean": x,
        "lower": x - 1,
        "upper": x + 1,
        "epistemic_lower": x,
        "epistemic_upper": x,
        "point": x,
        "draws": np.zeros((7, 5)),
        "std": np.ones(5),
    }
    assert len(charts.fan_chart(data).data) == 4 + 7
    train = pd.DataFrame({"x": [0.1], "y": [0.2]})
    assert len(charts.fan_chart(data, train, [0, 0.5]).data) == 4 + 7 + 1
