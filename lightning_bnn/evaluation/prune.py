r"""Pruning by signal-to-noise ratio (Blundell et al. 2015, section 5.1, Table 2 and Figure 6).

::

    python -m lightning_bnn prune RUN_ID --fractions 0 0.5 0.75 0.95 0.98 [--tracking-uri URI] [--save-dir DIR]

Every weight of a Bayes-by-Backprop network has a posterior N(mu, sigma^2); its
signal-to-noise ratio is

.. math:: \mathrm{SNR}(w) = \frac{|\mu|}{\sigma}, \qquad \sigma = \log(1 + e^{\rho}).

The weights are ranked by SNR across **all** Bayesian layers together (one global
threshold, as in the paper), and for each fraction f the ``round(f * N)`` weights with
the lowest SNR are removed: their mean is set to 0 (and their sigma to ~0, so that a
sampled network drops them too). The pruned network is evaluated with the posterior
mean weights (``sample_predictions(x, 1, estimator="mean")``) on the
run's own test set, rebuilt from its ``config.yaml``: test error for classification,
RMSE for regression. Only the weight matrices and conv kernels are pruned; biases
(and a learned noise std) are kept, like the paper's weight counts.

The maths is here; :mod:`lightning_bnn.tracking.pruning` loads the run and logs the
results, and :mod:`lightning_bnn.cli.prune` is the command. The results go to a child run
of RUN_ID (tag ``mlflow.parentRunId``) in its experiment:

* metrics ``prune/test_error`` (or ``prune/test_rmse``) and ``prune/weights_left`` with
  step = the fraction removed in per mille (0, 500, 750, 950, 980);
* ``pruning/table.json`` (MLflow table: fraction, weights_left, test_error, file_bytes)
  and ``pruning/table.md``;
* ``pruning/snr.json`` (the SNR density and CDF in dB, 10 log10 SNR, as the paper's
  Figure 6; schema in :func:`snr_record`) and ``pruning/snr.html`` (plotly).

**Pruned weights file** (``--save-dir``): ``pruned-<percent>.safetensors`` beside the
run's ``model.json``. For each pruned weight tensor ``K`` (e.g. ``net.layers.1.weight``)
it holds only the surviving entries: ``K.indices`` (int32 positions in the flattened
tensor, ascending), ``K.mu`` and ``K.rho`` (their posterior parameters); every other
tensor of the state dict is stored whole. The metadata holds the format name, the
fraction and the dense shapes. At 12 bytes per surviving weight instead of 8 per weight,
the file is smaller once more than a third is removed (about 13x at 95%).
:func:`load_pruned` rebuilds the dense module (removed entries: mu = 0, rho =
:data:`PRUNED_RHO`). The table reports each file's size whether or not it is kept.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from lightning_bnn.nn.layers import BayesianModule
from lightning_bnn.nn.likelihoods import ClassificationSummary, RegressionSummary

PRUNED_FORMAT = "lightning_bnn.pruned"
PRUNED_FORMAT_VERSION = "1"
#: rho of a removed weight: sigma = softplus(-30) ~ 1e-13, i.e. effectively 0
PRUNED_RHO = -30.0
SNR_BINS = 100


class PruneError(ValueError):
    """A run cannot be pruned (no Bayesian weights, bad fraction, unknown data)."""


# -- SNR and masks (pure) -------------------------------------------------------------------------------
def weight_snr(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """SNR |mu| / sigma of every Bayesian weight tensor, keyed by its state-dict prefix.

    Keys look like ``net.layers.1.weight`` (the posterior's ``mu``/``rho`` are
    ``<key>.mu``/``<key>.rho`` in the state dict). Biases are not included.
    """
    out = {}
    for name, module in model.named_modules():
        if isinstance(module, BayesianModule) and hasattr(module, "weight"):
            posterior = module.weight
            with torch.no_grad():
                out[f"{name}.weight" if name else "weight"] = posterior.mu.abs() / posterior.sigma
    return out


def check_fraction(fraction: object) -> float:
    """Validate a fraction to remove, in [0, 1]."""
    ok = isinstance(fraction, (int, float)) and not isinstance(fraction, bool) and math.isfinite(fraction)
    if not ok or not 0.0 <= fraction <= 1.0:
        raise PruneError(f"fractions must lie in [0, 1], got {fraction!r}")
    return float(fraction)


def prune_masks(snr: dict[str, torch.Tensor], fraction: float) -> dict[str, torch.Tensor]:
    """Boolean keep-masks removing the ``round(fraction * N)`` lowest-SNR weights of all tensors together.

    Ties are broken by position (stable sort), so exactly ``N - round(fraction * N)``
    weights are kept.
    """
    fraction = check_fraction(fraction)
    if not snr:
        raise PruneError("no Bayesian weights to prune")
    flat = torch.cat([v.reshape(-1) for v in snr.values()])
    n_remove = int(round(fraction * flat.numel()))
    keep = torch.ones(flat.numel(), dtype=torch.bool)
    if n_remove:
        keep[torch.argsort(flat, stable=True)[:n_remove]] = False
    masks, start = {}, 0
    for key, value in snr.items():
        masks[key] = keep[start : start + value.numel()].reshape(value.shape)
        start += value.numel()
    return masks


@torch.no_grad()
def apply_masks(model: torch.nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Remove the masked-out weights in place: mu = 0 and rho = :data:`PRUNED_RHO` (sigma ~ 0)."""
    params = dict(model.named_parameters())
    for key, keep in masks.items():
        mu, rho = params[f"{key}.mu"], params[f"{key}.rho"]
        mu.masked_fill_(~keep.to(mu.device), 0.0)
        rho.masked_fill_(~keep.to(rho.device), PRUNED_RHO)


# -- evaluation ----------------------------------------------------------------------------------------------
@functools.singledispatch
def point_errors(summary: Any, target: torch.Tensor) -> tuple[float, int]:
    """(sum of errors, count) of a point prediction: wrong classes, or squared errors of the mean."""
    raise TypeError(f"no point error for {type(summary).__name__}")


@point_errors.register
def _(summary: ClassificationSummary, target: torch.Tensor) -> tuple[float, int]:
    return float((summary.predicted != target).sum()), int(target.shape[0])


@point_errors.register
def _(summary: RegressionSummary, target: torch.Tensor) -> tuple[float, int]:
    target = target.reshape(target.shape[0], -1)
    return float((summary.mean - target).square().sum()), int(target.numel())


#: summary type -> (metric name, its value from the summed errors and their count)
POINT_METRICS = {
    ClassificationSummary: ("test_error", lambda total, n: total / max(n, 1)),
    RegressionSummary: ("test_rmse", lambda total, n: math.sqrt(total / max(n, 1))),
}


@torch.no_grad()
def evaluate_mean_network(model, loader) -> dict[str, float]:
    """Test error (classification) or RMSE (regression) of the posterior-mean network over ``loader``."""
    model.eval()
    total, count = 0.0, 0
    for x, y in loader:
        summary = model.summarise(model.sample_predictions(x, 1, estimator="mean"))
        errors, n = point_errors(summary, model.likelihood.target_in_original_units(y, model.preprocessing))
        total, count = total + errors, count + n
    name, value = POINT_METRICS[model.likelihood.summary_type]
    return {name: value(total, count)}


# -- SNR density and CDF -------------------------------------------------------------------------------------
def snr_record(snr: dict[str, torch.Tensor], bins: int = SNR_BINS) -> dict:
    """Density and CDF of the SNR in dB (10 log10 SNR) over all weights, as the paper's Figure 6.

    Schema: ``{"unit": "dB", "num_weights": int, "density": {"edges": [float] (bins+1),
    "density": [float] (bins; integrates to 1)}, "cdf": {"db": [float], "fraction": [float]}}``
    (the CDF at up to 512 evenly spaced quantiles).
    """
    flat = torch.cat([v.reshape(-1) for v in snr.values()]).double()
    db = 10.0 * torch.log10(flat.clamp_min(1e-30))
    low, high = float(db.min()), float(db.max())
    if high <= low:
        high = low + 1.0
    counts = torch.histc(db, bins=bins, min=low, max=high)
    width = (high - low) / bins
    edges = torch.linspace(low, high, bins + 1)
    ordered = torch.sort(db).values
    idx = torch.linspace(0, len(ordered) - 1, min(512, len(ordered))).round().long()
    return {
        "unit": "dB",
        "num_weights": len(flat),
        "density": {"edges": edges.tolist(), "density": (counts / (counts.sum() * width)).tolist()},
        "cdf": {"db": ordered[idx].tolist(), "fraction": ((idx + 1).double() / len(ordered)).tolist()},
    }


# -- pruned weights file --------------------------------------------------------------------------------------
def save_pruned(module: torch.nn.Module, masks: dict[str, torch.Tensor], path: str | Path, fraction: float) -> int:
    """Write the surviving weights as a sparse safetensors file (format in the module docstring); return bytes."""
    state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    tensors, shapes = {}, {}
    for key, keep in masks.items():
        mu, rho = state.pop(f"{key}.mu"), state.pop(f"{key}.rho")
        flat_keep = keep.reshape(-1).cpu()
        tensors[f"{key}.indices"] = torch.nonzero(flat_keep).reshape(-1).to(torch.int32)
        tensors[f"{key}.mu"] = mu.reshape(-1)[flat_keep].contiguous()
        tensors[f"{key}.rho"] = rho.reshape(-1)[flat_keep].contiguous()
        shapes[key] = list(mu.shape)
    tensors.update({k: v.contiguous() for k, v in state.items()})
    metadata = {
        "format": PRUNED_FORMAT,
        "format_version": PRUNED_FORMAT_VERSION,
        "fraction": repr(float(fraction)),
        "shapes": json.dumps(shapes),
    }
    save_file(tensors, str(path), metadata=metadata)
    return Path(path).stat().st_size


def load_pruned(path: str | Path, module: torch.nn.Module) -> torch.nn.Module:
    """Fill ``module`` (built from the run's ``model.json``) from a pruned file; removed weights get mu = 0.

    Raises:
        PruneError: if the file is not a pruned-weights file or does not fit the module.
    """
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    if metadata.get("format") != PRUNED_FORMAT:
        raise PruneError(f"{Path(path).name} is not a {PRUNED_FORMAT} file (format {metadata.get('format')!r})")
    shapes = json.loads(metadata["shapes"])
    tensors = load_file(str(path))
    state = {}
    for key, shape in shapes.items():
        numel = math.prod(shape)
        indices = tensors.pop(f"{key}.indices").long()
        mu = torch.zeros(numel)
        rho = torch.full((numel,), PRUNED_RHO)
        mu[indices] = tensors.pop(f"{key}.mu")
        rho[indices] = tensors.pop(f"{key}.rho")
        state[f"{key}.mu"], state[f"{key}.rho"] = mu.reshape(shape), rho.reshape(shape)
    state.update(tensors)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise PruneError(f"{Path(path).name} does not fit the model: {err}") from err
    return module.eval()


# -- pruning a model at several fractions --------------------------------------------------------------------
def prune_and_evaluate(model, loader, fractions: Sequence[float], save_dir: Path) -> tuple[list[dict], dict]:
    """Prune ``model`` at each fraction, evaluate its mean network on ``loader`` and write each pruned file.

    The model is restored to its unpruned weights afterwards.

    Args:
        model: a Bayes-by-Backprop :class:`~lightning_bnn.training.module.BNNModule`.
        loader: the test batches.
        fractions: fractions of the weights to remove, each in [0, 1].
        save_dir: folder of the ``pruned-<percent>.safetensors`` files.

    Returns:
        ``(rows, snr)``: rows ``{"fraction", "weights_left", "test_error" | "test_rmse", "file_bytes"}``
        and the weights' SNR (:func:`weight_snr`).

    Raises:
        PruneError: for a bad fraction or a model without Bayesian weights.
    """
    fractions = [check_fraction(f) for f in fractions]
    snr = weight_snr(model)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    rows = []
    try:
        for fraction in fractions:
            model.load_state_dict(original)
            masks = prune_masks(snr, fraction)
            apply_masks(model, masks)
            left = int(sum(int(m.sum()) for m in masks.values()))
            size = save_pruned(model, masks, Path(save_dir) / f"pruned-{fraction * 100:g}.safetensors", fraction)
            rows.append(
                {"fraction": fraction, "weights_left": left, **evaluate_mean_network(model, loader), "file_bytes": size}
            )
    finally:
        model.load_state_dict(original)
    return rows, snr


def point_metric(rows: list[dict]) -> str:
    """The rows' point metric: ``test_error`` (classification) or ``test_rmse`` (regression)."""
    return "test_error" if "test_error" in rows[0] else "test_rmse"


def table_markdown(rows: list[dict]) -> str:
    """The pruning table as markdown (pandas ``DataFrame.to_markdown``)."""
    import pandas as pd

    metric = point_metric(rows)
    head = "test error %" if metric == "test_error" else "test RMSE"
    scale = 100.0 if metric == "test_error" else 1.0
    frame = pd.DataFrame(
        {
            "removed": [f"{r['fraction'] * 100:g}%" for r in rows],
            "weights left": [r["weights_left"] for r in rows],
            head: [f"{r[metric] * scale:.4g}" for r in rows],
            "file bytes": [r["file_bytes"] for r in rows],
        }
    )
    return frame.to_markdown(index=False, disable_numparse=True, colalign=("right",) * len(frame.columns))
