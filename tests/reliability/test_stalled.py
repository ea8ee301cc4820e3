"""Issue 16, item 6: a SIGKILLed fit is reported stalled, then ended KILLED with the reason; a finished run never is.

A real ``python -m lightning_bnn fit`` job (100,000 epochs of tiny digits) on a fresh SQLite
store is still training when the test SIGKILLs it. Beside it, a run that beat through the
same writer (:class:`~lightning_bnn.tracking.heartbeat.Heartbeat`) and then finished: its
heartbeat is as old, but it is not ``RUNNING``. (A second real fit for that run cost 15 to 30 s
more on the loaded 2-core machine.) The threshold is a fraction of a minute
(``--stalled-after 0.01``, 0.6 s), so the test waits about a second, not ten minutes.
"""

from __future__ import annotations

import io
import signal
import time

from tests.reliability.jobs import spawn_fit, store_uri, wait

LONG = ("--trainer.max_epochs", "100000", "--model.hidden_sizes", "[16]", "--model.num_samples_eval", "2")
#: seconds the heartbeat thread waits between beats: a change sooner than this came from an epoch's beat
INTERVAL_S = 60


def _run_named(client, name: str):
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], filter_string=f"attributes.run_name = '{name}'"
    )
    return runs[0] if runs else None


def _heartbeat(client, name: str, proc, previous: int | None = None, timeout: float = 240) -> int:
    """The run's heartbeat once it exists (and differs from ``previous``); fails if the job exits first."""
    from lightning_bnn.tracking.heartbeat import HEARTBEAT_TAG

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = _run_named(client, name)
        beat = run.data.tags.get(HEARTBEAT_TAG) if run is not None else None
        if beat is not None and int(beat) != previous:
            return int(beat)
        assert proc.poll() is None, f"job {name} exited with {proc.returncode} before its heartbeat"
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"job {name} wrote no (new) heartbeat within {timeout} s")


def _statuses(uri: str, *extra: str) -> tuple[dict[str, str], str]:
    from lightning_bnn.cli.commands import runs_main

    out = io.StringIO()
    assert runs_main(["--tracking-uri", uri, *extra], out=out) == 0
    rows = {line.split()[2]: line.split()[3] for line in out.getvalue().splitlines() if " digits " in line}
    return rows, out.getvalue()


def test_sigkilled_fit_is_reported_stalled_then_marked_killed(tmp_path):
    from mlflow import MlflowClient

    from dashboard.runs import list_runs
    from lightning_bnn.tracking.heartbeat import HEARTBEAT_TAG, KILLED_REASON_TAG, Heartbeat, format_time

    uri = store_uri(tmp_path)
    long = spawn_fit(tmp_path, "long", *LONG, "--mlflow.run_name", "long")
    try:
        client = MlflowClient(uri)
        first = _heartbeat(client, "long", long)
        started = time.monotonic()
        _heartbeat(client, "long", long, previous=first)  # the next epoch beat
        assert time.monotonic() - started < INTERVAL_S / 2, "the heartbeat did not follow the epochs"
    finally:
        long.send_signal(signal.SIGKILL)
    assert wait(long) == -signal.SIGKILL
    killed = _run_named(client, "long")
    experiment = killed.info.experiment_id
    with Heartbeat(client, client.create_run(experiment, run_name="short").info.run_id) as short:
        pass
    client.set_terminated(short.run_id, "FINISHED")

    finished = _run_named(client, "short")
    beat = int(killed.data.tags[HEARTBEAT_TAG])
    assert killed.info.status == "RUNNING" and finished.info.status == "FINISHED"
    assert HEARTBEAT_TAG in finished.data.tags  # it beat too, and its beat is as old as the killed one's

    rows, text = _statuses(uri)  # default threshold, 10 min: a run that beat a moment ago is not stalled
    assert rows == {"long": "RUNNING", "short": "FINISHED"}, text
    last = max(beat, int(finished.data.tags[HEARTBEAT_TAG]))
    while time.time() * 1000 - last < 1000:  # a second without a heartbeat: past 0.01 min = 0.6 s
        time.sleep(0.05)
    rows, text = _statuses(uri, "--stalled-after", "0.01")
    assert rows == {"long": "STALLED", "short": "FINISHED"}, text
    assert "1 run(s) STALLED: RUNNING with no heartbeat for 0.01 min" in text
    frame = list_runs(uri, stalled_after_min=0.01).set_index("run_name")  # the dashboard's runs table
    assert frame.loc["long", "status"] == "STALLED" and frame.loc["short", "status"] == "FINISHED"
    assert list_runs(uri).set_index("run_name").loc["long", "status"] == "RUNNING"  # default threshold

    reason = f"no heartbeat since {format_time(beat)} (stalled after 0.01 min)"
    out = io.StringIO()
    from lightning_bnn.cli.commands import runs_main

    assert runs_main(["--tracking-uri", uri, "--stalled-after", "0.01", "--mark-stalled"], out=out) == 0
    assert out.getvalue().splitlines() == [
        f"marked KILLED: {killed.info.run_id} long (digits): {reason}",
        "1 stalled run(s) marked KILLED (no heartbeat for 0.01 min)",
    ]
    ended = client.get_run(killed.info.run_id)
    assert ended.info.status == "KILLED" and ended.info.end_time == beat
    assert ended.data.tags[KILLED_REASON_TAG] == reason
    done = client.get_run(finished.info.run_id)
    assert done.info.status == "FINISHED" and KILLED_REASON_TAG not in done.data.tags
    rows, _ = _statuses(uri, "--stalled-after", "0.01")
    assert rows == {"long": "KILLED", "short": "FINISHED"}
