"""A team tracking server on a real PostgreSQL, with two concurrent writers over HTTP (issue 8).

The fixture starts Debian's PostgreSQL in a temp folder on a free port (as the
``postgres`` user when run as root: PostgreSQL refuses root), creates a database, and
starts ``scripts/team_server.sh`` (``mlflow server --workers 1`` on 127.0.0.1) on it.
Both servers are stopped by PID at the end.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from bnn_testing import CONFIGS, REPO, cli_env, fit_command, free_port, stop, wait_http

pytestmark = pytest.mark.slow


def _pg_bin() -> Path | None:
    """Folder of PostgreSQL's server binaries (Debian keeps them off PATH)."""
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True):
        return Path(candidate).parent
    found = shutil.which("initdb")
    return Path(found).resolve().parent if found else None


@pytest.fixture(scope="module")
def postgres_uri():
    """postgresql:// URI of a fresh database on a throw-away PostgreSQL server."""
    pg_bin = _pg_bin()
    if pg_bin is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql")
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    root = Path(tempfile.mkdtemp(prefix="lbnn_pg_", dir="/tmp"))  # /tmp: reachable by the postgres user
    data, sockets = root / "data", root / "sock"
    sockets.mkdir()
    if as_postgres:
        shutil.chown(root, "postgres")
        shutil.chown(sockets, "postgres")
    port = free_port()

    def pg(*cmd: str) -> None:
        subprocess.run([*as_postgres, *cmd], check=True, capture_output=True, text=True, timeout=120)

    pg(str(pg_bin / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
    options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off"
    pg(str(pg_bin / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "postgres.log"), "-w", "start")
    try:
        pg(str(pg_bin / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "mlflow")
        yield f"postgresql://postgres@127.0.0.1:{port}/mlflow"
    finally:
        pid_file = data / "postmaster.pid"
        pid = int(pid_file.read_text().split()[0]) if pid_file.exists() else None
        subprocess.run([*as_postgres, str(pg_bin / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], timeout=60)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 0)
                os.kill(pid, signal.SIGTERM)  # pg_ctl failed: stop the postmaster by its PID
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def team_server(postgres_uri, tmp_path_factory):
    """(http URI, seconds to healthy) of scripts/team_server.sh on the PostgreSQL database."""
    root = tmp_path_factory.mktemp("team_server")
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    cmd = [
        str(REPO / "scripts" / "team_server.sh"),
        "--backend-store-uri",
        postgres_uri,
        "--artifacts-destination",
        str(root / "artifacts"),
        "--port",
        str(port),
    ]
    log = open(root / "server.log", "w")  # noqa: SIM115 - closed at teardown
    start = time.monotonic()
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{uri}/health", timeout=180, proc=proc)
        yield uri, time.monotonic() - start
    except Exception:
        log.flush()
        print((root / "server.log").read_text()[-3000:], file=sys.stderr)
        raise
    finally:
        stop(proc)  # the script exec's mlflow: this PID is the server's
        log.close()


def test_two_concurrent_runs_over_http(team_server, tmp_path):
    """Two training processes write to the server at once; the dashboard's data layer reads both back."""
    from dashboard.runs import list_runs, load_run_model

    uri, start_seconds = team_server
    env = cli_env(OMP_NUM_THREADS="1")
    procs = []
    for name in ("alice", "bob"):
        cmd = fit_command(
            CONFIGS / "digits.yaml",
            uri,
            "--mlflow.experiment",
            "team",
            "--mlflow.run_name",
            name,
            "--model.hidden_sizes",
            "[16]",
            "--trainer.max_epochs",
            "2",
            "--trainer.limit_train_batches",
            "5",
        )
        folder = tmp_path / name
        folder.mkdir()
        procs.append(subprocess.Popen(cmd, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    outputs = [proc.communicate(timeout=600)[0].decode(errors="replace") for proc in procs]
    for proc, output in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, output[-4000:]

    runs = list_runs(uri)
    runs = runs[runs["experiment"] == "team"]
    assert sorted(runs["run_name"]) == ["alice", "bob"]
    assert set(runs["status"]) == {"FINISHED"}
    assert runs["test/acc"].notna().all()
    # the artifacts went through the server's proxy into the shared folder, and load back
    model = load_run_model(uri, runs["run_id"].iloc[0])
    assert model.hparams.hidden_sizes == [16]
    print(f"team server healthy after {start_seconds:.1f} s")


def test_sweep_workers_share_an_optuna_study_on_postgresql(postgres_uri):
    """The team server's PostgreSQL holds a second database for Optuna; two workers pop each queued point once."""
    import optuna
    import psycopg
    from test_sweep import POP

    with psycopg.connect(postgres_uri, autocommit=True) as connection:
        connection.execute("CREATE DATABASE optuna")
    url = postgres_uri.rsplit("/", 1)[0] + "/optuna"
    study = optuna.create_study(study_name="queue", storage=url)
    for x in range(30):
        study.enqueue_trial({"x": x})
    procs = [subprocess.Popen([sys.executable, "-c", POP, url], cwd=REPO, env=cli_env()) for _ in range(2)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    done = sorted(t.params["x"] for t in study.get_trials() if t.state == optuna.trial.TrialState.COMPLETE)
    assert done == list(range(30))
