"""Timing, memory and reporting helpers shared by the benchmark suites.

Timing: the functions of one comparison are run **interleaved** (round robin, each
``inner`` times per round, after ``warmup`` calls each) and each reports the median
of its calls. The CPU this project is measured on is shared and noisy: interleaving
exposes every function to the same background load, so that the *ratios* between
functions measured in one run are meaningful even when absolute times drift.

Memory (``peak_mb``): the peak of the bytes held by tensors that one call allocates
beyond those alive when it starts (activations, gradients, noise, temporaries,
sampled weights), in MiB. On CPU it is read from the allocation events that
``torch.profiler`` records with ``profile_memory=True`` (tracemalloc does not see
torch's allocator, and process RSS mixes in the allocator's caching and the Python
heap); on CUDA from ``torch.cuda.max_memory_allocated``. Parameters, and optimizer
state created before the call, are not counted: they are reported once per model as
``state_mb``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from lightning_bnn.tracking.store import code_version

MIB = 1024.0 * 1024.0


@dataclass
class Row:
    """One line of the results table (and of the JSON)."""

    name: str
    estimator: str
    prior: str | None
    S: int
    ms: float
    ratio_to_deterministic: float | None
    peak_mb: float | None
    batch: int | None = None
    ratio_to_s1: float | None = None
    min_ms: float | None = None
    cpu_ms: float | None = None
    cpu_ratio_to_deterministic: float | None = None
    note: str = ""
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """Plain-JSON form; ``extra`` keys are merged in."""
        out = asdict(self)
        out.update(out.pop("extra"))
        return out


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels (CUDA); a no-op on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Timing:
    """Milliseconds per call: median and best wall time, and median CPU time of the process."""

    ms: float
    min_ms: float
    cpu_ms: float


def interleaved_timings(
    functions: dict[str, Callable[[], object]],
    device: torch.device,
    rounds: int,
    warmup: int = 2,
    inner: int = 1,
) -> dict[str, Timing]:
    """Time each function, round robin: median and best wall time, median process CPU time.

    The CPU time (``time.process_time``, all threads of the process) is less sensitive to
    other processes than wall time: on an oversubscribed machine a 2-thread op waits for
    both of its threads to be scheduled, which inflates wall time by whole time slices.

    Args:
        functions: name -> zero-argument callable (one training step, one sampling call...).
        device: where the work runs (CUDA is synchronised around each call).
        rounds: rounds of the round robin.
        warmup: untimed calls of each function first.
        inner: consecutive timed calls of each function per round.
    """
    for fn in functions.values():
        for _ in range(warmup):
            fn()
    synchronize(device)
    wall: dict[str, list[float]] = {name: [] for name in functions}
    cpu: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(rounds):
        for name, fn in functions.items():
            for _ in range(inner):
                start, start_cpu = time.perf_counter(), time.process_time()
                fn()
                synchronize(device)
                wall[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - start_cpu)
    return {
        name: Timing(1e3 * statistics.median(wall[name]), 1e3 * min(wall[name]), 1e3 * statistics.median(cpu[name]))
        for name in functions
    }


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence the profiler's native start/stop lines (file descriptor 2) for a moment."""
    try:
        saved = os.dup(2)
    except OSError:  # pragma: no cover - no stderr
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _cpu_allocation_events(prof: torch.profiler.profile) -> list[tuple[int, int]]:
    from torch._C._profiler import _EventType

    events: list[tuple[int, int]] = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        if node.tag == _EventType.Allocation and node.extra_fields.device.type == "cpu":
            events.append((node.start_time_ns, node.extra_fields.alloc_size))
        stack.extend(node.children)
    events.sort()
    return events


def peak_memory_mb(fn: Callable[[], object], device: torch.device) -> float:
    """Peak MiB of tensor memory that one call of ``fn`` holds beyond what was alive before it."""
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - before) / MIB
    from torch.profiler import ProfilerActivity, profile

    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    current = peak = 0
    for _, size in _cpu_allocation_events(prof):
        current += size
        peak = max(peak, current)
    return peak / MIB


def tensors_mb(tensors: list[torch.Tensor]) -> float:
    """MiB held by a list of tensors (parameters, optimizer state)."""
    return sum(t.numel() * t.element_size() for t in tensors) / MIB


def state_mb(model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None) -> float:
    """MiB of parameters, plus the optimizer's state tensors if given."""
    tensors = list(model.parameters())
    if optimizer is not None:
        for state in optimizer.state.values():
            tensors += [v for v in state.values() if isinstance(v, torch.Tensor)]
    return tensors_mb(tensors)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(device: torch.device, threads: int) -> dict:
    """The machine, versions and load the figures were measured with."""
    import lightning
    import numpy

    info = {
        "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "host": platform.node(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": threads,
        "device": str(device),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "git_commit": code_version(),
        "load_average_start": [round(v, 2) for v in os.getloadavg()],
    }
    try:
        import mlflow

        info["mlflow"] = mlflow.__version__
    except ImportError:  # pragma: no cover - mlflow is a dependency
        pass
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def _fmt(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.{digits}f}"


def markdown_table(rows: list[Row]) -> str:
    """The rows as a Markdown table."""
    header = (
        "| benchmark | estimator | prior | S | batch | ms (median) | x det | x own S=1 | ms (best) "
        "| CPU ms | x det (CPU) | peak MiB | note |"
    )
    lines = [header, "|" + "---|" * 13]
    for r in rows:
        lines.append(
            f"| {r.name} | {r.estimator} | {r.prior or '-'} | {r.S} | {r.batch if r.batch is not None else '-'} "
            f"| {_fmt(r.ms)} | {_fmt(r.ratio_to_deterministic)} | {_fmt(r.ratio_to_s1)} | {_fmt(r.min_ms)} "
            f"| {_fmt(r.cpu_ms)} | {_fmt(r.cpu_ratio_to_deterministic)} | {_fmt(r.peak_mb, 1)} | {r.note} |"
        )
    return "\n".join(lines)


def write_json(path: str | Path, machine: dict, rows: list[Row], extra: dict) -> None:
    """Write ``{"machine": ..., "rows": [...], **extra}`` to ``path``."""
    payload = {"machine": machine, "rows": [r.to_dict() for r in rows], **extra}
    Path(path).write_text(json.dumps(payload, indent=2, default=float))
