r"""What a run's report artifacts contain: pure computations.

The functions here turn a model or sampled predictions into the JSON documents of
:mod:`lightning_bnn.tracking.artifacts` (histograms, reliability bins, predictive band).
They do no I/O and know nothing of MLflow or plotly; :mod:`lightning_bnn.tracking.figures`
draws the documents and :mod:`lightning_bnn.tracking.recorder` writes both into a run.

* Posterior summary: per Bayesian layer, histograms of the posterior means mu, the
  standard deviations sigma = softplus(rho), and the signal-to-noise ratio
  SNR = |mu| / sigma on a log10 scale (Blundell et al. 2015, section 5.1, use the
  SNR to prune weights).
* Reliability diagram (Guo et al. 2017): the top-class confidence
  c_i = max_k \bar p_{ik} is cut into ``num_bins`` equal-width bins on [0, 1]; bin b
  reports its mean confidence conf_b, accuracy acc_b and count n_b, and
  ECE = \sum_b (n_b / n) |acc_b - conf_b|.
* Predictive band (regression): mean and central 95% interval of the predictive
  mixture, sorted by the first input feature.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from lightning_bnn.nn.likelihoods import ClassificationSummary, RegressionSummary
from lightning_bnn.nn.posterior import GaussianPosterior

#: bins of every posterior histogram
HISTOGRAM_BINS = 40
#: equal-width confidence bins of the reliability diagram (as torchmetrics' ECE in metrics.py)
RELIABILITY_BINS = 15
#: largest number of training points written to data/train_sample.csv
TRAIN_SAMPLE_MAX = 2000


def histogram(values: np.ndarray | torch.Tensor, bins: int = HISTOGRAM_BINS) -> dict[str, list]:
    """Histogram ``{"edges": [n+1 floats], "counts": [n ints]}`` of the finite values.

    Equal-width bins spanning the finite values; a constant input gets one unit-wide
    range around its value, an input with no finite values gets empty counts.
    """
    if isinstance(values, torch.Tensor):
        values = values.detach().to("cpu", torch.float64).numpy()
    values = np.asarray(values, dtype=np.float64).ravel()
    values = values[np.isfinite(values)]
    if bins < 1:
        raise ValueError(f"bins must be >= 1, got {bins}")
    if values.size == 0:
        return {"edges": [0.0, 1.0], "counts": [0]}
    low, high = float(values.min()), float(values.max())
    if low == high:
        low, high = low - 0.5, high + 0.5
    counts, edges = np.histogram(values, bins=bins, range=(low, high))
    return {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]}


def posterior_layers(module: nn.Module) -> list[tuple[str, str, list[GaussianPosterior]]]:
    """(name, kind, posteriors) for each layer holding Gaussian posteriors, in module order."""
    out = []
    for name, layer in module.named_modules():
        posteriors = [p for p in layer.children() if isinstance(p, GaussianPosterior)]
        if posteriors:
            out.append((name, type(layer).__name__, posteriors))
    return out


def posterior_summary(module: nn.Module, bins: int = HISTOGRAM_BINS) -> dict[str, Any]:
    """The ``posterior/summary.json`` document of a model (empty ``layers`` for non-Bayesian ones).

    Per layer (weights and bias together): histograms of mu, sigma and log10(|mu| / sigma),
    plus the same log10 SNR histogram over all layers.
    """
    layers = []
    all_snr = []
    with torch.no_grad():
        for name, kind, posteriors in posterior_layers(module):
            mu = torch.cat([p.mu.detach().reshape(-1).cpu() for p in posteriors])
            sigma = torch.cat([p.sigma.detach().reshape(-1).cpu() for p in posteriors])
            snr = log10_snr(mu, sigma)
            all_snr.append(snr)
            layers.append(
                {
                    "name": name,
                    "kind": kind,
                    "num_weights": int(mu.numel()),
                    "mu": histogram(mu, bins),
                    "sigma": histogram(sigma, bins),
                    "log10_snr": histogram(snr, bins),
                }
            )
    everything = torch.cat(all_snr) if all_snr else torch.empty(0)
    return {"layers": layers, "all": {"log10_snr": histogram(everything, bins)}}


def log10_snr(mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """log10(|mu| / sigma), elementwise; zero means give -inf (dropped by :func:`histogram`)."""
    return torch.log10(mu.abs()) - torch.log10(sigma)


def reliability(probs: torch.Tensor, target: torch.Tensor, num_bins: int = RELIABILITY_BINS) -> dict[str, Any]:
    r"""The ``evaluation/reliability.json`` document of predictive probabilities.

    Args:
        probs: predictive class probabilities \bar p [B, C] (already averaged over samples).
        target: class indices [B].
        num_bins: equal-width confidence bins on [0, 1].

    Returns:
        ``{"num_bins", "ece", "bins": [{"lower", "upper", "confidence", "accuracy", "count"}]}``;
        an empty bin has ``confidence`` and ``accuracy`` None.

    One ECE convention with ``test/ece``: ``ece`` is torchmetrics'
    ``multiclass_calibration_error(n_bins=num_bins, norm="l1")`` of the same probabilities, whose
    bins are [lower, upper) (a confidence of exactly 1 is a bin of its own there; the diagram
    shows it in the last bin).
    """
    from torchmetrics.functional.classification import multiclass_calibration_error

    if probs.dim() != 2 or target.shape != probs.shape[:1]:
        raise ValueError(f"expected probs [B, C] and target [B], got {tuple(probs.shape)} and {tuple(target.shape)}")
    probs = probs.detach().to(torch.float32).clamp(0.0, 1.0)
    target = target.to(probs.device)
    ece = float(multiclass_calibration_error(probs, target, probs.shape[1], n_bins=num_bins, norm="l1"))
    confidence, predicted = probs.max(dim=1)
    correct = (predicted == target).to(torch.float64)
    confidence = confidence.to(torch.float64)
    edges = torch.linspace(0.0, 1.0, num_bins + 1, dtype=torch.float32).to(torch.float64)
    index = (torch.bucketize(confidence, edges, right=True) - 1).clamp(0, num_bins - 1)
    bins = []
    for b in range(num_bins):
        mask = index == b
        count = int(mask.sum())
        if count:
            conf = float(confidence[mask].mean())
            acc = float(correct[mask].mean())
        else:
            conf = acc = None
        bins.append(
            {
                "lower": float(edges[b]),
                "upper": float(edges[b + 1]),
                "confidence": conf,
                "accuracy": acc,
                "count": count,
            }
        )
    return {"num_bins": num_bins, "ece": ece, "bins": bins}


def predictive_band(
    x: torch.Tensor,
    target: torch.Tensor,
    mean: torch.Tensor,
    std: torch.Tensor,
    feature: str = "x",
    train_range: Sequence[float] | None = None,
    level: float = 0.95,
) -> dict[str, Any]:
    """The ``evaluation/predictive_band.json`` document: mean and central interval sorted by x.

    Args:
        x: inputs in original units [B, F] (the first feature is plotted) or [B].
        target: targets [B, D] or [B] (the first target is used).
        mean: predictive mean [B, D] or [B].
        std: total predictive std [B, D] or [B]; the band is mean -+ z std (z = 1.96 at 95%).
        feature: name of the plotted feature.
        train_range: [low, high] of the training inputs, if known.
        level: coverage of the central interval.
    """
    from lightning_bnn.nn.predictive import normal_quantile

    def first(t: torch.Tensor) -> torch.Tensor:
        t = t.detach().to("cpu", torch.float64)
        return t.reshape(t.shape[0], -1)[:, 0]

    xs, ys, ms, ss = first(x), first(target), first(mean), first(std)
    order = torch.argsort(xs, stable=True)
    z = normal_quantile(level)
    return {
        "feature": feature,
        "x": xs[order].tolist(),
        "target": ys[order].tolist(),
        "mean": ms[order].tolist(),
        "lower": (ms - z * ss)[order].tolist(),
        "upper": (ms + z * ss)[order].tolist(),
        "train_range": [float(v) for v in train_range] if train_range is not None else None,
    }


def original_inputs(x: torch.Tensor, preprocessing: Any) -> torch.Tensor:
    """Model-space inputs ``[B, ...]`` -> ``[B, F]`` float64, in original units where the preprocessing inverts them."""
    flat = x.detach().cpu().reshape(x.shape[0], -1).to(torch.float64)
    inverse = getattr(preprocessing, "inverse_features", None)
    return inverse(flat) if inverse is not None else flat


def risk_coverage_doc(uncertainty: torch.Tensor, correct: torch.Tensor, points: int = 101) -> dict[str, Any]:
    """The ``evaluation/risk_coverage.json`` document: accuracy when the most uncertain inputs are refused.

    Args:
        uncertainty: per-input score, higher = less sure (predictive entropy).
        correct: whether each input's prediction is right.
        points: coverage levels kept (evenly spaced from 1/N to 1), so the document stays small.

    Returns:
        ``{"coverage": [...], "accuracy": [...], "aurc", "accuracy_at": {"100": ..., "90": ..., ...}}``:
        accuracy of the answered inputs at each coverage, the area under the risk curve (as the
        ``aurc`` metric), and the accuracy when 0, 10, 20 and 50% of the inputs are refused.
    """
    from lightning_bnn.evaluation.metrics import risk_coverage

    coverage, risk = risk_coverage(uncertainty, correct.to(torch.float64))
    n = coverage.numel()
    keep = torch.unique(torch.linspace(0, n - 1, min(points, n)).round().long())
    at = {str(p): float(1.0 - risk[max(0, round(n * p / 100) - 1)]) for p in (100, 90, 80, 50)}
    return {
        "coverage": coverage[keep].tolist(),
        "accuracy": (1.0 - risk[keep]).tolist(),
        "aurc": float(risk.mean()),
        "accuracy_at": at,
    }


@functools.singledispatch
def test_report(summary: Any, x: torch.Tensor, target: torch.Tensor, preprocessing: Any) -> list[tuple[str, dict]]:
    """The test-set reports of a summary of sampled predictions: ``[(name, document), ...]``.

    Dispatched on the summary's type (:mod:`lightning_bnn.nn.likelihoods`): the reliability
    diagram and the risk-coverage curve of a classifier, the predictive band of a regression model.
    """
    raise TypeError(f"no test report for {type(summary).__name__}")


@test_report.register
def _(summary: ClassificationSummary, x: torch.Tensor, target: torch.Tensor, preprocessing: Any) -> list:
    target = target.cpu()
    return [
        ("reliability", reliability(summary.probs.detach().cpu(), target)),
        ("risk_coverage", risk_coverage_doc(summary.entropy.detach().cpu(), summary.predicted.cpu() == target)),
    ]


@test_report.register
def _(summary: RegressionSummary, x: torch.Tensor, target: torch.Tensor, preprocessing: Any) -> list:
    y = preprocessing.inverse_target(target.detach().cpu().reshape(target.shape[0], -1).to(torch.float64))
    features = list(getattr(preprocessing, "feature_names", ())) or ["x"]
    doc = predictive_band(
        original_inputs(x, preprocessing),
        y,
        summary.mean,
        summary.std,
        feature=features[0],
        train_range=getattr(preprocessing, "train_range", None),
        level=summary.level,
    )
    return [("predictive_band", doc)]
