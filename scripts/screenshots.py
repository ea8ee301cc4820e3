"""The README's dashboard screenshots: ``python scripts/screenshots.py [--epochs N] [--out docs/img]``.

1. Trains the shipped digits config (``lightning_bnn/configs/digits.yaml``) three times into a
   temporary store: Bayes by Backprop, the deterministic network and MC dropout (same seed, data
   and architecture; ``--epochs`` shortens them for a try-out).
2. Starts ``streamlit run dashboard`` on 127.0.0.1 and a free port and opens it in headless Chromium
   (Playwright, ``/usr/bin/chromium``).
3. ``runs.png``: the Runs page with the three runs ticked (they go on to Predict).
4. ``predict.png``: the Predict page comparing the three on an out-of-distribution upload, an
   image of uniform noise (:func:`noise_image`): the deterministic network answers with one number
   and no epistemic part; the BBB and MC-dropout networks spread their answers over the samples.

The sidebar (which shows the store's temporary path) is collapsed before each screenshot. The
PNGs are quantised to 256 colours to keep them small. The script prints each model's numbers
for the upload (S = 100, the page's seed), which the README's text may quote.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.first_screen import chromium, dashboard, wait_health  # noqa: E402

#: (layer type, run name), trained in this order: the Runs table lists the last first
RUNS = [("mc_dropout", "digits-mc-dropout"), ("deterministic", "digits-deterministic"), ("bayes", "digits-bbb")]


def noise_image(size: int = 64, seed: int = 0) -> bytes:
    """An out-of-distribution upload: ``size`` x ``size`` uniform gray noise (seeded), as a PNG."""
    from PIL import Image

    buffer = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def train_runs(uri: str, epochs: int | None) -> dict[str, str]:
    """The three runs (those of a kept store are reused); returns layer type -> run id."""
    from mlflow import MlflowClient

    from lightning_bnn.cli.app import main

    client = MlflowClient(uri)
    found = client.search_runs([e.experiment_id for e in client.search_experiments()])
    kept = {r.info.run_name: r.info.run_id for r in found if r.info.status == "FINISHED"}
    if all(name in kept for _, name in RUNS) and len(found) == len(RUNS):
        return {layer_type: kept[name] for layer_type, name in RUNS}
    ids = {}
    for layer_type, name in RUNS:
        print(f"training {name}", file=sys.stderr, flush=True)
        args = ["fit", "--config", str(REPO / "lightning_bnn" / "configs" / "digits.yaml"), "--mlflow.tracking_uri",
                uri, "--mlflow.run_name", name, "--model.layer_type", layer_type,
                "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]  # fmt: skip
        if epochs:
            args += ["--trainer.max_epochs", str(epochs)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ids[layer_type] = main(args).trainer.logger.run_id
    return ids


def print_numbers(uri: str, ids: dict[str, str], image: bytes) -> None:
    """Each model's answer to the upload, as the page computes it."""
    from dashboard import inputs, predictions
    from lightning_bnn import load_model

    for layer_type, run_id in ids.items():
        module = load_model(run_id, tracking_uri=uri)
        x = inputs.image_to_model_input("upload.png", image, module.preprocessing).array[None]
        r = predictions.classify(module, x, 100)
        k = int(r.predicted[0])
        print(f"{layer_type:>13}: class {r.class_names[k]} p = {r.mean[0, k]:.3f} ± {r.std[0, k]:.3f}, entropy "
              f"{r.predictive_entropy[0]:.3f} = aleatoric {r.expected_entropy[0]:.3f} + epistemic "
              f"{r.mutual_information[0]:.3f} nats")  # fmt: skip


def save_small(page, path: Path) -> None:
    """A full-page screenshot, quantised to 256 colours."""
    from PIL import Image

    image = Image.open(io.BytesIO(page.screenshot(full_page=True))).convert("RGB")
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    print(f"wrote {path} ({path.stat().st_size // 1024} KiB)", file=sys.stderr)


def collapse_sidebar(page) -> None:
    """Hide the sidebar (it shows the store's temporary path)."""
    page.locator('[data-testid="stSidebar"]').hover()  # the button shows while the pointer is on the sidebar
    page.locator('[data-testid="stSidebarCollapseButton"] button').first.click()
    page.locator('[data-testid="stSidebar"][data-collapsed="true"]').wait_for(state="attached", timeout=10_000)
    page.wait_for_timeout(800)


def main(argv: list[str] | None = None) -> int:
    """Train, serve, screenshot; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python scripts/screenshots.py", description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, help="train for N epochs instead of the config's 30 (a try-out)")
    parser.add_argument("--out", default=str(REPO / "docs" / "img"), help="folder of the PNGs (default docs/img)")
    parser.add_argument("--store", help="keep the runs in this folder, reused next time (default: a temp folder)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    image = noise_image()
    with tempfile.TemporaryDirectory(prefix="screenshots-") as tmp:
        root = Path(args.store or tmp).resolve()
        (root / "mlruns").mkdir(parents=True, exist_ok=True)
        uri = f"sqlite:///{root}/mlruns/mlflow.db"
        ids = train_runs(uri, args.epochs)
        print_numbers(uri, ids, image)
        (root / "noise.png").write_bytes(image)
        with chromium(Path(tmp) / "profile", {"width": 1400, "height": 1000}) as page:
            with dashboard(uri, Path(tmp) / "streamlit.log") as (process, url, _):
                wait_health(url, process)
                page.goto(url, wait_until="domcontentloaded")
                page.get_by_text(f"{len(RUNS)} of {len(RUNS)} runs").wait_for(timeout=120_000)
                grid = page.locator('[data-testid="stDataFrame"]').first.bounding_box()
                for row in range(len(RUNS)):  # tick each row's checkbox cell (the grid is a canvas)
                    page.mouse.click(grid["x"] + 16, grid["y"] + 35 * (row + 1) + 17)
                    page.get_by_text(f"Selected {row + 1} run(s)").wait_for(timeout=30_000)
                collapse_sidebar(page)
                page.set_viewport_size({"width": 1400, "height": 700})
                page.wait_for_timeout(1000)
                save_small(page, out / "runs.png")
                page.locator('[data-testid="stExpandSidebarButton"]').first.click(force=True)
                page.locator('[data-testid="stSidebarNav"] a', has_text="Predict").click()
                page.get_by_role("heading", name="Predict").wait_for(timeout=60_000)
                page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(
                    str(root / "noise.png")
                )
                page.locator('[data-testid="stPlotlyChart"]').nth(1).wait_for(timeout=120_000)
                collapse_sidebar(page)
                page.set_viewport_size({"width": 1400, "height": 1750})
                page.wait_for_timeout(2000)  # let plotly finish drawing
                save_small(page, out / "predict.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
