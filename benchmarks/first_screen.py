"""Time to the dashboard's first screen: ``python -m benchmarks.first_screen [--runs N] [--repeats N]``.

Trains ``--runs`` small real digits runs (1 epoch each) into a temporary SQLite store, then, per
repeat, starts a fresh ``streamlit run dashboard`` on 127.0.0.1 and a free port, waits for
``/_stcore/health``, opens the page in headless Chromium (Playwright, Debian's ``/usr/bin/chromium``,
launched before the server so its start-up is not counted) and waits for the rendered runs table
with its caption ``N of N runs``. It prints, per repeat and as medians:

* ``start -> health``: from ``Popen`` to the first 200 of the health check (Python, Streamlit and
  the entry module's imports, the server's start);
* ``health -> table``: from that answer to the rendered table (the page load, the entry script and
  the Runs page's run: MLflow's import and the store query, then the browser's drawing);
* ``start -> table``: the two together, what a user waits for after ``streamlit run dashboard``.

``python -m benchmarks`` adds the same measurement as the ``dashboard_first_screen`` rows.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
#: Chromium's flags for headless use as root (see /work/shared/STACK.md and tests/dashboard/test_browser.py)
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def available() -> str | None:
    """None when the measurement can run here, else why not."""
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is not installed"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed"
    return None


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_store(root: Path, runs: int, log: Callable[[str], None] = print) -> str:
    """A SQLite store under ``root`` with ``runs`` real digits runs (1 epoch, hidden [16]); returns its URI."""
    import warnings

    from lightning_bnn.cli.app import main

    (root / "mlruns").mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{root}/mlruns/mlflow.db"
    layer_types = ("bayes", "deterministic", "mc_dropout")
    for i in range(runs):
        layer_type = layer_types[i % len(layer_types)]
        log(f"training run {i + 1}/{runs} ({layer_type})")
        args = ["fit", "--config", str(REPO / "lightning_bnn" / "configs" / "digits.yaml"),
                "--mlflow.tracking_uri", uri, "--mlflow.run_name", f"first-screen-{i}-{layer_type}",
                "--model.layer_type", layer_type, "--model.hidden_sizes", "[16]", "--trainer.max_epochs", "1",
                "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
                "--trainer.enable_checkpointing", "false"]  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            main(args)
    return uri


@contextlib.contextmanager
def dashboard(uri: str, log_path: Path, cwd: Path = REPO, extra_env: dict | None = None) -> Iterator[tuple]:
    """Start ``streamlit run dashboard`` on a free port; yields (process, url, start time); stops it by its PID."""
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(extra_env or {})}
    if uri:
        env["MLFLOW_TRACKING_URI"] = uri
    command = [sys.executable, "-m", "streamlit", "run", str(REPO / "dashboard"), "--server.address", "127.0.0.1",
               "--server.port", str(port), "--server.headless", "true", "--server.fileWatcherType", "none",
               "--browser.gatherUsageStats", "false"]  # fmt: skip
    with open(log_path, "wb") as log:
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            yield process, f"http://127.0.0.1:{port}", started
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_health(url: str, process: subprocess.Popen, timeout: float = 120) -> float:
    """Poll ``/_stcore/health`` every 20 ms until it answers 200; returns the ``perf_counter`` time it did."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"streamlit exited with code {process.returncode} before answering")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:  # noqa: S310
                if response.status == 200:
                    return time.perf_counter()
        time.sleep(0.02)
    raise TimeoutError(f"{url}/_stcore/health did not answer within {timeout} s")


@contextlib.contextmanager
def chromium(profile: Path, viewport: dict | None = None) -> Iterator:
    """A headless Chromium page (Playwright persistent context in ``profile``)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport=viewport or {"width": 1400, "height": 1000},
        )
        try:
            yield context.pages[0] if context.pages else context.new_page()
        finally:
            context.close()


def measure_once(uri: str, runs: int, work: Path) -> dict[str, float]:
    """One cold start: seconds from start to health, health to table, start to table."""
    with chromium(work / "profile") as page:
        page.goto("about:blank")
        with dashboard(uri, work / "streamlit.log") as (process, url, started):
            healthy = wait_health(url, process)
            page.goto(url, wait_until="commit")
            page.locator('[data-testid="stDataFrame"]').first.wait_for(timeout=120_000)
            page.get_by_text(f"{runs} of {runs} runs").wait_for(timeout=120_000)
            shown = time.perf_counter()
    return {
        "start_to_health_s": healthy - started,
        "health_to_table_s": shown - healthy,
        "start_to_table_s": shown - started,
    }


def measure(runs: int = 3, repeats: int = 3, log: Callable[[str], None] = print) -> dict[str, list[float]]:
    """Train the store once, then ``repeats`` cold starts; returns each figure's list of seconds."""
    out: dict[str, list[float]] = {"start_to_health_s": [], "health_to_table_s": [], "start_to_table_s": []}
    with tempfile.TemporaryDirectory(prefix="first-screen-") as tmp:
        uri = make_store(Path(tmp) / "store", runs, log)
        for i in range(repeats):
            work = Path(tmp) / f"repeat-{i}"
            work.mkdir()
            try:
                figures = measure_once(uri, runs, work)
            except Exception:
                log((work / "streamlit.log").read_text()[-3000:])
                raise
            log(", ".join(f"{k} {v:.2f}" for k, v in figures.items()))
            for key, value in figures.items():
                out[key].append(value)
    return out


def rows(runs: int, repeats: int, log: Callable[[str], None]) -> list:
    """The ``dashboard_first_screen`` rows of ``python -m benchmarks`` (median ms of cold starts)."""
    from benchmarks.harness import Row

    figures = measure(runs, repeats, log)
    note = f"streamlit run -> rendered Runs table ({runs} runs) in headless Chromium, median of {repeats} cold starts"
    return [
        Row(f"dashboard_first_screen {name}", "-", None, 0, 1e3 * statistics.median(figures[key]), None, None,
            min_ms=1e3 * min(figures[key]), note=note)
        for name, key in (("start->health", "start_to_health_s"), ("health->table", "health_to_table_s"),
                          ("start->table", "start_to_table_s"))
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.first_screen", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs in the store (default 3)")
    parser.add_argument("--repeats", type=int, default=3, help="cold starts measured (default 3)")
    args = parser.parse_args(argv)
    if args.runs < 1 or args.repeats < 1:
        parser.error(f"--runs and --repeats must be >= 1, got {args.runs} and {args.repeats}")
    reason = available()
    if reason:
        print(f"cannot measure the first screen: {reason}", file=sys.stderr)
        return 2
    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f} s] {message}", file=sys.stderr, flush=True)

    figures = measure(args.runs, args.repeats, log)
    print(f"first screen, {args.runs} runs, {args.repeats} cold starts (load average {os.getloadavg()[0]:.2f}):")
    for key, values in figures.items():
        print(f"  {key:<18} median {statistics.median(values):6.2f} s   min {min(values):6.2f} s   all "
              + " ".join(f"{v:.2f}" for v in values))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
