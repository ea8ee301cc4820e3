"""The library's plotly figures: each draws one JSON document of a run (or the paper's curves).

The documents come from :mod:`lightning_bnn.evaluation` (pure computations, no plotting);
the figures are what :mod:`lightning_bnn.tracking` writes beside them as ``.html`` artifacts
(:mod:`lightning_bnn.tracking.artifacts`). Nothing here does I/O.

* :func:`posterior_figure`: ``posterior/summary.json`` (mu, sigma, log10 SNR per layer).
* :func:`reliability_figure`: ``evaluation/reliability.json`` (Guo et al. 2017).
* :func:`predictive_band_figure`: ``evaluation/predictive_band.json``.
* :func:`histogram_figure`: ``evaluation/ood_entropy.json`` (entropy in vs out of distribution).
* :func:`snr_figure`: ``pruning/snr.json`` (Blundell et al. 2015, Figure 6).
* :func:`band_figure`: the regression experiment's bands (Blundell et al. 2015, Figure 5).
"""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots


def _centres(edges: list[float]) -> list[float]:
    return [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])]


def _bar(hist: dict[str, list], name: str) -> go.Bar:
    edges = hist["edges"]
    widths = [b - a for a, b in zip(edges[:-1], edges[1:])]
    return go.Bar(x=_centres(edges), y=hist["counts"], width=widths, name=name, showlegend=False)


def posterior_figure(summary: dict[str, Any]) -> go.Figure:
    """Plotly figure of a posterior summary: one row per layer, columns mu / sigma / log10 SNR."""
    layers = summary.get("layers") or []
    rows = max(len(layers), 1)
    titles = [f"{layer['name']} {q}" for layer in layers for q in ("mu", "sigma", "log10 |mu|/sigma")]
    fig = make_subplots(rows=rows, cols=3, subplot_titles=titles or None)
    for r, layer in enumerate(layers, start=1):
        for c, key in enumerate(("mu", "sigma", "log10_snr"), start=1):
            fig.add_trace(_bar(layer[key], f"{layer['name']} {key}"), row=r, col=c)
    fig.update_layout(
        title="Posterior: mu, sigma and signal-to-noise ratio per layer" if layers else "No Bayesian layers",
        height=max(300, 260 * rows),
        bargap=0,
    )
    return fig


def reliability_figure(doc: dict[str, Any]) -> go.Figure:
    """Plotly reliability diagram: accuracy per confidence bin against the diagonal."""
    bins = doc["bins"]
    centres = [(b["lower"] + b["upper"]) / 2 for b in bins]
    fig = go.Figure()
    fig.add_trace(
        go.Bar(
            x=centres,
            y=[b["accuracy"] if b["accuracy"] is not None else 0.0 for b in bins],
            width=[b["upper"] - b["lower"] for b in bins],
            name="accuracy",
            customdata=[b["count"] for b in bins],
            hovertemplate="confidence bin %{x:.2f}<br>accuracy %{y:.3f}<br>n=%{customdata}<extra></extra>",
        )
    )
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfect calibration", line={"dash": "dash"}))
    fig.update_layout(
        title=f"Reliability on the test set (ECE {doc['ece']:.4f}, {doc['num_bins']} bins)",
        xaxis_title="confidence",
        yaxis_title="accuracy",
        xaxis_range=[0, 1],
        yaxis_range=[0, 1],
        bargap=0,
    )
    return fig


def risk_coverage_figure(doc: dict[str, Any]) -> go.Figure:
    """Plotly accuracy-coverage curve of selective prediction: refuse the most uncertain inputs first."""
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=[100 * (1 - c) for c in doc["coverage"]],
            y=doc["accuracy"],
            mode="lines",
            name="accuracy of the answered inputs",
            hovertemplate="refused %{x:.0f}%<br>accuracy %{y:.3f}<extra></extra>",
        )
    )
    fig.update_layout(
        title=f"Selective prediction on the test set (AURC {doc['aurc']:.4f})",
        xaxis_title="most uncertain inputs refused (%)",
        yaxis_title="accuracy",
    )
    return fig


def predictive_band_figure(doc: dict[str, Any]) -> go.Figure:
    """Plotly chart of the predictive mean, its 95% band and the test targets."""
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=doc["x"], y=doc["upper"], mode="lines", line={"width": 0}, showlegend=False))
    fig.add_trace(
        go.Scatter(x=doc["x"], y=doc["lower"], mode="lines", line={"width": 0}, fill="tonexty", name="95% band")
    )
    fig.add_trace(go.Scatter(x=doc["x"], y=doc["mean"], mode="lines", name="predictive mean"))
    fig.add_trace(go.Scatter(x=doc["x"], y=doc["target"], mode="markers", name="test targets", marker={"size": 4}))
    if doc.get("train_range"):
        low, high = doc["train_range"]
        fig.add_vrect(x0=low, x1=high, opacity=0.08, line_width=0, annotation_text="training range")
    fig.update_layout(title="Predictive band on the test inputs", xaxis_title=doc["feature"], yaxis_title="target")
    return fig


def histogram_figure(record: dict) -> go.Figure:
    """Plotly figure of the OOD entropy histograms (fraction of each set per bin), in vs each OOD set."""
    edges = record["edges"]
    centres = _centres(edges)
    width = edges[1] - edges[0]
    fig = go.Figure()
    sets = [(f"{record['in_distribution']['name']} (test)", record["in_distribution"])]
    sets += [
        (f"{name} (AUROC H {v['auroc_entropy']:.3f}, MI {v['auroc_mi']:.3f})", v) for name, v in record["ood"].items()
    ]
    for label, values in sets:
        total = max(1, values["count"])
        fig.add_bar(x=centres, y=[c / total for c in values["counts"]], width=width, name=label, opacity=0.55)
    fig.update_layout(
        barmode="overlay",
        title="Predictive entropy, in- vs out-of-distribution",
        xaxis_title=f"predictive entropy (nats; max log C = {record['max_entropy']:.3f})",
        yaxis_title="fraction of inputs",
        legend={"orientation": "h", "y": -0.25},
    )
    return fig


def snr_figure(record: dict) -> go.Figure:
    """Plotly figure of a pruning SNR record: density (left) and CDF (right), in dB."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=["Density", "CDF"])
    fig.add_scatter(
        x=_centres(record["density"]["edges"]),
        y=record["density"]["density"],
        mode="lines",
        name="density",
        row=1,
        col=1,
    )
    fig.add_scatter(x=record["cdf"]["db"], y=record["cdf"]["fraction"], mode="lines", name="CDF", row=1, col=2)
    fig.update_xaxes(title_text="signal-to-noise ratio (dB), 10 log10 |mu|/sigma")
    fig.update_layout(title=f"SNR of the {record['num_weights']:,} weights", showlegend=False)
    return fig


def band_figure(grid: torch.Tensor, bands: dict[str, dict], points: tuple[torch.Tensor, torch.Tensor]) -> go.Figure:
    """Plotly figure in the style of the paper's Figure 5: one panel per model, band and training points.

    Args:
        grid: inputs [N, 1] at which the bands were computed.
        bands: model label -> ``{"mean", "lower", "upper"}``, each [N].
        points: the training points (x [M], y [M]).
    """
    x = grid[:, 0].tolist()
    fig = make_subplots(rows=1, cols=len(bands), subplot_titles=list(bands), shared_yaxes=True)
    for col, b in enumerate(bands.values(), start=1):
        fig.add_scatter(x=x, y=b["upper"].tolist(), mode="lines", line={"width": 0}, showlegend=False, row=1, col=col)
        fig.add_scatter(
            x=x,
            y=b["lower"].tolist(),
            mode="lines",
            line={"width": 0},
            fill="tonexty",
            fillcolor="rgba(99,110,250,0.3)",
            name="95% band",
            showlegend=col == 1,
            row=1,
            col=col,
        )
        fig.add_scatter(x=x, y=b["mean"].tolist(), mode="lines", name="mean", showlegend=col == 1, row=1, col=col)
        fig.add_scatter(
            x=points[0].tolist(),
            y=points[1].tolist(),
            mode="markers",
            marker={"size": 3, "color": "black"},
            name="training data",
            showlegend=col == 1,
            row=1,
            col=col,
        )
    fig.update_layout(title="Regression curve (Blundell et al. 2015, Figure 5): training x in [0, 0.5]")
    fig.update_yaxes(range=[-1.0, 2.0])
    return fig
