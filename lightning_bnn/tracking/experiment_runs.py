"""What the paper's experiments (:mod:`lightning_bnn.experiments.paper`) write to their runs, and read back.

A run trained by an experiment gets its cost (``wall_time_s``, ``cpu_time_s``, the param
``torch_threads``) and the tag ``experiment``; the regression experiment adds one figure
(``evaluation/regression_curve.html``) to each of its runs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

#: the regression experiment's figure, in each of its runs
REGRESSION_CURVE = "evaluation/regression_curve.html"


def _client(uri: str) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(uri)


def record_cost(uri: str, run_id: str, experiment: str, wall_s: float, cpu_s: float, threads: int) -> None:
    """Log a run's wall and CPU time (metrics ``wall_time_s``, ``cpu_time_s``), its torch threads and experiment."""
    client = _client(uri)
    client.log_metric(run_id, "wall_time_s", wall_s)
    client.log_metric(run_id, "cpu_time_s", cpu_s)
    client.log_param(run_id, "torch_threads", threads)
    client.set_tag(run_id, "experiment", experiment)


def log_figure_to_runs(uri: str, run_ids: Iterable[str], figure: Any, artifact: str) -> None:
    """Log one plotly figure as the HTML artifact ``artifact`` of each run."""
    client = _client(uri)
    for run_id in run_ids:
        client.log_figure(run_id, figure, artifact)


def run_metrics(uri: str, run_id: str) -> dict[str, float]:
    """The latest value of each metric of a run."""
    return dict(_client(uri).get_run(run_id).data.metrics)
