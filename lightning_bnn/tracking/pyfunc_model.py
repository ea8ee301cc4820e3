"""MLflow pyfunc wrapper of a lightning_bnn model, logged as a *model from code*.

:func:`lightning_bnn.tracking.recorder.log_pyfunc_model` passes this file's **path** as
``python_model``: MLflow copies the file into the model folder and runs it on load,
so nothing is pickled (a ``PythonModel`` passed as an object would be serialised with
CloudPickle). The weights travel as the artifact ``model`` (``weights.safetensors`` +
``model.json``, see :mod:`lightning_bnn.tracking.serialization`), and the package's source as
the model's ``code/`` folder, so the serving environment needs only the pinned
requirements, not an installed ``lightning_bnn``.

Input: a float array ``[B, *input_shape]`` (the signature is a tensor spec; for
tabular data a DataFrame with one column per feature also fits it). Images are model
inputs as training saw them (pixels scaled to [0, 1]); tabular features are raw
values, standardised here with the training statistics.

Output: a DataFrame, one row per input, of sampled prediction statistics over
``num_samples`` Monte Carlo draws (params ``num_samples``, default the model's
``num_samples_eval``, and ``seed``, default 0, so equal inputs give equal outputs):

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
        return predict_frame(self.module, model_input, params)


def predict_frame(module: Any, model_input: Any, params: dict[str, Any] | None = None) -> Any:
    """Sampled prediction statistics of ``module`` for ``model_input`` as a DataFrame (see the module docstring)."""
    import pandas as pd
    import torch

    from lightning_bnn.nn.predictive import central_interval, mutual_information, predictive_entropy, regression_moments

    params = dict(params or {})
    num_samples = int(params.get("num_samples") or module.hparams.num_samples_eval)
    seed = int(params.get("seed", 0) if params.get("seed") is not None else 0)
    x = model_inputs(module, model_input)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        predictive = module.sample_predictions(x, num_samples)
    pre = module.hparams.preprocessing or {}
    columns: dict[str, np.ndarray] = {}
    if module.hparams.task == "classification":
        probs = predictive
        mean = probs.mean(dim=0)
        names = pre.get("class_names") or [str(i) for i in range(mean.shape[1])]
        for i, name in enumerate(names):
            columns[f"prob_{name}"] = mean[:, i].numpy()
        columns["predicted"] = np.asarray([names[i] for i in mean.argmax(dim=1).tolist()], dtype=object)
        columns["entropy"] = predictive_entropy(probs).numpy()
        columns["mutual_information"] = mutual_information(probs).numpy()
    else:
        moments = regression_moments(*predictive)
        lower, upper = central_interval(moments["mean"], moments["std"])
        targets = pre.get("target_names") or [f"y{i}" for i in range(moments["mean"].shape[1])]
        for i, name in enumerate(targets):
            for key, value in (*moments.items(), ("lower", lower), ("upper", upper)):
                columns[f"{name}_{key}"] = value[:, i].numpy()
    return pd.DataFrame(columns)


def model_inputs(module: Any, model_input: Any) -> Any:
    """Model-space float tensor [B, *input_shape] from an array or DataFrame (tabular features standardised)."""
    import pandas as pd
    import torch

    shape = tuple(module.hparams.input_shape)
    pre = module.hparams.preprocessing or {}
    if isinstance(model_input, pd.DataFrame):
        names = pre.get("feature_names")
        if names and set(names) <= set(model_input.columns):
            model_input = model_input[names]
        model_input = model_input.to_numpy()
    array = np.asarray(model_input, dtype=np.float32)
    size = int(np.prod(shape))
    if array.ndim == 0 or array.size % size or array.shape[1:] not in (shape, (size,)):
        raise ValueError(f"expected input of shape [B, {', '.join(map(str, shape))}], got {list(array.shape)}")
    array = array.reshape(-1, *shape)
    if pre.get("kind") == "tabular" and "feature_mean" in pre:
        mean = np.asarray(pre["feature_mean"], dtype=np.float32)
        std = np.asarray(pre["feature_std"], dtype=np.float32)
        array = (array - mean) / std
    return torch.from_numpy(np.ascontiguousarray(array))


mlflow.models.set_model(BNNPyfuncModel())
