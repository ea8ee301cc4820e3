"""MLflow pyfunc wrapper of a lightning_bnn model, logged as a *model from code*.

:func:`lightning_bnn.tracking.recorder.log_pyfunc_model` passes this file's **path** as
``python_model``: MLflow copies the file into the model folder and runs it on load,
so nothing is pickled (a ``PythonModel`` passed as an object would be serialised with
CloudPickle). The weights travel as the artifact ``model`` (``weights.safetensors`` +
``model.json``, see :mod:`lightning_bnn.tracking.serialization`), and the package's source as
the model's ``code/`` folder, so the serving environment needs only the pinned
requirements, not an installed ``lightning_bnn``. A model of the user's own network carries
that network's top-level module or package in ``code/`` as well; loading it imports the
class only where ``LIGHTNING_BNN_TRUSTED_MODULES`` names its package (see
:mod:`lightning_bnn.nn.custom`), as :func:`lightning_bnn.load_model` does.

Input: images as a float array ``[B, *input_shape]`` (the signature is a tensor spec), model
inputs as training saw them (pixels scaled to [0, 1]); tabular data as a DataFrame with one
column per feature (the signature names the columns, so a served ``dataframe_split`` request is
matched by name), raw values standardised here with the training statistics.

Output: a DataFrame, one row per input, of sampled prediction statistics over
``num_samples`` Monte Carlo draws (params ``num_samples``, 1 to
:data:`~lightning_bnn.nn.predictive.MAX_SAMPLES`, default the model's ``num_samples_eval``, and
``seed``, default 0, so equal inputs give equal outputs; a bad value is a ``ValueError``, which a
served model answers with HTTP 400 and the message):

* classification: ``prob_<class>`` (predictive probabilities), ``predicted``,
  ``entropy`` (predictive entropy) and ``mutual_information`` (epistemic part), in nats;
* regression, per target ``<t>``: ``<t>_mean``, ``<t>_std`` (total),
  ``<t>_aleatoric_std``, ``<t>_epistemic_std``, ``<t>_lower``/``<t>_upper`` (95% interval).
"""

from __future__ import annotations

from typing import Any

import mlflow
import numpy as np

#: name of the weights artifact inside the MLflow model
MODEL_ARTIFACT = "model"


class BNNPyfuncModel(mlflow.pyfunc.PythonModel):
    """Sampled predictions of a lightning_bnn model as a DataFrame."""

    def load_context(self, context: Any) -> None:
        from lightning_bnn.tracking.serialization import load_model_dir

        self.module = load_model_dir(context.artifacts[MODEL_ARTIFACT])

    def predict(self, context: Any, model_input: np.ndarray, params: dict[str, Any] | None = None) -> Any:
        try:
            return predict_frame(self.module, model_input, params)
        except ValueError as err:  # a bad request: the server answers 400 with this message, not 500
            raise mlflow.exceptions.MlflowException.invalid_parameter_value(str(err)) from None


def sampling_params(module: Any, params: dict[str, Any] | None) -> tuple[int, int]:
    """``(num_samples, seed)`` of a request: defaults ``num_samples_eval`` and 0; bad values raise ValueError."""
    from lightning_bnn.nn.predictive import check_num_samples

    params = dict(params or {})
    num_samples = params.get("num_samples")
    num_samples = int(module.hparams.num_samples_eval) if num_samples is None else num_samples
    if isinstance(num_samples, (np.integer, float)) and float(num_samples).is_integer():
        num_samples = int(num_samples)
    check_num_samples(num_samples, "params.num_samples")
    seed = params.get("seed")
    seed = 0 if seed is None else seed
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"params.seed must be a non-negative integer, got {seed!r}")
    return num_samples, int(seed)


def predict_frame(module: Any, model_input: Any, params: dict[str, Any] | None = None) -> Any:
    """Sampled prediction statistics of ``module`` for ``model_input`` as a DataFrame (see the module docstring)."""
    import pandas as pd
    import torch

    num_samples, seed = sampling_params(module, params)
    x = model_inputs(module, model_input)
    generator = torch.Generator().manual_seed(seed)
    summary = module.summarise(module.sample_predictions(x, num_samples, generator=generator))
    return pd.DataFrame(summary.columns(module.output_names()))


def model_inputs(module: Any, model_input: Any) -> Any:
    """Model-space float tensor [B, *input_shape] from an array or DataFrame (tabular features standardised)."""
    try:
        return module.preprocessing.serving_input(model_input, module.hparams.input_shape)
    except ValueError as err:  # PreprocessingError: the request does not fit the model
        raise ValueError(str(err)) from None


mlflow.models.set_model(BNNPyfuncModel())
