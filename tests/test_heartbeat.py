"""Heartbeats and stalled runs: the judgement at its boundaries, the writer on a real store, the CLI's options.

The whole path (a real ``fit`` SIGKILLed, then reported stalled and marked KILLED) is
``tests/reliability/test_stalled.py``.
"""

from __future__ import annotations

import io
import math
import time
import warnings

import pytest
from bnn_testing import new_store
from mlflow import MlflowClient

from lightning_bnn.cli.commands import runs_main
from lightning_bnn.tracking.heartbeat import (
    DEFAULT_STALLED_AFTER_MIN,
    HEARTBEAT_TAG,
    KILLED_REASON_TAG,
    Heartbeat,
    check_stalled_after,
    format_time,
    is_stalled,
    last_sign_of_life,
    mark_stalled,
    stall_reason,
)

MIN = 60_000  # ms
NOW = 1_780_000_000_000  # a fixed "now" (ms since the epoch)


def stalled(status="RUNNING", heartbeat=None, start=None, after=DEFAULT_STALLED_AFTER_MIN, now=NOW) -> bool:
    return is_stalled(status, heartbeat, start, now_ms=now, stalled_after_min=after)


# -- the judgement ------------------------------------------------------------------------------------
def test_default_threshold_is_ten_minutes():
    assert DEFAULT_STALLED_AFTER_MIN == 10
    assert stalled(heartbeat=str(NOW - 10 * MIN), start=NOW - 60 * MIN)
    assert not stalled(heartbeat=str(NOW - 10 * MIN + 1), start=NOW - 60 * MIN)


@pytest.mark.parametrize("after", [10, 2.5, 0.01])
def test_a_heartbeat_exactly_the_threshold_old_is_stalled_one_ms_younger_is_not(after):
    threshold = round(after * MIN)
    start = NOW - 100 * MIN
    assert stalled(heartbeat=str(NOW - threshold), start=start, after=after)
    assert stalled(heartbeat=str(NOW - threshold - 1), start=start, after=after)
    assert not stalled(heartbeat=str(NOW - threshold + 1), start=start, after=after)


def test_a_run_without_a_heartbeat_is_judged_by_its_start_time():
    assert stalled(heartbeat=None, start=NOW - 10 * MIN)
    assert not stalled(heartbeat=None, start=NOW - 10 * MIN + 1)
    assert not stalled(heartbeat=None, start=NOW - 10 * MIN, after=10.5)


def test_the_newer_of_heartbeat_and_start_decides():
    # an old run that still beats is alive
    assert not stalled(heartbeat=str(NOW - 1 * MIN), start=NOW - 600 * MIN)
    # a run resumed a minute ago keeps its first start time and may still carry the old process's
    # heartbeat until its own first beat: the start is then the newer sign of life
    assert last_sign_of_life(str(NOW - 60 * MIN), NOW - 1 * MIN) == NOW - 1 * MIN
    assert not stalled(heartbeat=str(NOW - 60 * MIN), start=NOW - 1 * MIN)


@pytest.mark.parametrize("tag", ["", "soon", "12.5", "-5", "0"])
def test_a_heartbeat_that_is_not_a_time_is_ignored(tag):
    assert last_sign_of_life(tag, NOW - 3 * MIN) == NOW - 3 * MIN
    assert not stalled(heartbeat=tag, start=NOW - 3 * MIN)
    assert stalled(heartbeat=tag, start=NOW - 30 * MIN)


@pytest.mark.parametrize("status", ["FINISHED", "FAILED", "KILLED", "SCHEDULED"])
def test_only_running_runs_can_be_stalled(status):
    assert not stalled(status, heartbeat=str(NOW - 1000 * MIN), start=NOW - 2000 * MIN)
    assert not stalled(status, heartbeat=None, start=NOW - 2000 * MIN)
    assert stalled("RUNNING", heartbeat=str(NOW - 1000 * MIN), start=NOW - 2000 * MIN)


def test_a_run_with_no_time_at_all_or_a_heartbeat_from_the_future_is_not_stalled():
    assert not stalled(heartbeat=None, start=None)
    assert not stalled(heartbeat=None, start=0)
    assert not stalled(heartbeat=str(NOW + 5 * MIN), start=NOW - 60 * MIN)  # the writer's clock is ahead


@pytest.mark.parametrize("bad", [0, -1, math.nan, math.inf, "ten", "", None, True, [10]])
def test_a_threshold_that_is_not_a_positive_number_of_minutes_is_refused(bad):
    with pytest.raises(ValueError, match=r"stalled-after must be a positive number of minutes .*got"):
        check_stalled_after(bad)
    with pytest.raises(ValueError, match="stalled-after must be"):
        stalled(heartbeat=str(NOW), start=NOW, after=bad)


def test_threshold_accepts_fractions_and_numeric_text():
    assert check_stalled_after("0.25") == 0.25 and check_stalled_after(3) == 3.0


def test_the_reason_names_the_last_heartbeat_or_the_start_and_the_threshold():
    beat = NOW - 12 * MIN
    assert format_time(0) == "1970-01-01 00:00:00 UTC"
    assert (
        stall_reason(str(beat), NOW - 60 * MIN, 10) == f"no heartbeat since {format_time(beat)} (stalled after 10 min)"
    )
    assert stall_reason(None, NOW - 60 * MIN, 2.5) == (
        f"no heartbeat since the run started at {format_time(NOW - 60 * MIN)} (stalled after 2.5 min)"
    )


# -- the writer, on a real store ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """One SQLite store for this module's tests (each test makes its own experiment or run in it)."""
    return new_store(tmp_path_factory, "heartbeats")


@pytest.fixture
def run(store, request):
    client = MlflowClient(store)
    run = client.create_run(client.create_experiment(request.node.name), run_name="beating")
    return client, run.info.run_id


def heartbeat_of(client, run_id) -> int | None:
    tag = client.get_run(run_id).data.tags.get(HEARTBEAT_TAG)
    return int(tag) if tag is not None else None


def wait_until(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def test_start_writes_the_tag_before_returning_and_the_thread_beats_every_interval(run):
    client, run_id = run
    before = int(time.time() * 1000)
    beat = Heartbeat(client, run_id, interval_s=0.1).start()
    try:
        first = heartbeat_of(client, run_id)
        assert first is not None and before <= first <= int(time.time() * 1000)
        assert beat.alive
        assert wait_until(lambda: heartbeat_of(client, run_id) > first), "the thread never beat again"
    finally:
        beat.stop()
    assert not beat.alive
    last = heartbeat_of(client, run_id)
    time.sleep(0.4)  # four intervals: a thread still running would have written again
    assert heartbeat_of(client, run_id) == last


def test_poke_beats_now_without_waiting_for_the_interval(run):
    client, run_id = run
    with Heartbeat(client, run_id, interval_s=3600) as beat:
        first = heartbeat_of(client, run_id)
        time.sleep(0.01)
        beat.poke()
        assert wait_until(lambda: heartbeat_of(client, run_id) > first, timeout=5)
    assert not beat.alive


def test_a_store_that_refuses_the_write_never_raises_and_warns_once(store):
    client = MlflowClient(store)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        beat = Heartbeat(client, "0" * 32, interval_s=0.05).start()  # no such run: every write fails
        try:
            assert wait_until(lambda: beat.failures >= 3)
            assert beat.alive  # still trying: the next beat may reach the store
        finally:
            beat.stop()
    messages = [str(w.message) for w in caught if "heartbeat" in str(w.message)]
    assert len(messages) == 1 and "could not record the heartbeat of run 0000" in messages[0], messages


def test_interval_must_be_positive():
    with pytest.raises(ValueError, match="interval_s must be a positive number of seconds, got 0"):
        Heartbeat(None, "run", interval_s=0)


def test_mark_stalled_leaves_a_live_run_alone_and_ends_a_stalled_one_at_its_last_beat(run):
    client, run_id = run
    beat = int(time.time() * 1000)
    client.set_tag(run_id, HEARTBEAT_TAG, str(beat))
    assert mark_stalled(client, run_id, 10) is None  # judged at the real now: alive
    assert client.get_run(run_id).info.status == "RUNNING"
    reason = mark_stalled(client, run_id, 10, now=beat + 10 * MIN)
    assert reason == f"no heartbeat since {format_time(beat)} (stalled after 10 min)"
    ended = client.get_run(run_id)
    assert ended.info.status == "KILLED" and ended.info.end_time == beat
    assert ended.data.tags[KILLED_REASON_TAG] == reason
    assert mark_stalled(client, run_id, 10, now=beat + 100 * MIN) is None  # KILLED: never stalled again


# -- the runs command's options ------------------------------------------------------------------------
def test_runs_command_refuses_a_bad_threshold_and_mark_stalled_with_another_status(store, capsys):
    tracking_uri = store
    for bad in ("0", "-2", "ten", "nan"):
        with pytest.raises(SystemExit) as exit_:
            runs_main(["--tracking-uri", tracking_uri, "--stalled-after", bad], out=io.StringIO())
        assert exit_.value.code == 2
        assert (
            f"--stalled-after: stalled-after must be a positive number of minutes (fractions allowed), got '{bad}'"
            in (capsys.readouterr().err)
        )
    with pytest.raises(SystemExit):
        runs_main(["--tracking-uri", tracking_uri, "--mark-stalled", "--status", "finished"], out=io.StringIO())
    assert "--mark-stalled ends RUNNING runs only; drop --status FINISHED" in capsys.readouterr().err


def test_runs_command_shows_and_marks_only_stalled_runs_matching_the_filters(store):
    tracking_uri = store
    client = MlflowClient(tracking_uri)
    experiment = client.create_experiment("mixed")
    old = int(time.time() * 1000) - 30 * MIN
    ids = {}
    for name, status, tags in [
        ("dead", "RUNNING", {HEARTBEAT_TAG: str(old), "team": "a"}),
        ("dead-b", "RUNNING", {HEARTBEAT_TAG: str(old), "team": "b"}),
        ("alive", "RUNNING", {HEARTBEAT_TAG: str(int(time.time() * 1000)), "team": "a"}),
        ("done", "FINISHED", {HEARTBEAT_TAG: str(old), "team": "a"}),
    ]:
        ids[name] = client.create_run(experiment, start_time=old - MIN, run_name=name, tags=tags).info.run_id
        if status != "RUNNING":
            client.set_terminated(ids[name], status)

    def statuses(*extra: str) -> dict[str, str]:
        out = io.StringIO()
        assert runs_main(["--tracking-uri", tracking_uri, "--experiment", "mixed", *extra], out=out) == 0
        rows = {line.split()[2]: line.split()[3] for line in out.getvalue().splitlines() if "mixed" in line}
        return rows, out.getvalue()

    rows, text = statuses()
    assert rows == {"dead": "STALLED", "dead-b": "STALLED", "alive": "RUNNING", "done": "FINISHED"}
    assert "2 run(s) STALLED: RUNNING with no heartbeat for 10 min" in text
    rows, _ = statuses("--stalled-after", "45")
    assert rows == {"dead": "RUNNING", "dead-b": "RUNNING", "alive": "RUNNING", "done": "FINISHED"}

    out = io.StringIO()
    assert (
        runs_main(["--tracking-uri", tracking_uri, "--tag", "team=a", "--mark-stalled"], out=out) == 0
    )  # all experiments
    assert out.getvalue().splitlines() == [
        f"marked KILLED: {ids['dead']} dead (mixed): no heartbeat since {format_time(old)} (stalled after 10 min)",
        "1 stalled run(s) marked KILLED (no heartbeat for 10 min)",
    ]
    after = {name: client.get_run(run_id).info.status for name, run_id in ids.items()}
    assert after == {"dead": "KILLED", "dead-b": "RUNNING", "alive": "RUNNING", "done": "FINISHED"}
    assert KILLED_REASON_TAG not in client.get_run(ids["done"]).data.tags


def test_dashboard_runs_table_refuses_a_bad_threshold_by_name(store):
    from dashboard.runs import list_runs

    with pytest.raises(ValueError, match=r"stalled-after must be a positive number of minutes .*got 0"):
        list_runs(store, stalled_after_min=0)
