"""The pure reductions of sampled predictions (:mod:`lightning_bnn.nn.predictive`), each against numbers by hand."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_bnn.nn.predictive import (
    central_interval,
    expected_entropy,
    mixture_log_likelihood,
    mutual_information,
    normal_quantile,
    predictive_entropy,
    regression_moments,
)


def _h(*p: float) -> float:
    return -sum(q * math.log(q) for q in p if q > 0)


def test_entropies_and_mutual_information_by_hand():
    # two samples [0.9, 0.1] and [0.5, 0.5]: mean [0.7, 0.3]
    probs = torch.tensor([[[0.9, 0.1]], [[0.5, 0.5]]], dtype=torch.float64)
    total = _h(0.7, 0.3)  # 0.6109
    aleatoric = (_h(0.9, 0.1) + _h(0.5, 0.5)) / 2  # 0.5091
    assert float(predictive_entropy(probs)) == pytest.approx(total, rel=1e-9)
    assert float(expected_entropy(probs)) == pytest.approx(aleatoric, rel=1e-9)
    assert float(mutual_information(probs)) == pytest.approx(total - aleatoric, rel=1e-7)  # 0.1018
    # a zero probability contributes 0 (0 log 0 = 0), not NaN
    one_hot = torch.tensor([[[1.0, 0.0, 0.0]], [[0.0, 0.0, 1.0]]])
    assert float(predictive_entropy(one_hot)) == pytest.approx(math.log(2), rel=1e-6)
    assert float(expected_entropy(one_hot)) == pytest.approx(0.0, abs=1e-6)
    assert float(mutual_information(one_hot)) == pytest.approx(math.log(2), rel=1e-6)


def test_reductions_keep_the_batch_and_reduce_only_the_samples():
    probs = torch.tensor([[[0.9, 0.1], [0.2, 0.8]], [[0.5, 0.5], [0.2, 0.8]]], dtype=torch.float64)
    assert predictive_entropy(probs).shape == (2,)
    assert float(mutual_information(probs)[1]) == pytest.approx(0.0, abs=1e-12)  # samples agree
    assert float(predictive_entropy(probs)[1]) == pytest.approx(_h(0.2, 0.8), rel=1e-9)


def test_regression_moments_of_the_mixture_by_hand():
    # samples N(0, 1) and N(2, 3^2): mean 1, variance (1 + 9) / 2 + Var(0, 2) = 5 + 1 = 6
    mean = torch.tensor([[[0.0]], [[2.0]]], dtype=torch.float64)
    std = torch.tensor([[[1.0]], [[3.0]]], dtype=torch.float64)
    moments = regression_moments(mean, std)
    assert float(moments["mean"]) == pytest.approx(1.0)
    assert float(moments["std"]) == pytest.approx(math.sqrt(6.0), rel=1e-9)
    assert float(moments["aleatoric_std"]) == pytest.approx(math.sqrt(5.0), rel=1e-9)
    assert float(moments["epistemic_std"]) == pytest.approx(1.0, rel=1e-9)  # population std of (0, 2)
    # one sample: no epistemic part
    one = regression_moments(mean[:1], std[:1])
    assert float(one["std"]) == pytest.approx(1.0) and float(one["epistemic_std"]) == 0.0


def test_normal_quantile_and_central_interval_by_hand():
    assert normal_quantile(0.95) == pytest.approx(1.959963984540054, rel=1e-9)
    assert normal_quantile(0.5) == pytest.approx(0.6744897501960817, rel=1e-9)
    low, high = central_interval(torch.tensor([1.0]), torch.tensor([2.0]), 0.95)
    assert float(low) == pytest.approx(1.0 - 2 * 1.959963984540054, rel=1e-6)
    assert float(high) == pytest.approx(1.0 + 2 * 1.959963984540054, rel=1e-6)


def test_mixture_log_likelihood_by_hand():
    # y = 1 under (1/2) N(0, 1) + (1/2) N(2, 1): both densities are N(1; 0, 1) = exp(-1/2) / sqrt(2 pi)
    mean = torch.tensor([[[0.0]], [[2.0]]], dtype=torch.float64)
    std = torch.ones_like(mean)
    expected = -0.5 - 0.5 * math.log(2 * math.pi)
    assert float(mixture_log_likelihood(mean, std, torch.tensor([[1.0]], dtype=torch.float64))) == pytest.approx(
        expected, rel=1e-9
    )
    # y = 0: (1/2) N(0; 0, 1) + (1/2) N(0; 2, 1)
    mixture = 0.5 * math.exp(0.0) + 0.5 * math.exp(-2.0)
    expected = math.log(mixture) - 0.5 * math.log(2 * math.pi)
    assert float(mixture_log_likelihood(mean, std, torch.tensor([[0.0]], dtype=torch.float64))) == pytest.approx(
        expected, rel=1e-9
    )


def test_central_interval_is_95_percent_by_default():
    low, high = central_interval(torch.tensor([0.0]), torch.tensor([1.0]))
    assert float(high) == pytest.approx(1.959963984540054, rel=1e-6) and float(low) == -float(high)


def test_sample_counts_from_1_to_the_maximum_are_accepted_and_others_refused():
    from lightning_bnn.nn.predictive import MAX_SAMPLES, check_num_samples

    assert check_num_samples(1) == 1 and check_num_samples(MAX_SAMPLES) == MAX_SAMPLES == 10_000
    for bad in (0, MAX_SAMPLES + 1, True, 2.0, "3"):
        with pytest.raises(ValueError, match=f"num_samples must be an integer between 1 and 10000, got {bad!r}"):
            check_num_samples(bad)
