r"""Sampled predictions for the Predict page (no Streamlit calls).

For each input the Bayesian network is sampled S times; the reductions come from
:mod:`lightning_bnn.predict`. Classification reports, per input, the mean class
probabilities and their spread across samples, and splits the predictive entropy
(Depeweg et al. 2018):

.. math::
    H\big[\tfrac1S\textstyle\sum_s p_s\big] = \tfrac1S\textstyle\sum_s H[p_s] + I[y; w \mid x]

(aleatoric = expected entropy, epistemic = mutual information). Regression reports
the predictive mixture's mean, std and 95% central interval, and draws from it.

The *point estimate* is the same network with every weight at its posterior mean
(``set_predict_estimator(net, "mean")``, one sample): it shows how a deterministic
network with the same weights would answer.

Models are shared between sessions (Streamlit caches them), so switching a model's
prediction estimator and sampling happen under one lock, and the estimator is put
back afterwards.
"""

from __future__ import annotations

import contextlib
import importlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import yaml

from lightning_bnn.layers import PredictEstimator, set_predict_estimator
from lightning_bnn.predict import (
    central_interval,
    check_num_samples,
    expected_entropy,
    mutual_information,
    predictive_entropy,
    regression_moments,
)

#: the S slider's range
MIN_SAMPLES, MAX_SAMPLES = 1, 1000
#: data modules whose test split the Predict page may rebuild from a run's config.yaml
SAFE_DATA_CLASSES = {
    "lightning_bnn.data.DigitsDataModule",
    "lightning_bnn.data.ToyRegressionDataModule",
    "lightning_bnn.idx.FashionMNISTDataModule",
}
_MODEL_LOCK = threading.RLock()


class ExamplesUnavailable(LookupError):
    """The run's test examples cannot be rebuilt safely."""


@contextlib.contextmanager
def predict_estimator(network: torch.nn.Module, estimator: str) -> Iterator[None]:
    """Temporarily set every Bayesian layer's prediction estimator; restores the previous ones."""
    layers = [m for m in network.modules() if hasattr(m, "predict_estimator")]
    previous = [m.predict_estimator for m in layers]
    with _MODEL_LOCK:
        set_predict_estimator(network, estimator)
        try:
            yield
        finally:
            for layer, value in zip(layers, previous):
                layer.predict_estimator = value


@contextlib.contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Reproducible sampling without touching the global RNG state of the caller."""
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        yield


def _tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x, dtype=np.float32))


def class_names(module) -> list[str]:
    """The model's class names, from its preprocessing record (or 0..C-1)."""
    names = (module.hparams.preprocessing or {}).get("class_names")
    count = int(module.hparams.num_outputs)
    if isinstance(names, list) and len(names) == count:
        return [str(n) for n in names]
    return [str(i) for i in range(count)]


@dataclass
class ClassificationResult:
    """Sampled class probabilities of B inputs and their summaries.

    Attributes:
        class_names: C names.
        probs: sampled probabilities ``[S, B, C]``.
        mean: mean probabilities ``[B, C]``; ``std``: their std across samples ``[B, C]``.
        predicted: argmax of ``mean`` ``[B]``.
        predictive_entropy: total uncertainty (nats) ``[B]``; ``expected_entropy``
            (aleatoric) and ``mutual_information`` (epistemic) split it.
        point_probs: the posterior-mean network's probabilities ``[B, C]``.
    """

    class_names: list[str]
    probs: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    predicted: np.ndarray
    predictive_entropy: np.ndarray
    expected_entropy: np.ndarray
    mutual_information: np.ndarray
    point_probs: np.ndarray

    @property
    def point_predicted(self) -> np.ndarray:
        """Point estimate's class per input ``[B]``."""
        return self.point_probs.argmax(axis=1)

    @property
    def point_entropy(self) -> np.ndarray:
        """Entropy (nats) of the point estimate's probabilities ``[B]``."""
        p = np.clip(self.point_probs, 1e-12, 1.0)
        return -(self.point_probs * np.log(p)).sum(axis=1)


def classify(module, x: np.ndarray | torch.Tensor, num_samples: int, seed: int | None = 0) -> ClassificationResult:
    """Sample a classifier ``num_samples`` times for model-space inputs ``x`` ``[B, *input_shape]``."""
    check_num_samples(num_samples, "number of samples S")
    x = _tensor(x)
    with _MODEL_LOCK, seeded(seed):
        probs = module.sample_predictions(x, num_samples)
        with predict_estimator(module.net, PredictEstimator.mean):
            point = module.sample_predictions(x, 1)[0]
    return ClassificationResult(
        class_names=class_names(module),
        probs=probs.numpy(),
        mean=probs.mean(0).numpy(),
        std=probs.std(0, unbiased=False).numpy(),
        predicted=probs.mean(0).argmax(-1).numpy(),
        predictive_entropy=predictive_entropy(probs).numpy(),
        expected_entropy=expected_entropy(probs).numpy(),
        mutual_information=mutual_information(probs).numpy(),
        point_probs=point.numpy(),
    )


@dataclass
class RegressionResult:
    """Sampled regression predictions of B inputs (original target units).

    Attributes:
        target_names: D names.
        sample_mean, sample_std: per-sample predictive mean and noise std ``[S, B, D]``.
        draws: one draw of y per sample, ``sample_mean + sample_std * eps`` ``[S, B, D]``.
        mean, std, aleatoric_std, epistemic_std: moments of the predictive mixture ``[B, D]``.
        lower, upper: 95% central interval ``[B, D]``.
        point_mean, point_std: the posterior-mean network's prediction ``[B, D]``.
    """

    target_names: list[str]
    sample_mean: np.ndarray
    sample_std: np.ndarray
    draws: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    aleatoric_std: np.ndarray
    epistemic_std: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    point_mean: np.ndarray
    point_std: np.ndarray


def target_names(module) -> list[str]:
    """The model's target names (or y0..y{D-1})."""
    names = (module.hparams.preprocessing or {}).get("target_names")
    count = int(module.hparams.num_outputs)
    if isinstance(names, list) and len(names) == count:
        return [str(n) for n in names]
    return ["y"] if count == 1 else [f"y{i}" for i in range(count)]


def regress(
    module, x: np.ndarray | torch.Tensor, num_samples: int, seed: int | None = 0, estimator: str | None = None
) -> RegressionResult:
    """Sample a regression model for model-space inputs ``x`` ``[B, F]``.

    Args:
        module: the loaded BNNModule (task regression).
        x: model-space inputs.
        num_samples: S.
        seed: seed of the draws (None: fresh randomness).
        estimator: prediction estimator for the samples (``reparameterization`` gives whole
            function draws, coherent across the inputs); None keeps the model's own.
    """
    check_num_samples(num_samples, "number of samples S")
    x = _tensor(x)
    with _MODEL_LOCK, seeded(seed):
        if estimator is None:
            mean, std = module.sample_predictions(x, num_samples)
        else:
            with predict_estimator(module.net, estimator):
                mean, std = module.sample_predictions(x, num_samples)
        draws = mean + std * torch.randn_like(mean)
        with predict_estimator(module.net, PredictEstimator.mean):
            point_mean, point_std = module.sample_predictions(x, 1)
    moments = regression_moments(mean, std)
    lower, upper = central_interval(moments["mean"], moments["std"], 0.95)
    return RegressionResult(
        target_names=target_names(module),
        sample_mean=mean.numpy(),
        sample_std=std.numpy(),
        draws=draws.numpy(),
        mean=moments["mean"].numpy(),
        std=moments["std"].numpy(),
        aleatoric_std=moments["aleatoric_std"].numpy(),
        epistemic_std=moments["epistemic_std"].numpy(),
        lower=lower.numpy(),
        upper=upper.numpy(),
        point_mean=point_mean[0].numpy(),
        point_std=point_std[0].numpy(),
    )


def fan_chart_data(module, x_low: float, x_high: float, num_samples: int, num_points: int = 200) -> dict:
    """Predictions of a 1-D regression model over a grid of raw x values.

    Function draws use the ``reparameterization`` estimator, so each draw is one whole
    function (one weight sample for every x).

    Returns:
        ``{"x": [N], "mean", "lower", "upper" (95% total), "epistemic_lower", "epistemic_upper"
        (mean -+ 1.96 epistemic std), "point": [N], "draws": [min(S, 30), N]}``.
    """
    if not (np.isfinite(x_low) and np.isfinite(x_high) and x_low < x_high):
        raise ValueError(f"the x range must be finite with low < high, got [{x_low}, {x_high}]")
    pre = module.hparams.preprocessing or {}
    grid = np.linspace(x_low, x_high, num_points)
    mean = float((pre.get("feature_mean") or [0.0])[0])
    std = float((pre.get("feature_std") or [1.0])[0]) or 1.0
    x = ((grid - mean) / std)[:, None]
    result = regress(module, x, num_samples, estimator=PredictEstimator.reparameterization)
    z_epistemic = 1.959963984540054
    return {
        "x": grid,
        "mean": result.mean[:, 0],
        "lower": result.lower[:, 0],
        "upper": result.upper[:, 0],
        "epistemic_lower": result.mean[:, 0] - z_epistemic * result.epistemic_std[:, 0],
        "epistemic_upper": result.mean[:, 0] + z_epistemic * result.epistemic_std[:, 0],
        "point": result.point_mean[:, 0],
        "draws": result.sample_mean[: min(num_samples, 30), :, 0],
        "std": result.std[:, 0],
    }


def classification_table(result: ClassificationResult, input_names: list[str]) -> pd.DataFrame:
    """One row per input: predictions, uncertainty split, point estimate and mean class probabilities."""
    rows = []
    for i, name in enumerate(input_names):
        k = int(result.predicted[i])
        kp = int(result.point_predicted[i])
        row = {
            "input": name,
            "predicted_class": result.class_names[k],
            "probability": float(result.mean[i, k]),
            "probability_std": float(result.std[i, k]),
            "predictive_entropy": float(result.predictive_entropy[i]),
            "aleatoric_expected_entropy": float(result.expected_entropy[i]),
            "epistemic_mutual_information": float(result.mutual_information[i]),
            "point_estimate_class": result.class_names[kp],
            "point_estimate_probability": float(result.point_probs[i, kp]),
            "point_estimate_entropy": float(result.point_entropy[i]),
        }
        for c, cname in enumerate(result.class_names):
            row[f"p_mean[{cname}]"] = float(result.mean[i, c])
        rows.append(row)
    return pd.DataFrame(rows)


def regression_table(result: RegressionResult, inputs: pd.DataFrame) -> pd.DataFrame:
    """The inputs with, per target, predictive mean, std (total, aleatoric, epistemic), 95% interval, point."""
    out = inputs.reset_index(drop=True).copy()
    for d, name in enumerate(result.target_names):
        out[f"{name}_mean"] = result.mean[:, d]
        out[f"{name}_std"] = result.std[:, d]
        out[f"{name}_aleatoric_std"] = result.aleatoric_std[:, d]
        out[f"{name}_epistemic_std"] = result.epistemic_std[:, d]
        out[f"{name}_lower95"] = result.lower[:, d]
        out[f"{name}_upper95"] = result.upper[:, d]
        out[f"{name}_point_estimate"] = result.point_mean[:, d]
        if name in inputs:  # the observed target was uploaded too: where it falls in the predictive
            observed = pd.to_numeric(inputs[name].reset_index(drop=True), errors="coerce").to_numpy(np.float64)
            out[name] = observed
            for key, values in target_position(result, observed, d).items():
                out[f"{name}_{key}"] = values
    return out


def target_position(result: RegressionResult, observed: np.ndarray, target: int = 0) -> dict[str, np.ndarray]:
    r"""Where observed targets ``[B]`` fall in their sampled predictive mixtures (original units).

    Returns:
        ``quantile``: the predictive CDF at y, :math:`\tfrac1S\sum_s \Phi((y - m_s) / s_s)` (0.5 is the
        median; below 0.025 or above 0.975 is outside the central 95%); ``z``: (y - mean) / std;
        ``in_95``: whether y lies in the 95% interval. NaN (``in_95`` False) where y is missing.
    """
    m = torch.as_tensor(result.sample_mean[:, :, target], dtype=torch.float64)
    s = torch.as_tensor(result.sample_std[:, :, target], dtype=torch.float64)
    y = torch.tensor(np.asarray(observed, dtype=np.float64))
    quantile = torch.special.ndtr((y.unsqueeze(0) - m) / s).mean(dim=0).numpy()
    z = (observed - result.mean[:, target]) / result.std[:, target]
    inside = (observed >= result.lower[:, target]) & (observed <= result.upper[:, target])
    return {"quantile": quantile, "z": z, "in_95": inside}


def to_csv_bytes(frame: pd.DataFrame) -> bytes:
    """CSV bytes of a results table (for download)."""
    return frame.to_csv(index=False).encode("utf-8")


def test_examples(config_yaml: str, limit: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """The first ``limit`` test examples (model space) of a run, rebuilt from its ``config.yaml``.

    Only the bundled data modules in :data:`SAFE_DATA_CLASSES` are rebuilt (no code from
    the config is imported otherwise, and nothing is downloaded).

    Returns:
        (x ``[N, *input_shape]`` float32, y ``[N]``).

    Raises:
        ExamplesUnavailable: the config is unreadable or names another data module.
    """
    try:
        config = yaml.safe_load(config_yaml) or {}
    except yaml.YAMLError as err:
        raise ExamplesUnavailable(f"the run's config.yaml is not valid YAML ({err})") from None
    data = config.get("data") if isinstance(config, dict) else None
    if not isinstance(data, dict) or not isinstance(data.get("class_path"), str):
        raise ExamplesUnavailable("the run's config.yaml names no data module")
    class_path = data["class_path"]
    if class_path not in SAFE_DATA_CLASSES:
        raise ExamplesUnavailable(f"test examples are only rebuilt for the bundled data sets, not {class_path}")
    module_name, _, class_name = class_path.rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name)
    init_args = {k: v for k, v in (data.get("init_args") or {}).items() if k != "num_workers"}
    try:
        splits = cls(**init_args).splits
    except (OSError, ValueError, TypeError) as err:
        raise ExamplesUnavailable(f"the run's test data could not be rebuilt: {err}") from None
    return splits.x_test[:limit].numpy(), splits.y_test[:limit].numpy()


def clamp_samples(value: int) -> int:
    """S within the slider's range."""
    return int(min(MAX_SAMPLES, max(MIN_SAMPLES, int(value))))
