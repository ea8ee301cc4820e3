"""Sampled predictions: shapes, the entropy split, the point estimate, and that models are left unchanged."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dashboard import predictions
from lightning_bnn import load_model
from lightning_bnn.nn.layers import PredictEstimator


@pytest.fixture(scope="module")
def digits_model(digits_run):
    return load_model(digits_run[1], tracking_uri=digits_run[0])


@pytest.fixture(scope="module")
def toy_model(toy_run):
    return load_model(toy_run[1], tracking_uri=toy_run[0])


def state(module) -> dict:
    """A copy of the module's weights and attributes that a prediction must leave as they are."""
    return {k: v.clone() for k, v in module.state_dict().items()}


def unchanged(module, before: dict) -> bool:
    after = module.state_dict()
    no_flag = not any(hasattr(m, "predict_estimator") for m in module.modules())  # the estimator is per call
    return no_flag and set(after) == set(before) and all(torch.equal(after[k], before[k]) for k in before)


def test_classify(digits_model):
    x = np.random.default_rng(0).random((4, 1, 8, 8), dtype=np.float32)
    before = state(digits_model)
    result = predictions.classify(digits_model, x, 25)
    assert result.probs.shape == (25, 4, 10) and result.mean.shape == (4, 10)
    np.testing.assert_allclose(result.mean.sum(1), 1.0, rtol=1e-5)
    # each field against its value computed here with numpy from the sampled probabilities (not against the
    # identity H = aleatoric + epistemic, which a swap of the two parts would still satisfy)
    p = result.probs.astype(np.float64)
    total = -(p.mean(0) * np.log(p.mean(0))).sum(-1)
    aleatoric = -(p * np.log(p)).sum(-1).mean(0)
    np.testing.assert_allclose(result.mean, p.mean(0), rtol=1e-5)
    np.testing.assert_allclose(result.std, p.std(0), rtol=1e-4, atol=1e-7)
    np.testing.assert_array_equal(result.predicted, p.mean(0).argmax(-1))
    np.testing.assert_allclose(result.predictive_entropy, total, rtol=1e-5)
    np.testing.assert_allclose(result.expected_entropy, aleatoric, rtol=1e-5)
    np.testing.assert_allclose(result.mutual_information, total - aleatoric, rtol=1e-3, atol=1e-5)
    assert (total - aleatoric).min() > 1e-4  # an epistemic part (0.0008-0.0017 here) the clamp at 0 leaves alone
    assert result.point_probs.shape == (4, 10) and result.point_predicted.shape == (4,)
    assert unchanged(digits_model, before)  # the point estimate is an argument of the call
    again = predictions.classify(digits_model, x, 25)
    np.testing.assert_array_equal(result.probs, again.probs)  # seeded: reruns show the same numbers
    table = predictions.classification_table(result, list("abcd"))
    assert list(table["input"]) == list("abcd") and "p_mean[9]" in table
    assert predictions.to_csv_bytes(table).startswith(b"input,predicted_class,probability")


def test_point_estimate_is_deterministic(digits_model):
    x = np.random.default_rng(1).random((2, 1, 8, 8), dtype=np.float32)
    a = predictions.classify(digits_model, x, 3, seed=1).point_probs
    b = predictions.classify(digits_model, x, 3, seed=2).point_probs
    np.testing.assert_allclose(a, b, rtol=1e-6)


def test_one_sample_has_no_epistemic_part(digits_model):
    x = np.zeros((1, 1, 8, 8), dtype=np.float32)
    result = predictions.classify(digits_model, x, 1)
    assert result.mutual_information[0] == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="number of samples S must be an integer between 1 and"):
        predictions.classify(digits_model, x, 0)


def test_regress_and_fan(toy_model):
    x = np.array([[0.1], [0.3], [2.0]], dtype=np.float32)
    before = state(toy_model)
    result = predictions.regress(toy_model, x, 200)
    assert result.sample_mean.shape == (200, 3, 1) and result.draws.shape == (200, 3, 1)
    np.testing.assert_allclose(result.std**2, result.aleatoric_std**2 + result.epistemic_std**2, rtol=1e-4)
    assert (result.lower < result.mean).all() and (result.mean < result.upper).all()
    np.testing.assert_allclose((result.upper - result.mean) / result.std, 1.96, rtol=1e-3)
    # draws are from the predictive: their spread matches the mixture's std
    np.testing.assert_allclose(result.draws.std(0), result.std, rtol=0.25)
    data = predictions.fan_chart_data(toy_model, -0.5, 1.0, 40, num_points=50)
    assert data["x"].shape == (50,) and data["draws"].shape == (30, 50)
    assert (data["lower"] <= data["epistemic_lower"] + 1e-6).all()
    assert unchanged(toy_model, before)
    with pytest.raises(ValueError, match="low < high"):
        predictions.fan_chart_data(toy_model, 1.0, 0.0, 10)


def test_test_examples_only_for_bundled_data():
    config = "data:\n  class_path: lightning_bnn.data.DigitsDataModule\n  init_args: {seed: 0, batch_size: 64}\n"
    x, y = predictions.test_examples(config, limit=5)
    assert x.shape == (5, 1, 8, 8) and y.shape == (5,) and 0 <= x.min() and x.max() <= 1
    with pytest.raises(predictions.ExamplesUnavailable, match="only rebuilt for the bundled data sets"):
        predictions.test_examples("data:\n  class_path: os.system\n  init_args: {}\n")
    with pytest.raises(predictions.ExamplesUnavailable, match="names no data module"):
        predictions.test_examples("model: {}\n")
    with pytest.raises(predictions.ExamplesUnavailable, match="not valid YAML"):
        predictions.test_examples("data: [unclosed\n")


def test_sessions_sharing_a_model_do_not_see_each_others_estimator(digits_model):
    """Two threads (two dashboard sessions) use one cached model with different estimators at once."""
    import threading

    x = torch.as_tensor(np.random.default_rng(2).random((3, 1, 8, 8), dtype=np.float32))
    point = digits_model.sample_predictions(x, 1, estimator=PredictEstimator.mean)
    sampled = digits_model.sample_predictions(x, 20, generator=torch.Generator().manual_seed(5))
    errors = []

    def session(estimator, expected, seeded):
        for _ in range(30):
            generator = torch.Generator().manual_seed(5) if seeded else None
            out = digits_model.sample_predictions(x, expected.shape[0], estimator=estimator, generator=generator)
            if not torch.allclose(out, expected, atol=1e-6):
                errors.append(estimator)

    threads = [
        threading.Thread(target=session, args=(PredictEstimator.mean, point, False)),
        threading.Thread(target=session, args=(None, sampled, True)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors  # a thread that saw the other's estimator gets different numbers
    assert not torch.allclose(sampled[0], sampled[1])  # the sampled session really samples


def test_describe_network_names_a_user_network():
    from types import SimpleNamespace

    from dashboard.predictions import describe_network

    built_in = SimpleNamespace(layer_type="bayes", architecture="mlp", hidden_sizes=[8], network=None)
    assert describe_network(built_in) == "bayes mlp [8]"
    own = SimpleNamespace(
        layer_type="bayes", network={"class_path": "my_pkg.Net", "init_args": {}}, bayesian_layers=["head.*"]
    )
    assert describe_network(own) == "my_pkg.Net (Bayesian layers ['head.*'])"
    old = SimpleNamespace(layer_type="deterministic", architecture="cnn", hidden_sizes=[])  # a version 1 model.json
    assert describe_network(old) == "deterministic cnn []"
