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

from lightning_bnn.predict import MAX_SAMPLES
from tests.reliability.jobs import cli_env

#: the stated bound: peak memory growth of predicting S = MAX_SAMPLES for a batch of 16 digits
MEMORY_LIMIT_MB = 256
BATCH = 16

SCRIPT = r"""
import json, sys, time
import torch
from tests.reliability.hostile_images import peak_rss_mb
from lightning_bnn.module import BNNModule
from lightning_bnn.predict import MAX_SAMPLES

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
    from lightning_bnn.module import BNNModule

    model = BNNModule(input_shape=[4], num_outputs=3, hidden_sizes=[8]).eval()
    start = time.perf_counter()
    with pytest.raises(ValueError, match=f"num_samples must be an integer between 1 and {MAX_SAMPLES}"):
        model.sample_predictions(torch.zeros(2, 4), samples)
    assert time.perf_counter() - start < 1.0
