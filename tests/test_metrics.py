"""Each metric against a hand-computed example."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_bnn.evaluation.metrics import ECE_BINS, classification_metrics, regression_metrics

LOG2 = math.log(2.0)


def _group(n: int, confidence: float, correct: int, num_classes: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """n examples predicting class 0 with ``confidence``; the first ``correct`` of them are class 0."""
    rest = (1.0 - confidence) / (num_classes - 1)
    probs = torch.full((n, num_classes), rest)
    probs[:, 0] = confidence
    target = torch.ones(n, dtype=torch.long)
    target[:correct] = 0
    return probs, target


def _classification(probs: torch.Tensor, target: torch.Tensor, num_classes: int = 3) -> dict[str, float]:
    metrics = classification_metrics(num_classes)
    if probs.dim() == 2:
        probs = probs.unsqueeze(0)
    metrics.update(probs, target)
    return {k: float(v) for k, v in metrics.compute().items()}


def test_ece_is_zero_when_perfectly_calibrated():
    # confidence 0.8 with 8/10 right, confidence 0.6 with 6/10 right: accuracy equals confidence in each bin
    p1, t1 = _group(10, 0.8, 8)
    p2, t2 = _group(10, 0.6, 6)
    values = _classification(torch.cat([p1, p2]), torch.cat([t1, t2]))
    assert values["ece"] == pytest.approx(0.0, abs=1e-6)
    assert values["acc"] == pytest.approx(0.7)


def test_ece_of_a_badly_calibrated_case():
    # 10 examples at confidence 0.9 with half right (gap 0.4), 30 calibrated at 0.7: ECE = 10/40 * 0.4 = 0.1
    p1, t1 = _group(10, 0.9, 5)
    p2, t2 = _group(30, 0.7, 21)
    values = _classification(torch.cat([p1, p2]), torch.cat([t1, t2]))
    assert values["ece"] == pytest.approx(0.1, abs=1e-6)
    # overconfident everywhere: confidence 0.95, all wrong -> ECE = 0.95
    p, t = _group(7, 0.95, 0)
    assert _classification(p, t)["ece"] == pytest.approx(0.95, abs=1e-6)


def test_ece_matches_an_independent_15_bin_computation():
    gen = torch.Generator().manual_seed(0)
    probs = torch.softmax(3 * torch.randn(500, 4, generator=gen), dim=-1)
    target = torch.randint(0, 4, (500,), generator=gen)
    conf, pred = probs.max(dim=1)
    correct = (pred == target).double()
    edges = torch.linspace(0, 1, 15 + 1, dtype=torch.float64)  # 15 bins (Guo et al. 2017), not imported
    expected = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (conf.double() >= lo) & (conf.double() < hi)
        if inside.any():
            expected += inside.double().mean() * abs(correct[inside].mean() - conf.double()[inside].mean())
    assert _classification(probs, target, 4)["ece"] == pytest.approx(float(expected), abs=1e-5)


def test_nll_brier_and_accuracy_by_hand():
    # two samples [0.6, 0.4] and [0.8, 0.2]: predictive [0.7, 0.3]; second example predictive [0.25, 0.75]
    probs = torch.tensor([[[0.6, 0.4], [0.2, 0.8]], [[0.8, 0.2], [0.3, 0.7]]])
    target = torch.tensor([0, 0])
    values = _classification(probs, target, 2)
    assert values["nll"] == pytest.approx((-math.log(0.7) - math.log(0.25)) / 2, rel=1e-5)
    assert values["brier"] == pytest.approx((2 * 0.3**2 + 2 * 0.75**2) / 2, rel=1e-5)
    assert values["acc"] == pytest.approx(0.5)


def test_entropy_and_mutual_information_of_constructed_samples():
    # example 1: samples disagree completely ([1, 0] and [0, 1]): H = log 2, aleatoric 0, MI = log 2
    # example 2: samples agree on [0.5, 0.5]: H = log 2, aleatoric log 2, MI = 0
    probs = torch.tensor([[[1.0, 0.0], [0.5, 0.5]], [[0.0, 1.0], [0.5, 0.5]]])
    values = _classification(probs, torch.tensor([0, 1]), 2)
    assert values["entropy"] == pytest.approx(LOG2, rel=1e-6)
    assert values["mi"] == pytest.approx(LOG2 / 2, rel=1e-6)
    # four equally likely one-hot samples over 4 classes: H = MI = log 4
    one_hot = torch.eye(4).unsqueeze(1)
    values = _classification(one_hot, torch.tensor([0]), 4)
    assert values["entropy"] == pytest.approx(math.log(4), rel=1e-6)
    assert values["mi"] == pytest.approx(math.log(4), rel=1e-6)


def test_metrics_accumulate_over_batches_and_reset():
    p1, t1 = _group(10, 0.9, 5)
    p2, t2 = _group(30, 0.7, 21)
    metrics = classification_metrics(3)
    metrics.update(p1.unsqueeze(0), t1)
    metrics.update(p2.unsqueeze(0), t2)
    assert float(metrics.compute()["ece"]) == pytest.approx(0.1, abs=1e-6)
    metrics.reset()
    metrics.update(p2.unsqueeze(0), t2)
    assert float(metrics.compute()["ece"]) == pytest.approx(0.0, abs=1e-6)


def test_regression_metrics_by_hand():
    z = 1.959963984540054
    # example 1: samples N(0, 1) and N(2, 1), target 1 -> mean 1, variance 1 + 1 = 2, inside the interval
    # example 2: both samples N(0, 0.5^2), target 2 -> error 2 > 1.96 * 0.5, outside
    mean = torch.tensor([[[0.0], [0.0]], [[2.0], [0.0]]])
    std = torch.tensor([[[1.0], [0.5]], [[1.0], [0.5]]])
    target = torch.tensor([[1.0], [2.0]])
    metrics = regression_metrics()
    metrics.update((mean, std), target)
    values = {k: float(v) for k, v in metrics.compute().items()}
    half_log_2pi = 0.5 * math.log(2 * math.pi)
    nll1 = half_log_2pi + 0.5  # -log N(1; 0, 1) = -log N(1; 2, 1)
    nll2 = math.log(0.5) + half_log_2pi + 0.5 * (2 / 0.5) ** 2
    assert values["rmse"] == pytest.approx(math.sqrt((0 + 4) / 2), rel=1e-6)
    assert values["nll"] == pytest.approx((nll1 + nll2) / 2, rel=1e-5)
    assert values["picp95"] == pytest.approx(0.5)
    assert values["width95"] == pytest.approx((2 * z * math.sqrt(2) + 2 * z * 0.5) / 2, rel=1e-5)


def test_regression_coverage_of_a_calibrated_gaussian_is_near_95_percent():
    gen = torch.Generator().manual_seed(1)
    target = torch.randn(20000, 1, generator=gen)
    metrics = regression_metrics()
    metrics.update((torch.zeros(1, 20000, 1), torch.ones(1, 20000, 1)), target)
    values = metrics.compute()
    assert float(values["picp95"]) == pytest.approx(0.95, abs=0.01)
    assert float(values["rmse"]) == pytest.approx(1.0, abs=0.02)


def test_risk_coverage_and_aurc_by_hand():
    from lightning_bnn.evaluation.metrics import SelectiveRisk, risk_coverage

    # four inputs, most certain first: right, wrong, right, wrong
    coverage, risk = risk_coverage(torch.tensor([0.1, 0.2, 0.3, 0.4]), torch.tensor([1.0, 0.0, 1.0, 0.0]))
    torch.testing.assert_close(coverage, torch.tensor([0.25, 0.5, 0.75, 1.0], dtype=torch.float64))
    torch.testing.assert_close(risk, torch.tensor([0.0, 0.5, 1 / 3, 0.5], dtype=torch.float64))
    # as a metric: probabilities whose entropy ranks the wrong answers last give the lowest AURC
    confident = torch.tensor([0.97, 0.03])
    unsure = torch.tensor([0.6, 0.4])
    target = torch.tensor([0, 0, 1, 1])  # the two unsure ones predict class 0: wrong
    good = torch.stack([confident, confident, unsure, unsure])[None]
    metric = SelectiveRisk()
    metric.update(good, target)
    assert float(metric.compute()) == pytest.approx((0 + 0 + 1 / 3 + 2 / 4) / 4, rel=1e-6)
    bad = torch.stack([unsure, unsure, confident, confident])[None]  # sure of the wrong ones
    metric = SelectiveRisk()
    metric.update(bad, torch.tensor([0, 0, 1, 1]))
    assert float(metric.compute()) == pytest.approx((1 + 1 + 2 / 3 + 2 / 4) / 4, rel=1e-6)


def test_ece_uses_15_bins():
    """Cases whose ECE depends on the bin count: 15 equal-width bins, written here (not imported).

    Case 1: 10 examples at confidence 0.62, all right, and 10 at 0.68 with 3 right. With 15 bins they
    fall in [0.600, 0.667) and [0.667, 0.733): ECE = (0.38 + 0.38) / 2 = 0.38. With 10, 5 or 2 bins they
    share a bin with accuracy 0.65 = mean confidence: ECE = 0.
    Case 2: 10 at 0.605, all right, and 10 at 0.655 with 2 right. With 15 bins both lie in
    [0.600, 0.667): |0.6 - 0.63| = 0.03. With 20 or 30 bins they are split: (0.395 + 0.455) / 2 = 0.425.
    """
    assert ECE_BINS == 15
    p1, t1 = _group(10, 0.62, 10)
    p2, t2 = _group(10, 0.68, 3)
    assert _classification(torch.cat([p1, p2]), torch.cat([t1, t2]))["ece"] == pytest.approx(0.38, abs=1e-5)
    p1, t1 = _group(10, 0.605, 10)
    p2, t2 = _group(10, 0.655, 2)
    assert _classification(torch.cat([p1, p2]), torch.cat([t1, t2]))["ece"] == pytest.approx(0.03, abs=1e-5)


def test_probabilities_rounded_past_0_or_1_are_not_taken_for_logits():
    """A mean probability of 1 + 1e-6 (float rounding) or -1e-7 is clamped, not softmaxed by torchmetrics.

    Unclamped, torchmetrics would read the row [1 + 1e-6, 0, 0] as logits: confidence 0.58 and ECE 0.42.
    """
    for probs in (torch.tensor([[[1.0 + 1e-6, 0.0, 0.0]]]), torch.tensor([[[1.0, -1e-7, 0.0]]])):
        values = _classification(probs, torch.tensor([0]))
        assert values["acc"] == 1.0
        assert values["ece"] == pytest.approx(0.0, abs=1e-5)


def test_regression_metrics_reset_every_value():
    metrics = regression_metrics()
    metrics.update((torch.zeros(1, 2, 1), torch.ones(1, 2, 1)), torch.full((2, 1), 5.0))
    metrics.reset()
    metrics.update((torch.zeros(1, 2, 1), torch.ones(1, 2, 1)), torch.zeros(2, 1))
    values = {k: float(v) for k, v in metrics.compute().items()}
    assert values["rmse"] == 0.0 and values["picp95"] == 1.0
    assert values["nll"] == pytest.approx(0.5 * math.log(2 * math.pi))
    assert values["width95"] == pytest.approx(2 * 1.959963984540054, rel=1e-6)


def test_regression_metrics_of_two_outputs():
    """D = 2 targets: every (example, output) pair counts once."""
    metrics = regression_metrics()
    mean = torch.tensor([[[0.0, 0.0], [0.0, 0.0]]])
    target = torch.tensor([[1.0, 0.0], [0.0, 3.0]])
    metrics.update((mean, torch.ones_like(mean)), target)
    values = {k: float(v) for k, v in metrics.compute().items()}
    assert values["rmse"] == pytest.approx(math.sqrt((1 + 9) / 4))
    assert values["picp95"] == pytest.approx(0.75)


def test_risk_coverage_keeps_tied_inputs_in_their_order_and_covers_one_input():
    """Ties keep their order (as documented); one input is full coverage at its own risk."""
    from lightning_bnn.evaluation.metrics import risk_coverage

    # 2,000 equally uncertain inputs, the first 1,000 wrong: in their order the risk at half coverage
    # is exactly 1 (an unstable sort of this many ties mixes them: measured 0.5-ish)
    correct = torch.cat([torch.zeros(1000), torch.ones(1000)])
    coverage, risk = risk_coverage(torch.full((2000,), 0.5), correct)
    assert risk[999].item() == 1.0 and risk[-1].item() == 0.5 and coverage[999].item() == 0.5
    coverage, risk = risk_coverage(torch.tensor([0.3]), torch.tensor([0.0]))
    assert coverage.tolist() == [1.0] and risk.tolist() == [1.0]


def test_each_likelihood_gets_its_metrics_by_name():
    from torch import nn

    from lightning_bnn.evaluation.metrics import make_metrics
    from lightning_bnn.nn.likelihoods import CategoricalLikelihood, GaussianLikelihood

    classification = make_metrics(CategoricalLikelihood(3))
    assert set(classification.keys()) == {"acc", "nll", "brier", "ece", "entropy", "mi", "aurc"}
    assert classification["ece"].num_classes == 3
    assert set(make_metrics(GaussianLikelihood(2)).keys()) == {"rmse", "nll", "picp95", "width95"}
    with pytest.raises(TypeError, match="^no metrics registered for Identity$"):
        make_metrics(nn.Identity())
