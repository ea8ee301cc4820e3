"""Baselines share the sampled-prediction path: MC dropout varies, a deterministic network does not."""

from __future__ import annotations

import pytest
import torch

from lightning_bnn.evaluation.metrics import classification_metrics
from lightning_bnn.nn.predictive import mutual_information
from lightning_bnn.training.module import BNNModule


def _model(layer_type: str) -> BNNModule:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return BNNModule(input_shape=[1, 8, 8], num_outputs=10, hidden_sizes=[32], layer_type=layer_type, dropout=0.3)


def _samples(model: BNNModule, s: int = 8) -> torch.Tensor:
    x = torch.rand(12, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.random.fork_rng():
        torch.manual_seed(2)
        return model.eval().sample_predictions(x, s)


def test_mc_dropout_samples_differ():
    probs = _samples(_model("mc_dropout"))
    assert probs.shape == (8, 12, 10)
    assert not torch.allclose(probs[0], probs[1])  # dropout stays on at prediction
    assert (mutual_information(probs) > 0).all()


def test_deterministic_samples_are_identical_with_zero_mutual_information():
    probs = _samples(_model("deterministic"))
    assert probs.shape == (8, 12, 10)
    assert torch.equal(probs, probs[:1].expand_as(probs))
    # zero up to float rounding of H[mean] - mean H (identical samples)
    assert float(mutual_information(probs).max()) < 1e-6
    metrics = classification_metrics(10)
    metrics.update(probs, torch.zeros(12, dtype=torch.long))
    assert float(metrics.compute()["mi"]) == pytest.approx(0.0, abs=1e-6)


def test_bayes_samples_differ():
    model = _model("bayes")
    with torch.no_grad():
        model.net.layers[1].weight.rho.fill_(-2.0)  # a visibly uncertain first layer
    probs = _samples(model)
    assert not torch.allclose(probs[0], probs[1])
    assert (mutual_information(probs) > 0).all()


@pytest.mark.parametrize("layer_type", ["bayes", "deterministic", "mc_dropout"])
def test_every_layer_type_predicts_through_the_same_api(layer_type):
    model = _model(layer_type)
    out = model.predict_step(torch.rand(5, 1, 8, 8), 0)
    assert set(out) == {"probs", "entropy", "mutual_information"}
    assert torch.allclose(out["probs"].sum(-1), torch.ones(5), atol=1e-5)
