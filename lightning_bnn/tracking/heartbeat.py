"""Heartbeats of running runs, and telling a stalled run from a live one.

MLflow has no heartbeat: a run whose process is SIGKILLed, or whose machine dies, stays
``RUNNING`` forever. So a run records its own. While it trains, the tag
:data:`HEARTBEAT_TAG` (``lightning_bnn.heartbeat``) holds the time of its last sign of life,
in milliseconds since the epoch (UTC), written by :class:`Heartbeat`: once when the run
starts, once after every training epoch and at least every :data:`HEARTBEAT_INTERVAL_S`
seconds from a daemon thread, so a long epoch, validation or test still beats.

A ``RUNNING`` run is **stalled** when its last sign of life (the newer of the heartbeat and
the run's start time; a run without the tag is judged by its start time alone) is at least
``stalled_after`` minutes old (:data:`DEFAULT_STALLED_AFTER_MIN`: 10). Runs of any other
status are never stalled. ``python -m lightning_bnn runs`` and the dashboard show such runs
as :data:`STALLED`; :func:`mark_stalled` ends one ``KILLED`` with the tag
:data:`KILLED_REASON_TAG` saying why.

The judgement compares the writer's clock with the reader's: clocks that disagree by minutes
shift it by as much. Nothing here imports torch, Lightning or (at import) MLflow, so the
dashboard's first screen can use it.
"""

from __future__ import annotations

import datetime as dt
import math
import threading
import time
import warnings
from typing import Any

#: tag holding the time (ms since the epoch, UTC) of the run's last heartbeat
HEARTBEAT_TAG = "lightning_bnn.heartbeat"
#: tag set by :func:`mark_stalled` on the runs it ends ``KILLED``
KILLED_REASON_TAG = "lightning_bnn.killed_reason"
#: minutes without a sign of life after which a ``RUNNING`` run is stalled
DEFAULT_STALLED_AFTER_MIN = 10.0
#: seconds between the writer thread's heartbeats
HEARTBEAT_INTERVAL_S = 60.0
#: the status shown for a stalled run (its MLflow status is still ``RUNNING``)
STALLED = "STALLED"


# -- the judgement (pure) ------------------------------------------------------------------------
def check_stalled_after(minutes: Any) -> float:
    """``minutes`` as a float, or a ValueError naming it when it is not a positive, finite number."""
    try:
        value = float(minutes)
    except (TypeError, ValueError):
        value = math.nan
    if isinstance(minutes, bool) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"stalled-after must be a positive number of minutes (fractions allowed), got {minutes!r}")
    return value


def parse_heartbeat(tag: str | None) -> int | None:
    """The heartbeat tag's time in ms, or None when the tag is missing or not a whole number of ms."""
    if tag is None:
        return None
    try:
        value = int(str(tag).strip())
    except ValueError:
        return None
    return value if value > 0 else None


def last_sign_of_life(heartbeat: str | None, start_time_ms: int | None) -> int | None:
    """The newer of the heartbeat and the start time (ms); None when the run has neither.

    A resumed run keeps its first start time, and its new heartbeats are newer; a heartbeat
    tag that is not a number is ignored (the start time decides).
    """
    times = [t for t in (parse_heartbeat(heartbeat), start_time_ms or None) if t is not None]
    return max(times) if times else None


def is_stalled(
    status: str,
    heartbeat: str | None,
    start_time_ms: int | None,
    *,
    now_ms: int,
    stalled_after_min: float = DEFAULT_STALLED_AFTER_MIN,
) -> bool:
    """Whether a run is ``RUNNING`` with no sign of life for at least ``stalled_after_min`` minutes.

    Args:
        status: the run's MLflow status; only ``RUNNING`` runs can be stalled.
        heartbeat: the run's :data:`HEARTBEAT_TAG` (None if it has none).
        start_time_ms: the run's start time (ms since the epoch).
        now_ms: the time to judge at (ms since the epoch).
        stalled_after_min: the threshold in minutes (fractions allowed).

    Returns:
        True when ``now_ms - last_sign_of_life >= stalled_after_min * 60000``. A run with
        neither a heartbeat nor a start time cannot be judged and is not stalled.

    Raises:
        ValueError: ``stalled_after_min`` is not a positive finite number.
    """
    threshold_ms = check_stalled_after(stalled_after_min) * 60_000
    if status != "RUNNING":
        return False
    last = last_sign_of_life(heartbeat, start_time_ms)
    return last is not None and now_ms - last >= threshold_ms


def format_time(ms: int) -> str:
    """``YYYY-MM-DD HH:MM:SS UTC`` for a time in ms since the epoch."""
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def stall_reason(heartbeat: str | None, start_time_ms: int | None, stalled_after_min: float) -> str:
    """Why a run is stalled, for :data:`KILLED_REASON_TAG` and the ``runs`` command's output."""
    threshold = f"stalled after {check_stalled_after(stalled_after_min):g} min"
    beat = parse_heartbeat(heartbeat)
    if beat is not None and beat >= (start_time_ms or 0):
        return f"no heartbeat since {format_time(beat)} ({threshold})"
    if start_time_ms:
        return f"no heartbeat since the run started at {format_time(start_time_ms)} ({threshold})"
    return f"no heartbeat and no start time ({threshold})"


def run_is_stalled(run: Any, now_ms: int, stalled_after_min: float = DEFAULT_STALLED_AFTER_MIN) -> bool:
    """:func:`is_stalled` for an MLflow ``Run``."""
    return is_stalled(
        run.info.status,
        run.data.tags.get(HEARTBEAT_TAG),
        run.info.start_time,
        now_ms=now_ms,
        stalled_after_min=stalled_after_min,
    )


def now_ms() -> int:
    """The current time in ms since the epoch (the clock of the heartbeat tag)."""
    return int(time.time() * 1000)


# -- ending a stalled run ----------------------------------------------------------------------------
def mark_stalled(
    client: Any, run_id: str, stalled_after_min: float = DEFAULT_STALLED_AFTER_MIN, now: int | None = None
) -> str | None:
    """End the run ``KILLED`` if it is stalled, with :data:`KILLED_REASON_TAG` saying why.

    The run is read again first, so a run that beat (or ended) since it was listed is left
    alone. Its end time is its last sign of life, so its duration is the time it trained.

    Returns:
        The reason written, or None when the run is not (or no longer) stalled.
    """
    run = client.get_run(run_id)
    now = now_ms() if now is None else now
    if not run_is_stalled(run, now, stalled_after_min):
        return None
    heartbeat = run.data.tags.get(HEARTBEAT_TAG)
    reason = stall_reason(heartbeat, run.info.start_time, stalled_after_min)
    client.set_tag(run_id, KILLED_REASON_TAG, reason)
    end = last_sign_of_life(heartbeat, run.info.start_time)
    client.set_terminated(run_id, status="KILLED", end_time=end)
    return reason


# -- writing heartbeats ------------------------------------------------------------------------------
class Heartbeat:
    """Writes :data:`HEARTBEAT_TAG` on a run: now, on request, and every ``interval_s`` from a daemon thread.

    A store that refuses a write (briefly unavailable, locked) never stops the caller: the
    failure is reported once as a warning and the next beat tries again.

    Args:
        client: an ``MlflowClient`` on the run's store.
        run_id: the run to beat for.
        interval_s: seconds between the thread's beats.

    Example::

        with Heartbeat(client, run_id):
            long_work()  # the tag is at most interval_s old while this runs
    """

    def __init__(self, client: Any, run_id: str, interval_s: float = HEARTBEAT_INTERVAL_S) -> None:
        if not (isinstance(interval_s, (int, float)) and math.isfinite(interval_s) and interval_s > 0):
            raise ValueError(f"interval_s must be a positive number of seconds, got {interval_s!r}")
        self.client = client
        self.run_id = run_id
        self.interval_s = float(interval_s)
        self.failures = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self) -> bool:
        """Write the tag now, in this thread; False (and a warning, the first time) if the store refused."""
        try:
            self.client.set_tag(self.run_id, HEARTBEAT_TAG, str(now_ms()))
        except Exception as err:  # noqa: BLE001 - a heartbeat must never stop training
            self.failures += 1
            if self.failures == 1:
                warnings.warn(
                    f"could not record the heartbeat of run {self.run_id} ({type(err).__name__}: {err}); will retry",
                    stacklevel=2,
                )
            return False
        return True

    def poke(self) -> None:
        """Ask the thread for a beat now, without waiting for the write (pokes while it writes merge into one)."""
        self._wake.set()

    def start(self) -> Heartbeat:
        """Beat once (in this thread, so the tag exists when this returns), then start the thread."""
        if self._thread is not None:
            return self
        self.beat()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"lightning_bnn heartbeat {self.run_id}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread (waiting up to ``timeout`` seconds for a write in progress); no further beats."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        self._wake.set()
        thread.join(timeout)

    @property
    def alive(self) -> bool:
        """Whether the writer thread runs."""
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval_s)
            if self._stop.is_set():
                return
            self._wake.clear()
            self.beat()

    def __enter__(self) -> Heartbeat:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
