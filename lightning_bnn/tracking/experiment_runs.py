"""What the paper's experiments (:mod:`lightning_bnn.experiments.paper`) write to their runs, and read back.

A run trained by an experiment gets its cost (``wall_time_s``, ``cpu_time_s``, the param
``torch_threads``) and the tag ``experiment``; the regression experiment adds one figure
(``evaluation/regression_curve.html``) to each of its runs. The pruning experiment reads the
best finished runs back (:func:`finished_runs`).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
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


def log_figure_to_runs(
    uri: str, run_ids: Iterable[str], figure: Any, artifact: str, copy_to: Path | None = None
) -> None:
    """Log one plotly figure as the HTML artifact ``artifact`` of each run (and write it to ``copy_to``, if given)."""
    client = _client(uri)
    for run_id in run_ids:
        client.log_figure(run_id, figure, artifact)
    if copy_to is not None:
        copy_to.parent.mkdir(parents=True, exist_ok=True)
        figure.write_html(str(copy_to), include_plotlyjs="cdn", full_html=True)


def get_run(uri: str, run_id: str) -> Any:
    """The MLflow run ``run_id`` (info, params, metrics, tags)."""
    return _client(uri).get_run(run_id)


def run_metrics(uri: str, run_id: str) -> dict[str, float]:
    """The latest value of each metric of a run."""
    return dict(get_run(uri, run_id).data.metrics)


def finished_runs(uri: str, experiment: str, filter_string: str = "", order_by: str | None = None) -> list | None:
    """The finished runs of an experiment that match ``filter_string``, sorted; None if there is no experiment.

    Args:
        uri: the store.
        experiment: the experiment's name.
        filter_string: an MLflow search filter (e.g. ``"tags.layer_type = 'bayes'"``), ANDed with the status.
        order_by: an MLflow order clause (e.g. ``"metrics.`test/acc` DESC"``).
    """
    client = _client(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return None
    status = "attributes.status = 'FINISHED'"
    return client.search_runs(
        [found.experiment_id],
        filter_string=f"{filter_string} and {status}" if filter_string else status,
        order_by=[order_by] if order_by else None,
    )
