"""DataFrames, artifacts and prediction results -> plotly Figures (no Streamlit calls).

Each function returns a ``plotly.graph_objects.Figure``; trace counts are part of the
contract the tests check (documented per function).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from lightning_bnn.tracking.artifacts import PREDICTIVE_BAND, RELIABILITY, RISK_COVERAGE

if TYPE_CHECKING:  # the results need torch; the charts of runs and curves must not wait for it
    from dashboard.predictions import ClassificationResult, RegressionResult

TEMPLATE = "plotly_white"
BNN_COLOUR = "#1f77b4"
POINT_COLOUR = "#d62728"
DATA_COLOUR = "#444444"
ALEATORIC_COLOUR = "#9467bd"
EPISTEMIC_COLOUR = "#ff7f0e"
#: one colour per compared model, in the order they were chosen
MODEL_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f")


def _layout(fig: go.Figure, title: str, height: int = 380) -> go.Figure:
    fig.update_layout(
        template=TEMPLATE,
        title=title,
        height=height,
        margin={"l": 40, "r": 20, "t": 50, "b": 40},
        legend={"orientation": "h", "yanchor": "top", "y": -0.25, "x": 0.0},
    )
    return fig


def learning_curves(history: pd.DataFrame, metric: str, x: str = "step") -> go.Figure:
    """One line per run of ``metric`` against ``x`` (``step`` or ``epoch``): one trace per run."""
    fig = go.Figure()
    for (run_id, name), group in history.groupby(["run_id", "run_name"], sort=False):
        xs = group[x] if x in group and group[x].notna().all() else group["step"]
        fig.add_trace(
            go.Scatter(x=xs, y=group["value"], mode="lines+markers", name=f"{name} ({str(run_id)[:6]})", marker_size=4)
        )
    fig.update_xaxes(title=x)
    fig.update_yaxes(title=metric)
    return _layout(fig, f"{metric} during training")


def metric_scatter(runs: pd.DataFrame, x: str, y: str, colour: str | None = None) -> go.Figure:
    """Final ``y`` against final ``x``, one point per run; one trace per value of ``colour`` (else one)."""
    fig = go.Figure()
    data = runs.dropna(subset=[x, y])
    groups = [(None, data)] if not colour or colour not in data else data.groupby(data[colour].astype(str), sort=True)
    for value, group in groups:
        fig.add_trace(
            go.Scatter(
                x=group[x],
                y=group[y],
                mode="markers+text",
                text=group["run_name"],
                textposition="top center",
                marker_size=11,
                name=f"{colour}={value}" if value is not None else "runs",
                customdata=group["run_id"],
                hovertemplate=f"%{{text}}<br>{x}=%{{x:.4g}}<br>{y}=%{{y:.4g}}<extra></extra>",
            )
        )
    fig.update_xaxes(title=x)
    fig.update_yaxes(title=y)
    return _layout(fig, f"{y} vs {x}")


def sweep_chart(trials: pd.DataFrame, metric: str, fields: list[str]) -> go.Figure:
    """Final ``metric`` against each swept field: one subplot and one trace per field."""
    fields = [f for f in fields if f in trials] or ["run_name"]
    fig = make_subplots(rows=1, cols=len(fields), shared_yaxes=True, subplot_titles=fields)
    for i, field in enumerate(fields, start=1):
        data = trials.dropna(subset=[metric]) if metric in trials else trials.iloc[0:0]
        numeric = pd.api.types.is_numeric_dtype(data[field]) if field in data else False
        data = data.sort_values(field) if numeric else data
        fig.add_trace(
            go.Scatter(
                x=data[field] if numeric else data[field].astype(str),
                y=data[metric] if metric in data else [],
                mode="markers",
                marker_size=10,
                name=field,
                text=data.get("run_name"),
            ),
            row=1,
            col=i,
        )
        if numeric and len(data) and data[field].gt(0).all() and data[field].max() / data[field].min() > 50:
            fig.update_xaxes(type="log", row=1, col=i)
    fig.update_yaxes(title=metric, row=1, col=1)
    return _layout(fig, f"{metric} by swept field", height=360)


def _finished(study) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def optimisation_history(study, metric: str) -> go.Figure:
    """Optuna's optimisation history: each trial's ``metric`` and the best so far, against the trial number."""
    from optuna.visualization import plot_optimization_history

    return _layout(plot_optimization_history(study, target_name=metric), f"{metric} by trial (best so far)")


def param_importances(study, metric: str) -> go.Figure | None:
    """Optuna's parameter importances (fANOVA) for ``metric``; None below two finished trials or one param."""
    from optuna.visualization import plot_param_importances

    if _finished(study) < 2:
        return None
    try:
        fig = plot_param_importances(study, target_name=metric)
    except (ValueError, RuntimeError):  # e.g. every finished trial has the same params
        return None
    return _layout(fig, f"Importance of each field for {metric}")


def parallel_coordinates(study, metric: str) -> go.Figure:
    """Optuna's parallel-coordinates plot: one line per finished trial through its params to ``metric``."""
    from optuna.visualization import plot_parallel_coordinate

    return _layout(plot_parallel_coordinate(study, target_name=metric), f"{metric} across the fields", height=420)


def two_fields(study, metric: str, fields: list[str]) -> go.Figure:
    """Optuna's contour plot of ``metric`` over two fields, or its slice plot for one field."""
    from optuna.visualization import plot_contour, plot_slice

    if len(fields) == 2:
        return _layout(plot_contour(study, params=fields, target_name=metric), f"{metric}: {fields[0]} x {fields[1]}")
    return _layout(plot_slice(study, params=fields, target_name=metric), f"{metric} by {', '.join(fields)}")


def _hist_trace(hist: dict, name: str, colour: str | None = None) -> go.Bar:
    edges = np.asarray(hist["edges"], dtype=float)
    counts = np.asarray(hist["counts"], dtype=float)
    return go.Bar(
        x=(edges[:-1] + edges[1:]) / 2,
        y=counts,
        width=np.diff(edges),
        name=name,
        marker_color=colour,
        opacity=0.75,
    )


def posterior_histograms(summary: dict) -> go.Figure:
    """Histograms of mu and sigma per layer (``posterior/summary.json``): 2 traces per layer, 2 columns."""
    layers = summary.get("layers") or []
    if not layers:
        raise ValueError("the posterior summary lists no layers")
    fig = make_subplots(
        rows=len(layers),
        cols=2,
        subplot_titles=[f"{layer['name']}: {part}" for layer in layers for part in ("μ", "σ")],
        vertical_spacing=min(0.12, 0.6 / max(len(layers), 1)),
    )
    for i, layer in enumerate(layers, start=1):
        fig.add_trace(_hist_trace(layer["mu"], f"{layer['name']} μ", BNN_COLOUR), row=i, col=1)
        fig.add_trace(_hist_trace(layer["sigma"], f"{layer['name']} σ", "#ff7f0e"), row=i, col=2)
    fig.update_layout(showlegend=False, bargap=0)
    return _layout(fig, "Posterior weights: μ and σ per layer", height=max(300, 230 * len(layers)))


def snr_density(summary: dict) -> go.Figure:
    """Density of log10 signal-to-noise |mu|/sigma (Blundell et al. 2015, Figure 3): one trace per layer + all."""
    fig = go.Figure()
    series = [(layer["name"], layer.get("log10_snr")) for layer in summary.get("layers") or []]
    all_hist = (summary.get("all") or {}).get("log10_snr")
    if all_hist:
        series.append(("all weights", all_hist))
    for name, hist in series:
        if not hist:
            continue
        edges = np.asarray(hist["edges"], dtype=float)
        counts = np.asarray(hist["counts"], dtype=float)
        widths = np.diff(edges)
        density = counts / max(counts.sum(), 1.0) / np.where(widths > 0, widths, 1.0)
        fig.add_trace(
            go.Scatter(
                x=(edges[:-1] + edges[1:]) / 2,
                y=density,
                mode="lines",
                name=name,
                line={"width": 3 if name == "all weights" else 1.5},
            )
        )
    fig.update_xaxes(title="log10 signal-to-noise ratio |μ|/σ")
    fig.update_yaxes(title="density")
    return _layout(fig, "Signal-to-noise density of the weights (paper's Figure 3)")


def reliability_diagram(reliability: dict) -> go.Figure:
    """Reliability diagram (``evaluation/reliability.json``): accuracy bars, confidence gap, diagonal (3 traces)."""
    bins = [b for b in reliability.get("bins") or [] if b.get("count")]
    centres = [(b["lower"] + b["upper"]) / 2 for b in bins]
    widths = [b["upper"] - b["lower"] for b in bins]
    accuracy = [b.get("accuracy") or 0.0 for b in bins]
    confidence = [b.get("confidence") or 0.0 for b in bins]
    fig = go.Figure()
    fig.add_trace(go.Bar(x=centres, y=accuracy, width=widths, name="accuracy", marker_color=BNN_COLOUR))
    fig.add_trace(
        go.Bar(
            x=centres,
            y=[c - a for c, a in zip(confidence, accuracy)],
            base=accuracy,
            width=widths,
            name="gap to confidence",
            marker_color="rgba(214,39,40,0.35)",
        )
    )
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="perfect calibration", line={"dash": "dash"}))
    fig.update_layout(barmode="overlay", bargap=0)
    fig.update_xaxes(title="confidence", range=[0, 1])
    fig.update_yaxes(title="accuracy", range=[0, 1])
    ece = reliability.get("ece")
    title = "Reliability diagram" + (f" (ECE {ece:.3f})" if isinstance(ece, (int, float)) else "")
    return _layout(fig, title)


def predictive_band(band: dict) -> go.Figure:
    """Regression band on the test inputs (``evaluation/predictive_band.json``): band, mean, targets (3 traces)."""
    x = band["x"]
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=list(x) + list(x)[::-1],
            y=list(band["upper"]) + list(band["lower"])[::-1],
            fill="toself",
            fillcolor="rgba(31,119,180,0.2)",
            line={"width": 0},
            name="95% interval",
        )
    )
    fig.add_trace(go.Scatter(x=x, y=band["mean"], mode="lines", name="predictive mean", line={"color": BNN_COLOUR}))
    fig.add_trace(
        go.Scatter(x=x, y=band["target"], mode="markers", name="test targets", marker={"color": DATA_COLOUR, "size": 4})
    )
    _shade_range(fig, band.get("train_range"))
    fig.update_xaxes(title=band.get("feature", "x"))
    return _layout(fig, "Predictive band on the test set")


def _shade_range(fig: go.Figure, train_range) -> None:
    if isinstance(train_range, (list, tuple)) and len(train_range) == 2:
        fig.add_vrect(
            x0=train_range[0],
            x1=train_range[1],
            fillcolor="rgba(0,0,0,0.05)",
            line_width=0,
            annotation_text="training x",
        )


def class_distribution(result: ClassificationResult, index: int) -> go.Figure:
    """Per-class sampled probabilities of input ``index``.

    Traces (3): a box per class of the S sampled probabilities (one box trace, grouped by
    class), the BNN's mean probability, and the point estimate's probability.
    """
    probs = result.probs[:, index, :]  # [S, C]
    s, c = probs.shape
    names = result.class_names
    fig = go.Figure()
    fig.add_trace(
        go.Box(
            x=np.tile(np.asarray(names, dtype=object), s),
            y=probs.reshape(-1),
            name=f"sampled p (S={s})",
            boxpoints="outliers" if s > 50 else "all",
            jitter=0.4,
            marker={"size": 3, "color": BNN_COLOUR},
            line={"color": BNN_COLOUR},
        )
    )
    fig.add_trace(
        go.Scatter(
            x=names,
            y=result.mean[index],
            error_y={"type": "data", "array": result.std[index], "visible": True},
            mode="markers",
            name="BNN mean ± std",
            marker={"symbol": "diamond", "size": 10, "color": "#2ca02c"},
        )
    )
    fig.add_trace(
        go.Scatter(
            x=names,
            y=result.point_probs[index],
            mode="markers",
            name="point estimate (posterior mean weights)",
            marker={"symbol": "x", "size": 10, "color": POINT_COLOUR},
        )
    )
    fig.update_xaxes(title="class", type="category", categoryorder="array", categoryarray=names)
    fig.update_yaxes(title="probability", range=[-0.02, 1.02])
    return _layout(fig, "Sampled class probabilities", height=400)


def uncertainty_split(result: ClassificationResult, index: int) -> go.Figure:
    """Predictive entropy split into aleatoric and epistemic parts (2 stacked bar traces), vs the point estimate."""
    fig = go.Figure()
    fig.add_trace(
        go.Bar(
            y=["BNN", "point estimate"],
            x=[result.expected_entropy[index], result.point_entropy[index]],
            orientation="h",
            name="aleatoric (expected entropy)",
            marker_color=ALEATORIC_COLOUR,
        )
    )
    fig.add_trace(
        go.Bar(
            y=["BNN", "point estimate"],
            x=[result.mutual_information[index], 0.0],
            orientation="h",
            name="epistemic (mutual information)",
            marker_color=EPISTEMIC_COLOUR,
        )
    )
    fig.update_layout(barmode="stack")
    fig.update_xaxes(range=[0, math.log(max(len(result.class_names), 2)) * 1.05])
    return _layout(fig, "Uncertainty (nats): predictive entropy = aleatoric + epistemic", height=260)


def compare_class_distribution(results: Mapping[str, ClassificationResult], index: int) -> go.Figure:
    """Several models' sampled class probabilities of input ``index``, grouped by class.

    Traces: one box trace per model (in the order given) of its S sampled probabilities per class,
    with the mean and the standard deviation across samples drawn on each box. A deterministic
    network's box is a flat line: every sample gives the same answer.
    """
    fig = go.Figure()
    names = next(iter(results.values())).class_names
    for i, (label, result) in enumerate(results.items()):
        probs = result.probs[:, index, :]  # [S, C]
        colour = MODEL_COLOURS[i % len(MODEL_COLOURS)]
        fig.add_trace(
            go.Box(
                x=np.tile(np.asarray(result.class_names, dtype=object), probs.shape[0]),
                y=probs.reshape(-1),
                name=f"{label} (S={probs.shape[0]})",
                boxmean="sd",
                boxpoints=False,
                marker={"color": colour},
                line={"color": colour, "width": 1.5},
            )
        )
    fig.update_layout(boxmode="group", boxgap=0.15, boxgroupgap=0.05)
    fig.update_xaxes(title="class", type="category", categoryorder="array", categoryarray=names)
    fig.update_yaxes(title="probability", range=[-0.02, 1.02])
    return _layout(fig, "Sampled class probabilities (box: the S samples; dashed: mean ± std)", 400)


def compare_uncertainty(rows: pd.DataFrame, num_classes: int) -> go.Figure:
    """Predictive entropy of one input split into aleatoric and epistemic parts, one bar per model.

    Args:
        rows: that input's rows of :func:`dashboard.predictions.compare_classification` (one per model).
        num_classes: C, for the axis' end log(C) (the largest possible entropy).

    Traces (2, stacked): aleatoric (expected entropy) and epistemic (mutual information), with each
    bar's value written on it; the first model is drawn on top.
    """
    models = list(rows["model"])[::-1]
    parts = (
        ("aleatoric_expected_entropy", "aleatoric (expected entropy)", ALEATORIC_COLOUR),
        ("epistemic_mutual_information", "epistemic (mutual information)", EPISTEMIC_COLOUR),
    )
    fig = go.Figure()
    for column, name, colour in parts:
        values = [float(v) for v in rows[column]][::-1]
        fig.add_trace(
            go.Bar(
                y=models,
                x=values,
                orientation="h",
                name=name,
                marker_color=colour,
                text=[f"{v:.3f}" for v in values],
                textposition="inside",
                insidetextanchor="middle",
            )
        )
    fig.update_layout(barmode="stack")
    fig.update_xaxes(range=[0, math.log(max(num_classes, 2)) * 1.05])
    fig.update_yaxes(automargin=True)
    return _layout(fig, "Predictive entropy (nats) = aleatoric + epistemic", height=180 + 45 * len(models))


def compare_regression(rows: pd.DataFrame, target: str) -> go.Figure:
    """Several models' predictive distributions of one input row, one line per model.

    Args:
        rows: that row's rows of :func:`dashboard.predictions.compare_regression` (one per model).
        target: the target's name (columns ``{target}_mean``, ``_lower95``, ``_upper95``,
            ``_epistemic_std``, ``_point_estimate``; ``{target}`` itself when the upload held it).

    Traces (3): the predictive mean with its 95% interval, the mean -+ 1.96 epistemic std (the
    weights' part alone), the point estimate. The observed target, when given, is a vertical line.
    """
    models = list(rows["model"])[::-1]
    mean = rows[f"{target}_mean"].to_numpy(float)[::-1]
    lower, upper = rows[f"{target}_lower95"].to_numpy(float)[::-1], rows[f"{target}_upper95"].to_numpy(float)[::-1]
    epistemic = 1.959963984540054 * rows[f"{target}_epistemic_std"].to_numpy(float)[::-1]
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=mean,
            y=models,
            mode="markers",
            name="mean, 95% predictive interval",
            marker={"color": BNN_COLOUR, "size": 10},
            error_x={"type": "data", "symmetric": False, "array": upper - mean, "arrayminus": mean - lower},
        )
    )
    fig.add_trace(
        go.Scatter(
            x=mean,
            y=models,
            mode="markers",
            name="95% epistemic (weights only)",
            marker={"color": EPISTEMIC_COLOUR, "size": 1},
            error_x={"type": "data", "array": epistemic, "thickness": 6, "width": 0, "color": EPISTEMIC_COLOUR},
        )
    )
    fig.add_trace(
        go.Scatter(
            x=rows[f"{target}_point_estimate"].to_numpy(float)[::-1],
            y=models,
            mode="markers",
            name="point estimate",
            marker={"symbol": "x", "size": 12, "color": POINT_COLOUR},
        )
    )
    observed = rows[target].iloc[0] if target in rows else None
    if observed is not None and np.isfinite(observed):
        fig.add_vline(x=float(observed), line_dash="dash", line_color=DATA_COLOUR, annotation_text=f"observed {target}")
    fig.update_xaxes(title=target)
    fig.update_yaxes(automargin=True)
    return _layout(fig, "Predictive distribution per model", height=200 + 50 * len(models))


def regression_distribution(result: RegressionResult, index: int, target: int = 0) -> go.Figure:
    """Histogram of sampled outputs y for input ``index`` (1 trace) with the mean, 95% interval and point estimate.

    The interval and lines are shapes, not traces, so the figure has 1 histogram trace
    plus 1 marker trace for the point estimate (2 traces).
    """
    draws = result.draws[:, index, target]
    mean = float(result.mean[index, target])
    lo, hi = float(result.lower[index, target]), float(result.upper[index, target])
    point = float(result.point_mean[index, target])
    fig = go.Figure()
    fig.add_trace(
        go.Histogram(
            x=draws,
            nbinsx=min(60, max(10, len(draws) // 5)),
            histnorm="probability density",
            name=f"sampled y (S={len(draws)})",
            marker_color=BNN_COLOUR,
            opacity=0.7,
        )
    )
    fig.add_trace(
        go.Scatter(
            x=[point],
            y=[0],
            mode="markers",
            marker={"symbol": "x", "size": 14, "color": POINT_COLOUR},
            name="point estimate",
        )
    )
    fig.add_vrect(x0=lo, x1=hi, fillcolor="rgba(31,119,180,0.12)", line_width=0, annotation_text="95% interval")
    fig.add_vline(x=mean, line_color="#2ca02c", line_dash="dash", annotation_text=f"mean {mean:.3g}")
    fig.update_xaxes(title=result.target_names[target])
    fig.update_yaxes(title="density")
    return _layout(fig, "Sampled predictive distribution", height=320)


def fan_chart(
    data: dict, train: pd.DataFrame | None = None, train_range=None, feature: str = "x", target: str = "y"
) -> go.Figure:
    """Fan chart of a 1-D regression model.

    Traces: 95% predictive band, 95% epistemic band, one line per function draw, the
    predictive mean, the point estimate, and the training points when given
    (4 + number of draws [+ 1]).
    """
    x = data["x"]
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=np.concatenate([x, x[::-1]]),
            y=np.concatenate([data["upper"], data["lower"][::-1]]),
            fill="toself",
            fillcolor="rgba(31,119,180,0.15)",
            line={"width": 0},
            name="95% predictive interval",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=np.concatenate([x, x[::-1]]),
            y=np.concatenate([data["epistemic_upper"], data["epistemic_lower"][::-1]]),
            fill="toself",
            fillcolor="rgba(255,127,14,0.2)",
            line={"width": 0},
            name="95% epistemic (weights only)",
        )
    )
    for i, draw in enumerate(data["draws"]):
        fig.add_trace(
            go.Scatter(
                x=x,
                y=draw,
                mode="lines",
                line={"width": 0.7, "color": "rgba(31,119,180,0.35)"},
                name="sampled functions",
                legendgroup="draws",
                showlegend=i == 0,
                hoverinfo="skip",
            )
        )
    fig.add_trace(go.Scatter(x=x, y=data["mean"], mode="lines", name="predictive mean", line={"color": BNN_COLOUR}))
    fig.add_trace(
        go.Scatter(
            x=x,
            y=data["point"],
            mode="lines",
            name="point estimate",
            line={"color": POINT_COLOUR, "dash": "dot"},
        )
    )
    if train is not None and len(train):
        fig.add_trace(
            go.Scatter(
                x=train[feature],
                y=train[target],
                mode="markers",
                name="training data",
                marker={"color": DATA_COLOUR, "size": 3},
            )
        )
    _shade_range(fig, train_range)
    fig.update_xaxes(title=feature)
    fig.update_yaxes(title=target)
    return _layout(fig, "Predictive fan chart: uncertainty grows away from the data", height=460)


def trace_count(fig: go.Figure) -> int:
    """Number of traces (used by tests and captions)."""
    return len(fig.data)


def risk_coverage(doc: dict) -> go.Figure:
    """Accuracy against the share of most uncertain inputs refused (the run's own chart; one trace)."""
    from lightning_bnn.tracking.figures import risk_coverage_figure  # imports torch: only when drawn

    return risk_coverage_figure(doc)


#: a run's task tag -> [(artifact of a test-set report, chart of it, what it is called), ...]
EVALUATION_CHARTS = {
    "classification": [
        (RELIABILITY, reliability_diagram, "Reliability diagram"),
        (RISK_COVERAGE, risk_coverage, "Selective prediction (risk-coverage)"),
    ],
    "regression": [(PREDICTIVE_BAND, predictive_band, "Predictive band")],
}
