"""``python -m benchmarks --quick`` runs and writes the expected rows (figures are printed, not asserted)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from bnn_testing import REPO, cli_env

KEYS = {"name", "estimator", "prior", "S", "ms", "ratio_to_deterministic", "peak_mb"}


def run_module(module: str, *args: str, cwd: Path = REPO, timeout: float = 1200) -> subprocess.CompletedProcess:
    """``python -m MODULE ARGS`` from the repository's code, without an inherited MLflow store."""
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, env=cli_env(), capture_output=True, text=True, timeout=timeout
    )


def test_quick_benchmark_writes_rows(tmp_path):
    out = tmp_path / "bench.json"
    proc = run_module("benchmarks", "--quick", "--rounds", "1", "--threads", "1", "--json", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| train_step |" in proc.stdout
    data = json.loads(out.read_text())
    assert data["quick"] is True
    for key in ("torch", "python", "cpu", "torch_threads", "device"):
        assert key in data["machine"]
    rows = data["rows"]
    for row in rows:
        assert KEYS <= set(row), row
        assert math.isfinite(row["ms"]) and row["ms"] > 0, row
        assert math.isfinite(row["ratio_to_deterministic"]) and row["ratio_to_deterministic"] > 0, row
        assert row["peak_mb"] is not None and row["peak_mb"] >= 0, row
    train = {(r["estimator"], r["prior"], r["S"]) for r in rows if r["name"] == "train_step"}
    for estimator in ("reparameterization", "local", "flipout"):
        for prior in ("gaussian", "scale_mixture"):
            for s in (1, 4, 16):
                assert (estimator, prior, s) in train
    assert ("deterministic", None, 1) in train
    # the scale mixture's KL computations side by side at S=1 (issue 13): bound, fused MC, autograd MC
    kls = {(r["estimator"], r["kl"]) for r in rows if r["name"] == "train_step" and r["prior"] == "scale_mixture"}
    for estimator in ("reparameterization", "local", "flipout"):
        for kl in ("bound", "mc", "mc_autograd"):
            assert (estimator, kl) in kls
    own = {r["estimator"]: r for r in rows if r["name"] == "train_step_own_network"}
    assert set(own) == {"resnet deterministic", "resnet last-layer BBB", "resnet full BBB"}
    assert own["resnet deterministic"]["ratio_to_deterministic"] == 1.0
    predict = {(r["name"], r["estimator"], r["S"], r["batch"]) for r in rows if r["name"].startswith("predict")}
    for batch, s in ((1, 100), (1000, 100), (1, 1000)):
        assert (f"predict_{batch}x{s}", "auto", s, batch) in predict
        assert (f"predict_{batch}x{s}", "auto (cold)", s, batch) in predict
        assert (f"predict_{batch}x{s}", "deterministic", s, batch) in predict


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--threads", "0"), "--threads must be >= 1"),
        (("--seeds", "0"), "--seeds must be >= 1"),
        (("--cosine-seeds", "-1"), "--cosine-seeds must be >= 0"),
        (("--train-samples", "4,16"), "--train-samples must be integers >= 1 including 1"),
        (("--train-samples", "one"), "--train-samples must be comma-separated integers"),
    ],
)
def test_bad_options_are_refused(args, message):
    proc = run_module("benchmarks", *args)
    assert proc.returncode == 2 and message in proc.stderr


def _summary(bayes: dict, det: dict) -> dict:
    from benchmarks.fashion import _mean_sd

    diff = {}
    for k in ("acc", "nll", "ece"):
        diff[k] = _mean_sd([b - d for b, d in zip(bayes[k], det[k])])
        diff[k]["se"] = diff[k]["sd"] / math.sqrt(len(bayes[k]))
    return {
        "epochs": 3,
        "seeds": len(bayes["acc"]),
        "predictive_samples": 20,
        "bayes": {k: _mean_sd(v) for k, v in bayes.items()},
        "deterministic": {k: _mean_sd(v) for k, v in det.items()},
        "bayes_minus_deterministic": diff,
    }


def test_quality_targets_are_checked_on_the_seed_means():
    from benchmarks.fashion import quality_report, targets

    det = {"acc": [0.86, 0.87], "nll": [0.38, 0.36], "ece": [0.02, 0.01]}
    good = _summary({"acc": [0.858, 0.866], "nll": [0.37, 0.36], "ece": [0.008, 0.011]}, det)
    assert [met for _, met in targets(good)] == [True, True, True]
    # 0.6 points less accurate on average, ECE 0.0105, NLL above the deterministic network's
    bad = _summary({"acc": [0.854, 0.864], "nll": [0.38, 0.37], "ece": [0.010, 0.011]}, det)
    assert [met for _, met in targets(bad)] == [False, False, False]
    report = quality_report(bad)
    assert "2 seeds" in report and "acc 85.90 +- 0.71%" in report and report.count("NOT met") == 3
    assert "paired difference (BBB - det, +- standard error): acc -0.60 +- 0.00 points" in report


def test_profile_prints_the_groups_of_each_step():
    proc = run_module("benchmarks.profile", "--steps", "2", "--threads", "1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0] == "| group (self CPU ms per step) | deterministic | BBB local S=1 | BBB local S=4 |"
    for group in ("matrix products", "noise draws", "other", "total"):
        assert any(line.startswith(f"| {group} |") for line in lines), group
    total = next(line for line in lines if line.startswith("| total |"))
    assert all(float(cell) > 0 for cell in total.strip("|").split("|")[1:])
    assert "BBB local S=1: " in proc.stdout and "x the deterministic step (profiled)" in proc.stdout


def test_first_screen_benchmark_refuses_bad_counts():
    proc = run_module("benchmarks.first_screen", "--runs", "0")
    assert proc.returncode == 2 and "--runs and --repeats must be >= 1" in proc.stderr


@pytest.mark.slow
@pytest.mark.browser
@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="Debian's chromium is not installed")
def test_first_screen_benchmark_measures_a_cold_start(tmp_path):
    """One real run, one cold start of `streamlit run dashboard` in headless Chromium: three figures that add up."""
    import re

    proc = run_module("benchmarks.first_screen", "--runs", "1", "--repeats", "1", cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = {key: float(value) for key, value in re.findall(r"(\w+_to_\w+_s)\s+median\s+([\d.]+) s", proc.stdout)}
    assert set(figures) == {"start_to_health_s", "health_to_table_s", "start_to_table_s"}
    assert all(value > 0 for value in figures.values())
    total = figures["start_to_health_s"] + figures["health_to_table_s"]
    assert figures["start_to_table_s"] == pytest.approx(total, abs=0.02)
