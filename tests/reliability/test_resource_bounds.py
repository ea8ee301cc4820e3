"""Must hold 6: prediction with a huge S is capped, and S = MAX_SAMPLES stays within a stated memory bound.

The memory is measured in a fresh process (peak RSS of its image, ``VmHWM``) so that
nothing else the test session allocated counts. Measured on the reference machine: 80-120 MB
with chunking over samples; about 470 MB with chunking switched off
(``MAX_CHUNK_ELEMENTS`` huge), when every hidden activation of all 10,000 samples is
alive at once.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
import torch
from bnn_testing import cli_env

from lightning_bnn.nn.predictive import MAX_SAMPLES

#: the stated bound: peak memory growth of predicting S = MAX_SAMPLES for a batch of 16 digits
MEMORY_LIMIT_MB = 256
BATCH = 16

SCRIPT = r"""
import json, sys, time
import torch
from tests.reliability.hostile_images import peak_rss_mb
from lightning_bnn.training.module import BNNModule
from lightning_bnn.nn.predictive import MAX_SAMPLES

torch.manual_seed(0)
model = BNNModule(input_shape=[64], num_outputs=10, hidden_sizes=[128, 128]).eval()
x = torch.randn(int(sys.argv[1]), 64)
model.sample_predictions(x, 2)  # warm up allocators and kernels
before = peak_rss_mb()
start = time.perf_counter()
probs = model.sample_predictions(x, MAX_SAMPLES)
seconds = time.perf_counter() - start
peak = peak_rss_mb()
print(json.dumps({"shape": list(probs.shape), "delta_mb": peak - before, "seconds": seconds,
                  "output_mb": probs.numel() * 4 / 2**20, "finite": bool(torch.isfinite(probs).all())}))
"""


def test_max_samples_prediction_stays_under_memory_limit():
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(BATCH)], env=cli_env(), capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["shape"] == [MAX_SAMPLES, BATCH, 10] and result["finite"]
    assert result["delta_mb"] < MEMORY_LIMIT_MB, result


@pytest.mark.parametrize("samples", [0, -1, MAX_SAMPLES + 1, 10**7, 10**12, 2.5, True, "100"])
def test_sample_count_outside_the_cap_is_refused_at_once(samples):
    from lightning_bnn.training.module import BNNModule

    model = BNNModule(input_shape=[4], num_outputs=3, hidden_sizes=[8]).eval()
    start = time.perf_counter()
    with pytest.raises(ValueError, match=f"num_samples must be an integer between 1 and {MAX_SAMPLES}"):
        model.sample_predictions(torch.zeros(2, 4), samples)
    assert time.perf_counter() - start < 1.0


def test_predict_page_worst_case_work_is_bounded_in_time():
    """Responsiveness: the Predict page's largest allowed requests finish in bounded time.

    The page caps its work (S <= 1000, at most 20 images, at most MAX_CSV_ROWS CSV rows) and
    runs it in the session's own script thread, so other sessions and the server stay
    responsive while it predicts. Here the two largest requests run on the paper's
    784-400-400-10 network and on a tabular regression model; each must finish well inside
    the stated bound (measured on the 2-core machine with a training job beside it: 0.83 s and 1.70 s).
    """
    from dashboard import inputs, predictions
    from lightning_bnn.training.module import BNNModule

    bound_s = 20.0
    with torch.random.fork_rng():
        torch.manual_seed(0)
        images = BNNModule(input_shape=[1, 28, 28], num_outputs=10, hidden_sizes=[400, 400]).eval()
        tabular = BNNModule(input_shape=[10], num_outputs=1, task="regression", hidden_sizes=[64, 64]).eval()
        start = time.perf_counter()
        result = predictions.classify(images, torch.rand(inputs.MAX_IMAGES, 1, 28, 28).numpy(), predictions.MAX_SAMPLES)
        image_s = time.perf_counter() - start
        start = time.perf_counter()
        table = predictions.regress(tabular, torch.randn(inputs.MAX_CSV_ROWS, 10).numpy(), predictions.MAX_SAMPLES)
        csv_s = time.perf_counter() - start
    print(f"20 images x S=1000: {image_s:.2f} s; {inputs.MAX_CSV_ROWS} rows x S=1000: {csv_s:.2f} s")
    assert result.mean.shape == (inputs.MAX_IMAGES, 10)
    assert len(table.mean) == inputs.MAX_CSV_ROWS
    assert image_s < bound_s and csv_s < bound_s
