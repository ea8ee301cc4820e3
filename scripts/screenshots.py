"""The README's dashboard screenshots: ``python scripts/screenshots.py [--epochs N] [--out docs/img]``.

1. Trains the shipped digits config (``lightning_bnn/configs/digits.yaml``) three times into a
   temporary store: Bayes by Backprop, the deterministic network and MC dropout (same seed, data
   and architecture; ``--epochs`` shortens them for a try-out).
2. Starts ``streamlit run dashboard`` on 127.0.0.1 and a free port and opens it in headless Chromium
   (Playwright, ``/usr/bin/chromium``).
3. ``runs.png``: the Runs page with the three runs ticked.
4. ``predict.png``: the Predict page comparing the three on an ambiguous upload, a test-set 3
   drawn over a test-set 8 (:func:`ambiguous_digit`): the deterministic network answers with one
   number and no epistemic part, the BBB and MC-dropout networks spread their answers.

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


def ambiguous_digit(a: int = 3, b: int = 8) -> bytes:
    """Test-set digits ``a`` and ``b`` of scikit-learn's digits drawn over each other, 64x64, dark on light (PNG)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    data = load_digits()
    first = data.images[int(np.flatnonzero(data.target == a)[-1])]  # the last of each class: in the test split
    second = data.images[int(np.flatnonzero(data.target == b)[-1])]
    mixed = np.maximum(first, second) / 16.0
    buffer = io.BytesIO()
    Image.fromarray((255 - np.kron(mixed, np.ones((8, 8))) * 255).astype(np.uint8)).save(buffer, "PNG")
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
    page.locator('[data-testid="stSidebarCollapseButton"] button').first.click(force=True)
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
    image = ambiguous_digit()
    with tempfile.TemporaryDirectory(prefix="screenshots-") as tmp:
        root = Path(args.store or tmp).resolve()
        (root / "mlruns").mkdir(parents=True, exist_ok=True)
        uri = f"sqlite:///{root}/mlruns/mlflow.db"
        ids = train_runs(uri, args.epochs)
        print_numbers(uri, ids, image)
        (root / "three-over-eight.png").write_bytes(image)
        with chromium(Path(tmp) / "profile", {"width": 1400, "height": 1000}) as page:
            with dashboard(uri, Path(tmp) / "streamlit.log") as (process, url, _):
                wait_health(url, process)
                page.goto(url, wait_until="domcontentloaded")
                page.get_by_text(f"{len(RUNS)} of {len(RUNS)} runs").wait_for(timeout=120_000)
                grid = page.locator('[data-testid="stDataFrame"]').first.bounding_box()
                for row in range(len(RUNS)):  # tick each row's checkbox cell (the grid is a canvas)
                    page.mouse.click(grid["x"] + 16, grid["y"] + 35 * (row + 1) + 17)
                    page.get_by_text(f"Selected {row + 1} run(s)").wait_for(timeout=30_000)
                page.locator('[data-testid="stSidebarNav"] a', has_text="Predict").click()
                page.get_by_role("heading", name="Predict").wait_for(timeout=60_000)
                page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(
                    str(root / "three-over-eight.png")
                )
                page.locator('[data-testid="stPlotlyChart"]').nth(1).wait_for(timeout=120_000)
                collapse_sidebar(page)
                page.set_viewport_size({"width": 1400, "height": 1500})
                page.wait_for_timeout(2000)  # let plotly finish drawing
                save_small(page, out / "predict.png")
                page.locator('[data-testid="stExpandSidebarButton"]').first.click(force=True)
                page.locator('[data-testid="stSidebarNav"] a', has_text="Runs").click()
                page.get_by_text(f"Selected {len(RUNS)} run(s)").wait_for(timeout=60_000)
                collapse_sidebar(page)
                page.set_viewport_size({"width": 1400, "height": 700})
                page.wait_for_timeout(1000)
                save_small(page, out / "runs.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
