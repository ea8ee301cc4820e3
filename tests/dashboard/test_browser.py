"""End to end in a real browser: `streamlit run dashboard` + Debian's Chromium driven by Playwright.

Set ``UPDATE_SCREENSHOTS=1`` to also write the README's screenshots (docs/img/runs.png, docs/img/predict.png).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from bnn_testing import CONFIGS, free_port, stop, train, wait_http

from dashboard import inputs, predictions
from lightning_bnn import load_model
from tests.dashboard.test_pages import digit_png

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = REPO / "test-artifacts"
SCREENSHOTS = REPO / "docs" / "img"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed"),
]


@pytest.fixture
def browser_run(request, tmp_path_factory) -> tuple[str, str]:
    """(tracking_uri, run_id) shown in the browser: the small shared digits run, or for the README's
    screenshots (UPDATE_SCREENSHOTS=1) the shipped digits config trained in full (seconds)."""
    if os.environ.get("UPDATE_SCREENSHOTS") != "1":
        return request.getfixturevalue("digits_run")
    root = tmp_path_factory.mktemp("readme_store")
    uri = f"sqlite:///{root}/mlruns/mlflow.db"
    cli = train(CONFIGS / "digits.yaml", uri)
    return uri, cli.trainer.logger.run_id


@pytest.fixture
def dashboard_server(browser_run, tmp_path):
    """`streamlit run dashboard` on 127.0.0.1 and a free port, reading the browser run's store."""
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": browser_run[0], "PYTHONUNBUFFERED": "1"}
    log = open(tmp_path / "streamlit.log", "wb")  # noqa: SIM115 - closed below
    command = [sys.executable, "-m", "streamlit", "run", "dashboard", "--server.address", "127.0.0.1",
               "--server.port", str(port), "--server.headless", "true", "--server.fileWatcherType", "none",
               "--browser.gatherUsageStats", "false"]  # fmt: skip
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        try:
            wait_http(f"{url}/_stcore/health", timeout=60, proc=process)
        except (RuntimeError, TimeoutError) as err:
            raise RuntimeError(
                f"streamlit did not start: {err}\n{(tmp_path / 'streamlit.log').read_text()[-3000:]}"
            ) from err
        yield url
    finally:
        stop(process, timeout=15)  # stop the server by its PID
        log.close()


def metric_value(page, label: str) -> str:
    metric = page.locator('[data-testid="stMetric"]', has_text=label).first
    return metric.locator('[data-testid="stMetricValue"]').inner_text().strip()


def test_predict_a_digit_in_the_browser(dashboard_server, browser_run, tmp_path):
    from playwright.sync_api import sync_playwright

    update = os.environ.get("UPDATE_SCREENSHOTS") == "1"
    ARTIFACTS.mkdir(exist_ok=True)
    image = tmp_path / "digit.png"
    image.write_bytes(digit_png(0))
    # what the page must show: the same preprocessing and seeded sampling (S = 100) in this process
    module = load_model(browser_run[1], tracking_uri=browser_run[0])
    processed = inputs.image_to_model_input("digit.png", image.read_bytes(), module.preprocessing)
    expected = predictions.classify(module, processed.array[None], 100)

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000},
        )
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.goto(dashboard_server, wait_until="domcontentloaded")
            page.get_by_role("heading", name="Runs").wait_for(timeout=60_000)
            page.locator('[data-testid="stDataFrame"]').first.wait_for(timeout=60_000)
            page.get_by_text("1 of 1 runs").wait_for(timeout=30_000)
            # tick the run's row (the grid is a canvas: click its checkbox cell) to select it for the other pages
            grid = page.locator('[data-testid="stDataFrame"]').first.bounding_box()
            page.mouse.click(grid["x"] + 16, grid["y"] + 35 + 17)
            page.get_by_text("Selected 1 run(s)").wait_for(timeout=30_000)
            if update:
                SCREENSHOTS.mkdir(parents=True, exist_ok=True)
                page.wait_for_timeout(1000)
                page.screenshot(path=str(SCREENSHOTS / "runs.png"))

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
            if update:
                page.screenshot(path=str(SCREENSHOTS / "predict.png"), full_page=True)
        finally:
            context.close()
