"""End to end in a real browser: `streamlit run dashboard` + Debian's Chromium driven by Playwright.

The README's screenshots come from ``scripts/screenshots.py`` (fully trained runs, sidebar hidden).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from bnn_testing import free_port, stop, wait_http

from benchmarks.first_screen import CHROMIUM
from benchmarks.first_screen import chromium as chromium_page  # one Playwright launch for tests and benchmark
from dashboard import inputs, predictions
from lightning_bnn import load_model
from tests.dashboard.test_pages import digit_png

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed"),
]


@pytest.fixture
def browser_run(digits_run) -> tuple[str, str]:
    """(tracking_uri, run_id) shown in the browser: the small shared digits run."""
    return digits_run


@contextlib.contextmanager
def serve(uri: str, log_path: Path) -> Iterator[str]:
    """`streamlit run dashboard` on 127.0.0.1 and a free port, reading the store ``uri``; yields its URL."""
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONUNBUFFERED": "1"}
    log = open(log_path, "wb")  # noqa: SIM115 - closed below
    command = [sys.executable, "-m", "streamlit", "run", "dashboard", "--server.address", "127.0.0.1",
               "--server.port", str(port), "--server.headless", "true", "--server.fileWatcherType", "none",
               "--browser.gatherUsageStats", "false"]  # fmt: skip
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_http(f"{url}/_stcore/health", timeout=60, proc=process)
        except (RuntimeError, TimeoutError) as err:
            raise RuntimeError(f"streamlit did not start: {err}\n{log_path.read_text()[-3000:]}") from err
        yield url
    finally:
        stop(process, timeout=15)  # stop the server by its PID
        log.close()


@pytest.fixture
def dashboard_server(browser_run, tmp_path):
    """`streamlit run dashboard` reading the browser run's store."""
    with serve(browser_run[0], tmp_path / "streamlit.log") as url:
        yield url


def metric_value(page, label: str) -> str:
    metric = page.locator('[data-testid="stMetric"]', has_text=label).first
    return metric.locator('[data-testid="stMetricValue"]').inner_text().strip()


def test_predict_a_digit_in_the_browser(dashboard_server, browser_run, tmp_path):
    ARTIFACTS.mkdir(exist_ok=True)
    image = tmp_path / "digit.png"
    image.write_bytes(digit_png(0))
    # what the page must show: the same preprocessing and seeded sampling (S = 100) in this process
    module = load_model(browser_run[1], tracking_uri=browser_run[0])
    processed = inputs.image_to_model_input("digit.png", image.read_bytes(), module.preprocessing)
    expected = predictions.classify(module, processed.array[None], 100)

    with chromium_page(tmp_path / "chromium-profile") as page:
        page.goto(dashboard_server, wait_until="domcontentloaded")
        page.get_by_role("heading", name="Runs").wait_for(timeout=60_000)
        page.locator('[data-testid="stDataFrame"]').first.wait_for(timeout=60_000)
        page.get_by_text("1 of 1 runs").wait_for(timeout=30_000)
        # tick the run's row (the grid is a canvas: click its checkbox cell) to select it for the other pages
        grid = page.locator('[data-testid="stDataFrame"]').first.bounding_box()
        page.mouse.click(grid["x"] + 16, grid["y"] + 35 + 17)
        page.get_by_text("Selected 1 run(s)").wait_for(timeout=30_000)

        # to Predict through the sidebar (same session: the selection comes along)
        page.locator('[data-testid="stSidebarNav"] a', has_text="Predict").click()
        page.get_by_text("1 run(s) selected").wait_for(timeout=30_000)
        page.get_by_role("heading", name="Predict").wait_for(timeout=60_000)
        page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(str(image))
        page.locator('[data-testid="stPlotlyChart"]').first.wait_for(timeout=60_000)
        page.get_by_text("Predicted class").first.wait_for(timeout=30_000)

        shown_class = metric_value(page, "Predicted class")
        shown_entropy = float(metric_value(page, "Predictive entropy (nats)"))
        assert shown_class == expected.class_names[int(expected.predicted[0])]
        assert shown_entropy == pytest.approx(float(expected.predictive_entropy[0]), abs=1e-3)
        assert 0.0 <= shown_entropy <= np.log(10)
        assert page.locator('[data-testid="stPlotlyChart"]').count() == 2
        assert page.locator('[data-testid="stException"]').count() == 0
        page.set_viewport_size({"width": 1400, "height": 1700})  # Streamlit scrolls inside the page
        page.wait_for_timeout(1500)  # let plotly finish drawing
        page.screenshot(path=str(ARTIFACTS / "browser-predict.png"), full_page=True)


def test_compare_two_runs_on_one_upload_in_the_browser(three_kinds, tmp_path):
    """Tick the BBB and the deterministic run on Runs, upload one image on Predict: both models answer side by side."""
    from tests.dashboard.test_predict_compare import blend_png

    image = tmp_path / "blend.png"
    image.write_bytes(blend_png())
    labels = [f"digits-{k} ({three_kinds[k][:6]})" for k in ("bayes", "deterministic")]
    with serve(three_kinds["uri"], tmp_path / "streamlit.log") as url, chromium_page(tmp_path / "profile") as page:
        page.goto(url, wait_until="domcontentloaded")
        page.get_by_text("4 of 4 runs").wait_for(timeout=60_000)
        grid = page.locator('[data-testid="stDataFrame"]').first.bounding_box()
        for row in (1, 2):  # newest first: the BBB run, then the deterministic one
            page.mouse.click(grid["x"] + 16, grid["y"] + 35 * row + 17)
            page.get_by_text(f"Selected {row} run(s)").wait_for(timeout=30_000)
        page.locator('[data-testid="stSidebarNav"] a', has_text="Predict").click()
        page.get_by_role("heading", name="Predict").wait_for(timeout=60_000)
        page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(str(image))
        page.locator('[data-testid="stPlotlyChart"]').nth(1).wait_for(timeout=60_000)
        for label in labels:
            page.get_by_text(label, exact=True).first.wait_for(timeout=30_000)
        epistemic = page.locator('[data-testid="stMetric"]', has_text="Epistemic")
        assert epistemic.count() == 2
        values = [epistemic.nth(i).locator('[data-testid="stMetricValue"]').inner_text().strip() for i in range(2)]
        assert values[1] == "0.000"  # the deterministic run: no epistemic part
        assert page.locator('[data-testid="stMetric"]', has_text="Predicted class").count() == 2
        assert page.locator('[data-testid="stPlotlyChart"]').count() == 2  # grouped distribution + entropy split
        assert page.locator('[data-testid="stException"]').count() == 0
        page.set_viewport_size({"width": 1400, "height": 1700})
        page.wait_for_timeout(1500)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "browser-compare.png"), full_page=True)
