"""The runs of a local SQLite MLflow store, read with ``sqlite3`` alone: the dashboard's first screen.

Listing runs through ``MlflowClient`` first imports MLflow and its SQLAlchemy store (about 1.4 s
of a 2-core machine's time, most of the dashboard's first screen). :func:`search_runs` answers
the one query the Runs page makes, ``search_experiments()`` then ``search_runs(all of them,
order_by=["attributes.start_time DESC"])``, straight from the database file, opened read-only,
and returns objects with the attributes of MLflow's ``Run`` that the page reads
(``info.run_id``, ``run_name``, ``experiment_id``, ``status``, ``start_time``, ``end_time``;
``data.params``, ``data.metrics`` (latest values), ``data.tags``).

It reads MLflow's schema, which MLflow migrates between releases, so it answers only for a store
whose schema revision (``alembic_version``) is one of :data:`KNOWN_REVISIONS`, the revisions whose
tables it was checked against (``tests/test_sqlite_runs.py`` compares its answer with
``MlflowClient``'s on a real store), and whose experiments all sit in MLflow's ``default``
workspace. Otherwise, or for any URI that is not a ``sqlite:///`` file that exists, it returns
None and the caller asks MLflow. Nothing here imports MLflow, pandas or torch.
"""

from __future__ import annotations

import math
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

#: schema revisions (MLflow's alembic heads) whose runs, experiments, tags, params and latest_metrics
#: tables this module reads: dc11669786a5 is the head of mlflow 3.17.2 (requirements.txt)
KNOWN_REVISIONS = frozenset({"dc11669786a5"})
#: MLflow's run ordering for ``order_by=["attributes.start_time DESC"]``: missing start times last,
#: then newest first, then by run id
_RUNS = """
SELECT r.run_uuid, r.name, r.experiment_id, r.status, r.start_time, r.end_time
FROM runs r JOIN experiments e ON e.experiment_id = r.experiment_id
WHERE r.lifecycle_stage = 'active' AND e.lifecycle_stage = 'active'
ORDER BY r.start_time IS NULL, r.start_time DESC, r.run_uuid
LIMIT ?
"""


@dataclass(frozen=True)
class RunInfo:
    """The fields of MLflow's ``RunInfo`` the dashboard reads."""

    run_id: str
    run_name: str | None
    experiment_id: str
    status: str
    start_time: int | None
    end_time: int | None


@dataclass(frozen=True)
class RunData:
    """A run's params, latest metric values and tags, as in MLflow's ``RunData``."""

    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Run:
    """A run: ``info`` and ``data``, like MLflow's ``Run``."""

    info: RunInfo
    data: RunData


def database_path(uri: str) -> Path | None:
    """The file of a ``sqlite:///`` URI when it exists, else None (a server, another database, no file yet)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = Path(uri.removeprefix("sqlite:///").split("?", 1)[0])
    return path if path.is_file() else None


def _connect(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=5.0)


def readable(connection: sqlite3.Connection) -> bool:
    """Whether the store's schema is one this module knows and all its experiments are in ``default``."""
    try:
        revisions = {row[0] for row in connection.execute("SELECT version_num FROM alembic_version")}
        others = connection.execute("SELECT COUNT(*) FROM experiments WHERE workspace != 'default'").fetchone()[0]
    except sqlite3.DatabaseError:
        return False
    return len(revisions) == 1 and revisions <= KNOWN_REVISIONS and others == 0


def _by_run(connection: sqlite3.Connection, query: str, run_ids: list[str]) -> dict[str, list[tuple]]:
    out: dict[str, list[tuple]] = {run_id: [] for run_id in run_ids}
    for start in range(0, len(run_ids), 500):  # SQLite's limit on bound parameters
        chunk = run_ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        for row in connection.execute(query.format(marks=marks), chunk):
            out[row[0]].append(row[1:])
    return out


def search_runs(uri: str, max_results: int = 1000) -> tuple[dict[str, str], list[Run]] | None:
    """(experiment id -> name of the active experiments, their active runs newest first), or None.

    None means "ask MLflow": the URI is not an existing SQLite file, or its schema is not one of
    :data:`KNOWN_REVISIONS`. A file that is not a SQLite database, or one that cannot be read, raises
    ``sqlite3.DatabaseError``.
    """
    path = database_path(uri)
    if path is None:
        return None
    with path.open("rb") as file:
        header = file.read(16)
    if header and header != b"SQLite format 3\x00":  # an empty file is a new database: MLflow's to create
        raise sqlite3.DatabaseError(f"{path} is not a SQLite database")
    connection = _connect(path)
    try:
        if not readable(connection):
            return None
        active = "SELECT experiment_id, name FROM experiments WHERE lifecycle_stage = 'active'"
        names = {str(i): name for i, name in connection.execute(active)}
        rows = connection.execute(_RUNS, (int(max_results),)).fetchall()
        ids = [row[0] for row in rows]
        params = _by_run(connection, "SELECT run_uuid, key, value FROM params WHERE run_uuid IN ({marks})", ids)
        tags = _by_run(connection, "SELECT run_uuid, key, value FROM tags WHERE run_uuid IN ({marks})", ids)
        metrics = _by_run(
            connection, "SELECT run_uuid, key, value, is_nan FROM latest_metrics WHERE run_uuid IN ({marks})", ids
        )
    finally:
        connection.close()
    runs = [
        Run(
            RunInfo(run_id, name, str(experiment_id), status, start, end),
            RunData(
                params=dict(params[run_id]),
                metrics={key: math.nan if is_nan else float(value) for key, value, is_nan in metrics[run_id]},
                tags=dict(tags[run_id]),
            ),
        )
        for run_id, name, experiment_id, status, start, end in rows
    ]
    return names, runs
