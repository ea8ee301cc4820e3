"""Helpers shared by the test suite (a plain module: test files import it, never ``conftest``)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "lightning_bnn" / "configs"


def fit_args(config: str | Path, uri: str, *extra: str) -> list[str]:
    """LightningCLI arguments for a quiet ``fit`` into the store ``uri``."""
    return [
        "fit",
        "--config",
        str(config),
        "--mlflow.tracking_uri",
        uri,
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.enable_model_summary",
        "false",
        *extra,
    ]


def fit_command(config: str | Path, uri: str, *extra: str) -> list[str]:
    """``python -m lightning_bnn fit ...`` as a subprocess command line (see :func:`fit_args`)."""
    return [sys.executable, "-m", "lightning_bnn", *fit_args(config, uri, *extra)]


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of a CLI subprocess: the repo importable, no ambient store, unbuffered output."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return {**env, **extra}


def train(config: str | Path, uri: str, *extra: str):
    """Train in-process through the real CLI; returns the finished LightningCLI."""
    from lightning_bnn.cli.app import main

    return main(fit_args(config, uri, *extra))


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, timeout: float, proc=None) -> None:
    """Wait until ``url`` answers 200 (raise if ``proc`` exits first or ``timeout`` seconds pass)."""
    import contextlib
    import time
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before {url} answered")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        time.sleep(0.25)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def stop(proc, timeout: float = 30) -> None:
    """Stop a server by its PID: SIGTERM, then SIGKILL if it has not exited after ``timeout`` seconds."""
    import subprocess

    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def assert_fused_equals_general(net, x, num_samples: int) -> None:
    """``net.forward_with_kl`` (the fused training path) and ``net(x, S)`` + ``total_kl(net)`` agree.

    Same seed, so the same noise: equal outputs and KL, and gradients within rtol 1e-4 / atol 1e-5.
    """
    import torch

    from lightning_bnn.nn.layers import total_kl

    def run(fused: bool):
        net.zero_grad()
        with torch.random.fork_rng():
            torch.manual_seed(1)
            out, kl = net.forward_with_kl(x, num_samples) if fused else (net(x, num_samples), total_kl(net))
        (out.square().sum() + 1e-3 * kl).backward()
        return out, kl, [p.grad.clone() for p in net.parameters()]

    out_f, kl_f, grads_f = run(True)
    out_g, kl_g, grads_g = run(False)
    torch.testing.assert_close(out_f, out_g)
    torch.testing.assert_close(kl_f, kl_g)
    for a, b in zip(grads_f, grads_g):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def new_store(tmp_path_factory, name: str) -> str:
    """A fresh SQLite MLflow store in a session temp folder; returns its tracking URI."""
    root = tmp_path_factory.mktemp(name)
    (root / "mlruns").mkdir()
    return f"sqlite:///{root}/mlruns/mlflow.db"


def modules_after_import(imports: str, watched: tuple[str, ...]) -> list[str]:
    """Which of ``watched`` (top-level names) a fresh interpreter has loaded after running ``imports``."""
    import json
    import subprocess

    code = f"import json, sys\n{imports}\nprint(json.dumps(sorted(k for k in {list(watched)!r} if k in sys.modules)))\n"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])
