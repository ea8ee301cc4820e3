"""The likelihoods' typed summaries (:mod:`lightning_bnn.nn.likelihoods`), each against numbers computed here.

No training: hand-made sampled predictions go through ``summarise``, ``tensors``, ``columns`` and
``output_names``, and the expected values come from the definitions (numpy and the standard library).
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pandas as pd
import pytest
import torch

from lightning_bnn.data.preprocessing import ImagePreprocessing, NoPreprocessing, TabularPreprocessing
from lightning_bnn.nn.likelihoods import (
    CategoricalLikelihood,
    ClassificationSummary,
    GaussianLikelihood,
    NoiseModel,
    RegressionSummary,
    make_likelihood,
)

# S = 2 samples of B = 4 inputs over C = 3 classes (B != C, so a reduction over the wrong axis shows)
_PROBS = [
    # input 0: the samples disagree with confidence (large mutual information)
    [[0.9, 0.05, 0.05], [0.05, 0.8, 0.15]],
    # input 1: both say uniform (entropy log 3, all of it aleatoric; mutual information 0)
    [[1 / 3, 1 / 3, 1 / 3], [1 / 3, 1 / 3, 1 / 3]],
    # input 2: both agree on class 2 (mutual information 0)
    [[0.1, 0.2, 0.7], [0.1, 0.2, 0.7]],
    # input 3: mild disagreement, class 1 wins on average
    [[0.2, 0.5, 0.3], [0.3, 0.4, 0.3]],
]


def _class_samples() -> tuple[torch.Tensor, np.ndarray]:
    """The samples as the likelihood sees them, ``[S, B, C]``, and as numpy ``[B, S, C]`` for the expected values."""
    by_input = np.asarray(_PROBS, dtype=np.float64)
    return torch.tensor(by_input.transpose(1, 0, 2)), by_input


def _entropy(p: np.ndarray) -> float:
    return -sum(q * math.log(q) for q in p if q > 0)


def _expected_classification(by_input: np.ndarray) -> dict[str, np.ndarray]:
    mean = by_input.mean(axis=1)
    entropy = np.array([_entropy(p) for p in mean])
    aleatoric = np.array([np.mean([_entropy(p) for p in samples]) for samples in by_input])
    return {
        "probs": mean,
        "probs_std": np.sqrt(((by_input - mean[:, None, :]) ** 2).mean(axis=1)),  # population std over S
        "predicted": np.array([max(range(len(p)), key=lambda c, p=p: p[c]) for p in mean]),
        "entropy": entropy,
        "aleatoric": aleatoric,
        "mutual_information": entropy - aleatoric,
    }


def test_classification_summary_against_the_definitions():
    samples, by_input = _class_samples()
    expected = _expected_classification(by_input)
    summary = CategoricalLikelihood(3).summarise(samples)

    assert isinstance(summary, ClassificationSummary)
    assert summary.samples is samples
    for field in ("probs", "probs_std", "entropy", "aleatoric", "mutual_information"):
        value = getattr(summary, field)
        assert value.shape == expected[field].shape, field
        np.testing.assert_allclose(value.numpy(), expected[field], rtol=1e-9, atol=1e-12, err_msg=field)
    assert summary.predicted.tolist() == expected["predicted"].tolist() == [0, 0, 2, 1]
    # the cases the data were made for: confident disagreement is epistemic, a shared uniform answer aleatoric
    assert summary.mutual_information[0] > 0.4  # 0.444
    assert summary.mutual_information[1] == pytest.approx(0.0, abs=1e-12)
    assert summary.entropy[1] == pytest.approx(math.log(3), rel=1e-12)
    assert summary.aleatoric[1] == pytest.approx(math.log(3), rel=1e-12)
    assert summary.mutual_information[2] == pytest.approx(0.0, abs=1e-12)
    # two samples: the population std of each probability is half the samples' distance
    assert summary.probs_std[0].tolist() == pytest.approx([0.425, 0.375, 0.05], rel=1e-9)


def test_classification_tensors_and_columns_are_what_predict_and_the_pyfunc_show():
    samples, by_input = _class_samples()
    expected = _expected_classification(by_input)
    summary = CategoricalLikelihood(3).summarise(samples)

    tensors = summary.tensors()
    assert list(tensors) == ["probs", "entropy", "mutual_information"]
    for key, value in tensors.items():
        np.testing.assert_allclose(value.numpy(), expected[key], rtol=1e-9, atol=1e-12, err_msg=key)

    names = ["cat", "dog", "bird"]
    columns = summary.columns(names)
    assert list(columns) == ["prob_cat", "prob_dog", "prob_bird", "predicted", "entropy", "mutual_information"]
    for c, name in enumerate(names):
        np.testing.assert_allclose(columns[f"prob_{name}"], expected["probs"][:, c], rtol=1e-9)
    assert list(columns["predicted"]) == ["cat", "cat", "bird", "dog"]
    np.testing.assert_allclose(columns["entropy"], expected["entropy"], rtol=1e-9)
    np.testing.assert_allclose(columns["mutual_information"], expected["mutual_information"], rtol=1e-9, atol=1e-12)
    # the pyfunc model's output is this table, a row per input
    table = pd.DataFrame(columns)
    assert table.shape == (4, 6)
    assert table.loc[3, "predicted"] == "dog"


def test_class_names_come_from_the_preprocessing_when_there_is_one_per_class():
    likelihood = CategoricalLikelihood(3)
    assert likelihood.output_names(TabularPreprocessing(class_names=("cat", "dog", "bird"))) == ["cat", "dog", "bird"]
    # missing, or a count that does not match the network: the class indices
    assert likelihood.output_names(NoPreprocessing()) == ["0", "1", "2"]
    assert likelihood.output_names(ImagePreprocessing(height=8, width=8, class_names=("a", "b"))) == ["0", "1", "2"]
    assert CategoricalLikelihood(2).output_names(NoPreprocessing(class_names=("a", "b", "c"))) == ["0", "1"]


# S = 3 samples of B = 2 inputs with D = 2 targets: per-sample means m and noise stds s, [S, B, D]
_MEANS = [[[1.0, -2.0], [0.0, 5.0]], [[2.0, -2.0], [0.5, 4.0]], [[4.0, -2.0], [1.0, 3.0]]]
_STDS = [[[0.5, 1.0], [0.1, 2.0]], [[1.0, 1.0], [0.2, 2.0]], [[0.5, 1.0], [0.3, 1.0]]]


def _expected_regression(means: np.ndarray, stds: np.ndarray, level: float) -> dict[str, np.ndarray]:
    """Law of total variance: mean of the noise variances plus the (population) variance of the means."""
    s = means.shape[0]
    mean = means.sum(axis=0) / s
    aleatoric_var = (stds**2).sum(axis=0) / s
    epistemic_var = ((means - mean) ** 2).sum(axis=0) / s
    std = np.sqrt(aleatoric_var + epistemic_var)
    z = NormalDist().inv_cdf(0.5 + level / 2)
    return {
        "mean": mean,
        "std": std,
        "aleatoric_std": np.sqrt(aleatoric_var),
        "epistemic_std": np.sqrt(epistemic_var),
        "lower": mean - z * std,
        "upper": mean + z * std,
    }


def _regression_samples() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(_MEANS, dtype=torch.float64), torch.tensor(_STDS, dtype=torch.float64)


@pytest.mark.parametrize("level", [0.95, 0.8])
def test_regression_summary_by_the_law_of_total_variance(level):
    mean, std = _regression_samples()
    expected = _expected_regression(np.asarray(_MEANS), np.asarray(_STDS), level)
    summary = GaussianLikelihood(2).summarise((mean, std), level=level)

    assert isinstance(summary, RegressionSummary)
    assert summary.sample_mean is mean and summary.sample_std is std
    assert summary.level == level
    for field, value in expected.items():
        got = getattr(summary, field)
        assert got.shape == (2, 2), field
        np.testing.assert_allclose(got.numpy(), value, rtol=1e-9, atol=1e-12, err_msg=field)
    # target 0 of input 0: means 1, 2, 4 (variance 14/9) and noise variances 0.25, 1, 0.25 (mean 0.5)
    assert float(summary.std[0, 0]) == pytest.approx(math.sqrt(0.5 + 14 / 9), rel=1e-12)
    # target 1 of input 0: the samples agree on the mean, so all of the spread is aleatoric
    assert float(summary.epistemic_std[0, 1]) == 0.0
    assert float(summary.std[0, 1]) == pytest.approx(1.0, rel=1e-12)


def test_regression_interval_is_95_percent_by_default():
    mean, std = _regression_samples()
    expected = _expected_regression(np.asarray(_MEANS), np.asarray(_STDS), 0.95)
    summary = GaussianLikelihood(2).summarise((mean, std))
    assert summary.level == 0.95
    np.testing.assert_allclose(summary.lower.numpy(), expected["lower"], rtol=1e-9)
    np.testing.assert_allclose(summary.upper.numpy(), expected["upper"], rtol=1e-9)


def test_regression_tensors_and_columns_are_what_predict_and_the_pyfunc_show():
    mean, std = _regression_samples()
    expected = _expected_regression(np.asarray(_MEANS), np.asarray(_STDS), 0.9)
    summary = GaussianLikelihood(2).summarise((mean, std), level=0.9)

    tensors = summary.tensors()
    assert list(tensors) == ["mean", "std", "aleatoric_std", "epistemic_std"]
    for key, value in tensors.items():
        np.testing.assert_allclose(value.numpy(), expected[key], rtol=1e-9, atol=1e-12, err_msg=key)

    columns = summary.columns(["price", "demand"])
    parts = ["mean", "std", "aleatoric_std", "epistemic_std", "lower", "upper"]
    assert list(columns) == [f"{t}_{p}" for t in ("price", "demand") for p in parts]
    for d, target in enumerate(("price", "demand")):
        for part in parts:
            np.testing.assert_allclose(columns[f"{target}_{part}"], expected[part][:, d], rtol=1e-9, atol=1e-12)
    assert pd.DataFrame(columns).shape == (2, 12)


def test_regression_in_original_units_through_the_tabular_preprocessing():
    """Standardised outputs with target mean 10 and std 2: means are 2 m + 10, every std (and the interval) 2 s."""
    preprocessing = TabularPreprocessing(
        feature_names=("x",), target_names=("price",), target_mean=10.0, target_std=2.0
    )
    likelihood = GaussianLikelihood(1)
    means = np.asarray(_MEANS)[..., :1]
    stds = np.asarray(_STDS)[..., :1]
    original = likelihood.to_original_units((torch.tensor(means), torch.tensor(stds)), preprocessing)
    summary = likelihood.summarise(original, level=0.9)
    expected = _expected_regression(2.0 * means + 10.0, 2.0 * stds, 0.9)
    for field, value in expected.items():
        np.testing.assert_allclose(getattr(summary, field).numpy(), value, rtol=1e-9, atol=1e-12, err_msg=field)
    assert list(summary.columns(likelihood.output_names(preprocessing)))[:2] == ["price_mean", "price_std"]

    target = torch.tensor([[-1.0], [0.0], [2.5]], dtype=torch.float64)
    assert likelihood.target_in_original_units(target, preprocessing).tolist() == [[8.0], [10.0], [15.0]]
    # without target statistics (a classifier's preprocessing, or none) the target is unchanged
    assert likelihood.target_in_original_units(target, NoPreprocessing()).tolist() == target.tolist()
    labels = torch.tensor([2, 0, 1])
    assert CategoricalLikelihood(3).target_in_original_units(labels, preprocessing).tolist() == [2, 0, 1]


def test_target_names_come_from_the_preprocessing_when_there_is_one_per_target():
    two = TabularPreprocessing(target_names=("price", "demand"), target_mean=0.0, target_std=1.0)
    assert GaussianLikelihood(2).output_names(two) == ["price", "demand"]
    assert GaussianLikelihood(1).output_names(TabularPreprocessing(target_names=("price",))) == ["price"]
    # a count that does not match, no names, or a preprocessing without target names: y, or y0, y1, ...
    assert GaussianLikelihood(3).output_names(two) == ["y0", "y1", "y2"]
    assert GaussianLikelihood(1).output_names(two) == ["y"]
    assert GaussianLikelihood(1).output_names(NoPreprocessing()) == ["y"]
    assert GaussianLikelihood(2).output_names(NoPreprocessing()) == ["y0", "y1"]
    assert GaussianLikelihood(2).output_names(ImagePreprocessing(height=8, width=8)) == ["y0", "y1"]


def test_defaults_are_a_learned_noise_starting_at_0_1():
    """``GaussianLikelihood(d)`` and ``make_likelihood('regression', d)`` learn sigma_y from 0.1."""
    mean = torch.zeros(1, 2, 3)
    for likelihood in (GaussianLikelihood(3), make_likelihood("regression", 3)):
        assert isinstance(likelihood, GaussianLikelihood)
        assert likelihood.noise is NoiseModel.learned
        _, std = likelihood.predictive(mean)
        torch.testing.assert_close(std, torch.full((1, 2, 3), 0.1))
    fixed = make_likelihood("regression", 1, noise="fixed")
    torch.testing.assert_close(fixed.predictive(torch.zeros(1, 2, 1))[1], torch.full((1, 2, 1), 0.1))
    assert isinstance(make_likelihood("classification", 4), CategoricalLikelihood)
    assert make_likelihood("classification", 4).network_outputs() == 4


def test_an_unknown_task_or_noise_model_is_refused_by_name():
    with pytest.raises(ValueError, match="'ranking' is not a valid Task"):
        make_likelihood("ranking", 2)
    with pytest.raises(ValueError, match="'loud' is not a valid NoiseModel"):
        GaussianLikelihood(1, noise="loud")
