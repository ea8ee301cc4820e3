r"""Sampled predictions for the Predict page (no Streamlit calls).

For each input the Bayesian network is sampled S times and the model's likelihood
summarises the samples (:meth:`BNNModule.summarise`). Classification reports, per input, the mean class
probabilities and their spread across samples, and splits the predictive entropy
(Depeweg et al. 2018):

.. math::
    H\big[\tfrac1S\textstyle\sum_s p_s\big] = \tfrac1S\textstyle\sum_s H[p_s] + I[y; w \mid x]

(aleatoric = expected entropy, epistemic = mutual information). Regression reports
the predictive mixture's mean, std and 95% central interval, and draws from it.

The *point estimate* is the same network with every weight at its posterior mean
(``sample_predictions(x, 1, estimator="mean")``): it shows how a deterministic network
with the same weights would answer.

Models are shared between sessions (Streamlit caches them): the estimator and the random
generator are arguments of each call, so sessions never change a model that others use.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import yaml

from lightning_bnn.data.stored import StoredDataError, datamodule_from_config
from lightning_bnn.nn.likelihoods import ClassificationSummary, RegressionSummary
from lightning_bnn.nn.predictive import check_num_samples
from lightning_bnn.nn.sampling import PredictEstimator

#: the S slider's range
MIN_SAMPLES, MAX_SAMPLES = 1, 1000


class ExamplesUnavailable(LookupError):
    """The run's test examples cannot be rebuilt safely."""


class ComparisonError(ValueError):
    """The chosen models cannot answer the same inputs."""


def describe_network(hparams) -> str:
    """One line naming the model's network: ``bayes mlp [128, 128]``, or a user network's class and Bayesian layers."""
    network = getattr(hparams, "network", None)
    if not isinstance(network, dict):
        return f"{hparams.layer_type} {hparams.architecture} {list(hparams.hidden_sizes)}"
    layers = getattr(hparams, "bayesian_layers", None)
    which = "deterministic" if hparams.layer_type != "bayes" else f"Bayesian layers {layers or 'all'}"
    return f"{network['class_path']} ({which})"


def describe_model(module) -> str:
    """``classification model · bayes mlp [32] · input [1, 8, 8]``."""
    hp = module.hparams
    return f"{hp.task} model · {describe_network(hp)} · input {list(hp.input_shape)}"


def _tensor(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x, dtype=np.float32))


def _generator(seed: int | None) -> torch.Generator:
    """A generator for one call: seeded (reproducible), or from fresh entropy when ``seed`` is None."""
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator


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


#: ClassificationResult field -> the likelihood summary's attribute it is read from
_CLASSIFICATION_FIELDS = {
    "probs": "samples",
    "mean": "probs",
    "std": "probs_std",
    "predicted": "predicted",
    "predictive_entropy": "entropy",
    "expected_entropy": "aleatoric",
    "mutual_information": "mutual_information",
}


def classify(module, x: np.ndarray | torch.Tensor, num_samples: int, seed: int | None = 0) -> ClassificationResult:
    """Sample a classifier ``num_samples`` times for model-space inputs ``x`` ``[B, *input_shape]``."""
    check_num_samples(num_samples, "number of samples S")
    x = _tensor(x)
    summary = module.summarise(module.sample_predictions(x, num_samples, generator=_generator(seed)))
    point = module.sample_predictions(x, 1, estimator=PredictEstimator.mean)[0]
    arrays = {field: getattr(summary, name).numpy() for field, name in _CLASSIFICATION_FIELDS.items()}
    return ClassificationResult(class_names=module.output_names(), point_probs=point.numpy(), **arrays)


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


#: RegressionResult fields read from the likelihood summary's attributes of the same name
_REGRESSION_FIELDS = ("sample_mean", "sample_std", "mean", "std", "aleatoric_std", "epistemic_std", "lower", "upper")


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
            function draws, coherent across the inputs); None: the layers' ``auto``.
    """
    check_num_samples(num_samples, "number of samples S")
    x = _tensor(x)
    generator = _generator(seed)
    summary = module.summarise(module.sample_predictions(x, num_samples, estimator=estimator, generator=generator))
    noise = torch.randn(summary.sample_mean.shape, generator=generator, dtype=summary.sample_mean.dtype)
    draws = summary.sample_mean + summary.sample_std * noise
    point_mean, point_std = module.sample_predictions(x, 1, estimator=PredictEstimator.mean)
    return RegressionResult(
        target_names=module.output_names(),
        draws=draws.numpy(),
        point_mean=point_mean[0].numpy(),
        point_std=point_std[0].numpy(),
        **{name: getattr(summary, name).numpy() for name in _REGRESSION_FIELDS},
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
    grid = np.linspace(x_low, x_high, num_points)
    x = module.preprocessing.transform(grid[:, None])
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

    Only the bundled data modules are rebuilt (:mod:`lightning_bnn.data.stored`: no code
    named by the config is imported, and nothing is downloaded).

    Returns:
        (x ``[N, *input_shape]`` float32, y ``[N]``).

    Raises:
        ExamplesUnavailable: the config is unreadable or names another data module.
    """
    try:
        config = yaml.safe_load(config_yaml) or {}
    except yaml.YAMLError as err:
        raise ExamplesUnavailable(f"the run's config.yaml is not valid YAML ({err})") from None
    try:
        splits = datamodule_from_config(config, bundled_only=True, drop=("num_workers",)).splits
    except StoredDataError as err:
        raise ExamplesUnavailable(str(err)) from None
    except (OSError, ValueError) as err:
        raise ExamplesUnavailable(f"the run's test data could not be rebuilt: {err}") from None
    return splits.x_test[:limit].numpy(), splits.y_test[:limit].numpy()


def clamp_samples(value: int) -> int:
    """S within the slider's range."""
    return int(min(MAX_SAMPLES, max(MIN_SAMPLES, int(value))))


def predict(module, x: np.ndarray | torch.Tensor, num_samples: int, seed: int | None = 0):
    """:func:`classify` or :func:`regress`, as the model's likelihood says (by its summary's type)."""
    return _PREDICT[module.likelihood.summary_type](module, x, num_samples, seed)


_PREDICT = {ClassificationSummary: classify, RegressionSummary: regress}


def example_labels(module, y: np.ndarray) -> list[str]:
    """'true class NAME' for each test example's label."""
    names = module.output_names()
    return [f"true class {names[int(label)]}" for label in y]


def row_names(frame: pd.DataFrame, targets: list[str]) -> list[str]:
    """'row N' for each CSV row, with its true value when the CSV has the target column."""
    truth = next((t for t in targets if t in frame), None)
    return [f"row {i + 1}" + (f" (true {truth}: {frame[truth][i]})" if truth else "") for i in range(len(frame))]


def fan_range(preprocessing) -> tuple[float, float]:
    """Default x range of the fan chart: the training interval widened by its width each side, or mean -+ 3 std."""
    train_range = getattr(preprocessing, "train_range", None)
    if train_range:
        width = float(train_range[1]) - float(train_range[0])
        return float(train_range[0]) - width, float(train_range[1]) + width
    mean, std = preprocessing.feature_mean[0], preprocessing.feature_std[0]
    return mean - 3 * std, mean + 3 * std


def wants_fan_chart(module) -> bool:
    """A one-feature regression model: its predictions are drawn as functions of that feature."""
    return module.likelihood.summary_type is RegressionSummary and len(module.hparams.input_shape) == 1 == int(
        module.hparams.input_shape[0]
    )


# -- several models, the same inputs ----------------------------------------------------------------------
def check_comparable(models: Mapping[str, object]) -> None:
    """Check that several loaded models can answer the same inputs, side by side.

    They must take the same kind of input (images or table rows) of the same shape (and, for
    tables, the same feature columns), and give the same kind of answer (class probabilities or a
    predictive distribution) over the same classes or targets.

    Args:
        models: label -> loaded BNNModule.

    Raises:
        ComparisonError: naming the first model that differs from the first one, and how.
    """
    (first_label, first), *others = models.items()
    for label, module in others:
        a, b = first.preprocessing, module.preprocessing
        pair = f"'{first_label}' and '{label}'"
        if a.kind != b.kind:
            raise ComparisonError(
                f"{pair} take different inputs ({a.kind} and {b.kind}): compare models of one kind of input"
            )
        if tuple(first.hparams.input_shape) != tuple(module.hparams.input_shape):
            raise ComparisonError(
                f"{pair} take inputs of different shapes ({list(first.hparams.input_shape)} and "
                f"{list(module.hparams.input_shape)}): compare models trained on the same data"
            )
        if tuple(getattr(a, "feature_names", ())) != tuple(getattr(b, "feature_names", ())):
            raise ComparisonError(
                f"{pair} take different feature columns ({list(a.feature_names)} and {list(b.feature_names)})"
            )
        if first.likelihood.summary_type is not module.likelihood.summary_type:
            raise ComparisonError(
                f"{pair} give different kinds of answer ({first.hparams.task} and {module.hparams.task})"
            )
        if first.output_names() != module.output_names():
            raise ComparisonError(f"{pair} have different outputs ({first.output_names()} and {module.output_names()})")


def examples_for_models(models: Mapping[str, object], x: np.ndarray) -> dict[str, np.ndarray]:
    """Image inputs ``[N, C, H, W]`` in the first model's space -> each model's inputs.

    A model with the first one's preprocessing takes ``x`` as it is; another one (e.g. another
    pixel ``scale``) takes the same pixels through its own preprocessing.
    """
    (_, first), *_ = models.items()
    pre = first.preprocessing
    pixels = np.stack([pre.to_pixels(row) for row in x]) if len(x) else None
    return {
        label: x if module.preprocessing == pre else module.preprocessing.pixels_to_array(pixels)
        for label, module in models.items()
    }


def predict_all(
    models: Mapping[str, object], inputs: Mapping[str, np.ndarray | torch.Tensor], num_samples: int, seed: int = 0
) -> dict:
    """:func:`predict` of each model on its own model-space inputs (same seed for each): label -> result."""
    return {label: predict(module, inputs[label], num_samples, seed) for label, module in models.items()}


def _stack(tables: Mapping[str, pd.DataFrame], run_ids: Mapping[str, str] | None) -> pd.DataFrame:
    """Per-model tables (one row per input) -> one row per input and model, input by input, models in order."""
    frames = []
    for order, (label, table) in enumerate(tables.items()):
        table = table.copy()
        table.insert(0, "input_index", range(len(table)))
        table.insert(1, "model", label)
        if run_ids is not None:
            table.insert(2, "run_id", run_ids.get(label))
        table["_order"] = order
        frames.append(table)
    out = pd.concat(frames, ignore_index=True).sort_values(["input_index", "_order"], kind="stable")
    return out.drop(columns="_order").reset_index(drop=True)


def compare_classification(
    results: Mapping[str, ClassificationResult], input_names: list[str], run_ids: Mapping[str, str] | None = None
) -> pd.DataFrame:
    """The tidy table of a comparison: one row per input and model, input by input.

    Columns: ``input_index``, ``model``, ``run_id`` (when given), then those of
    :func:`classification_table` (``input``, the predicted class, its mean probability and std
    across samples, the predictive entropy and its aleatoric and epistemic parts, the point
    estimate, the mean class probabilities).
    """
    return _stack({label: classification_table(r, input_names) for label, r in results.items()}, run_ids)


def compare_regression(
    results: Mapping[str, RegressionResult], inputs: pd.DataFrame, run_ids: Mapping[str, str] | None = None
) -> pd.DataFrame:
    """One row per input row and model: ``input_index``, ``model``, ``run_id``, then :func:`regression_table`'s."""
    return _stack({label: regression_table(r, inputs) for label, r in results.items()}, run_ids)
