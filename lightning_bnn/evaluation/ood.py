r"""Out-of-distribution detection after test: does the uncertainty rise on inputs unlike the data?

:func:`evaluate_ood` draws S predictive samples for the
in-distribution test images and for one or more out-of-distribution (OOD) sets, scores
each input with

* the predictive entropy :math:`H[\bar p] = -\sum_c \bar p_c \log \bar p_c`,
  :math:`\bar p = \frac1S \sum_s p_s` (total uncertainty), and
* the mutual information :math:`I[y; w \mid x] = H[\bar p] - \frac1S \sum_s H[p_s]`
  (epistemic part; Depeweg et al. 2018, Gal 2016),

and computes the area under the ROC curve of telling OOD (positive) from in-distribution
inputs by each score (torchmetrics ``BinaryAUROC``, exact thresholds). An AUROC of 0.5
is chance; 1.0 means every OOD input scores higher than every test input. Both scores
are divided by :math:`\log C` (their maximum) so that they lie in [0, 1].

Default OOD sets, none downloaded (chosen by the data set's ``name``):

* ``fashion_mnist``: ``digits`` (scikit-learn's 8x8 digits upscaled to 20x20 and padded
  to 28x28, as MNIST centres its digits), ``noise`` (uniform pixels) and ``rotated`` (the test
  images turned by 90 degrees);
* ``digits`` and ``mnist``: ``noise``, ``inverted`` (max pixel - pixel) and ``rotated``
  (the test images turned by 90 degrees);
* any other image data: ``noise``; tabular data and regression: none (skipped).

Metrics (per OOD set NAME): ``test/ood_auroc_entropy_NAME``,
``test/ood_auroc_mi_NAME``, ``test/ood_mean_entropy_NAME``, ``test/ood_mean_mi_NAME``; and
the histogram record of :func:`entropy_histograms`. Everything here is computation: after
``trainer.test``, :class:`lightning_bnn.tracking.ood_callback.OODCallback` logs the metrics
and the artifacts ``evaluation/ood_entropy.json`` and ``evaluation/ood_entropy.html``
(drawn by :func:`lightning_bnn.tracking.figures.histogram_figure`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics.classification import BinaryAUROC

#: default cap on the in-distribution and on each OOD set's size
MAX_EXAMPLES = 2000
HISTOGRAM_BINS = 30


def digits_28x28(scale: float = 1.0) -> torch.Tensor:
    """scikit-learn's 1,797 8x8 digits as MNIST-like images [N, 1, 28, 28] with pixels in [0, scale].

    Each image (pixels / 16) is upscaled bilinearly to 20x20 and padded by 4 pixels on
    each side, the way MNIST fits its digits into a 20x20 box centred in 28x28.
    """
    from sklearn.datasets import load_digits

    images = torch.as_tensor(load_digits().images / 16.0, dtype=torch.float32).unsqueeze(1)
    up = F.interpolate(images, size=(20, 20), mode="bilinear", align_corners=False).clamp(0.0, 1.0)
    return F.pad(up, (4, 4, 4, 4)) * scale


def uniform_noise(n: int, shape: tuple[int, ...], scale: float, generator: torch.Generator) -> torch.Tensor:
    """N inputs of ``shape`` with independent pixels uniform in [0, scale]."""
    return torch.rand((n, *shape), generator=generator) * scale


def default_ood_sets(
    dataset: str,
    x_test: torch.Tensor,
    scale: float = 1.0,
    max_examples: int = MAX_EXAMPLES,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """The default OOD sets for a data set (see the module docstring), in model space.

    Args:
        dataset: the data module's ``name`` (``fashion_mnist``, ``digits``, ``mnist``, ...).
        x_test: in-distribution test inputs [N, *input_shape].
        scale: the model-space value of a white pixel (``ImagePreprocessing.scale``).
        max_examples: at most this many inputs per set.
        seed: seed of the noise.

    Returns:
        name -> inputs [n, *input_shape]; empty for non-image inputs.
    """
    shape = tuple(x_test.shape[1:])
    if len(shape) != 3:
        return {}
    generator = torch.Generator().manual_seed(seed)
    n = min(len(x_test), max_examples)
    sets = {"noise": uniform_noise(n, shape, scale, generator)}
    if dataset == "fashion_mnist" and shape == (1, 28, 28):
        sets = {"digits": digits_28x28(scale)[:max_examples], **sets}
        sets["rotated"] = torch.rot90(x_test[:n], k=1, dims=(-2, -1))
    elif dataset in ("digits", "mnist"):
        sets["inverted"] = scale - x_test[:n]
        sets["rotated"] = torch.rot90(x_test[:n], k=1, dims=(-2, -1))
    return sets


@torch.no_grad()
def uncertainty_scores(model: Any, x: torch.Tensor, num_samples: int, batch_size: int = 500) -> dict[str, torch.Tensor]:
    """Predictive entropy and mutual information (nats) of each input, each [N].

    Args:
        model: a classification :class:`~lightning_bnn.training.module.BNNModule`.
        x: inputs [N, *input_shape] in model space.
        num_samples: predictive samples S per input.
        batch_size: inputs per batched sampling call.
    """
    device = next(model.parameters()).device
    entropy, mi = [], []
    for start in range(0, len(x), batch_size):
        summary = model.summarise(model.sample_predictions(x[start : start + batch_size].to(device), num_samples))
        entropy.append(summary.entropy.cpu())
        mi.append(summary.mutual_information.cpu())
    return {"entropy": torch.cat(entropy), "mi": torch.cat(mi)}


def ood_auroc(in_scores: torch.Tensor, out_scores: torch.Tensor, max_score: float = 1.0) -> float:
    """AUROC of separating OOD (label 1) from in-distribution (label 0) inputs by a score.

    Equals P(score_out > score_in) + P(tie) / 2 over random pairs (Mann-Whitney U),
    computed by torchmetrics ``BinaryAUROC(thresholds=None)``. Scores are divided by
    ``max_score`` so that torchmetrics takes them as probabilities (no sigmoid).
    """
    preds = (torch.cat([in_scores, out_scores]) / max_score).clamp(0.0, 1.0)
    target = torch.cat([torch.zeros(len(in_scores), dtype=torch.long), torch.ones(len(out_scores), dtype=torch.long)])
    return float(BinaryAUROC(thresholds=None)(preds, target))


def _hist(values: torch.Tensor, edges: torch.Tensor) -> list[int]:
    counts = torch.histc(
        values.clamp(float(edges[0]), float(edges[-1])), bins=len(edges) - 1, min=float(edges[0]), max=float(edges[-1])
    )
    return [int(c) for c in counts]


def entropy_histograms(
    in_name: str,
    in_scores: dict[str, torch.Tensor],
    out_scores: dict[str, dict[str, torch.Tensor]],
    num_classes: int,
    bins: int = HISTOGRAM_BINS,
) -> dict:
    """The ``evaluation/ood_entropy.json`` record: entropy histograms in vs out, and the AUROCs.

    Schema: ``{"max_entropy": log C, "edges": [float] (bins+1), "in_distribution": {"name": str,
    "count": int, "counts": [int], "mean_entropy": float, "mean_mi": float}, "ood": {NAME: {"count",
    "counts", "mean_entropy", "mean_mi", "auroc_entropy": float, "auroc_mi": float}}}``.
    """
    max_entropy = math.log(num_classes)
    edges = torch.linspace(0.0, max_entropy, bins + 1)

    def summary(scores: dict[str, torch.Tensor]) -> dict:
        return {
            "count": len(scores["entropy"]),
            "counts": _hist(scores["entropy"], edges),
            "mean_entropy": float(scores["entropy"].mean()),
            "mean_mi": float(scores["mi"].mean()),
        }

    record = {
        "max_entropy": max_entropy,
        "edges": [float(e) for e in edges],
        "in_distribution": {"name": in_name, **summary(in_scores)},
        "ood": {},
    }
    for name, scores in out_scores.items():
        record["ood"][name] = {
            **summary(scores),
            "auroc_entropy": ood_auroc(in_scores["entropy"], scores["entropy"], max_entropy),
            "auroc_mi": ood_auroc(in_scores["mi"], scores["mi"], max_entropy),
        }
    return record


def evaluate_ood(
    model: Any,
    dataset: str,
    x_test: torch.Tensor,
    num_samples: int | None = None,
    max_examples: int = MAX_EXAMPLES,
    seed: int = 0,
    ood_sets: dict[str, torch.Tensor] | None = None,
) -> tuple[dict[str, float], dict | None]:
    """Score the test set and the OOD sets; return (metrics, histogram record).

    Args:
        model: a classification :class:`~lightning_bnn.training.module.BNNModule`.
        dataset: the data set's name, choosing the default OOD sets.
        x_test: in-distribution test inputs (model space).
        num_samples: predictive samples (default: the model's ``num_samples_eval``).
        max_examples: at most this many inputs per set.
        seed: seed of the noise set.
        ood_sets: name -> inputs, instead of the defaults.

    Returns:
        ``({"test/ood_auroc_entropy_NAME": ..., ...}, record)``; ``({}, None)`` when
        the model is not a classifier or there is no OOD set for its data.
    """
    hp = model.hparams
    if "ood_entropy" not in model.likelihood.run_artifacts:  # entropy scores need class probabilities
        return {}, None
    scale = float(getattr(model.preprocessing, "scale", 1.0))
    sets = ood_sets if ood_sets is not None else default_ood_sets(dataset, x_test, scale, max_examples, seed)
    if not sets:
        return {}, None
    s = num_samples or int(hp.get("num_samples_eval", 10))
    was_training = model.training
    model.eval()
    try:
        in_scores = uncertainty_scores(model, x_test[:max_examples], s)
        out_scores = {name: uncertainty_scores(model, x, s) for name, x in sets.items()}
    finally:
        model.train(was_training)
    record = entropy_histograms(dataset, in_scores, out_scores, int(hp.get("num_outputs", 10)))
    metrics: dict[str, float] = {}
    for name, values in record["ood"].items():
        metrics[f"test/ood_auroc_entropy_{name}"] = values["auroc_entropy"]
        metrics[f"test/ood_auroc_mi_{name}"] = values["auroc_mi"]
        metrics[f"test/ood_mean_entropy_{name}"] = values["mean_entropy"]
        metrics[f"test/ood_mean_mi_{name}"] = values["mean_mi"]
    return metrics, record
