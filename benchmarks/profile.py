"""Where a training step's time goes: ``python -m benchmarks.profile [--steps N] [--threads N]``.

Runs the benchmark's deterministic step and the Bayes-by-Backprop step (local estimator,
Gaussian prior) at S = 1 and S = 4 under ``torch.profiler`` and prints the self CPU time
per step of each group of operators. Self times partition the profiled time, so the
groups add up to the step (plus the profiler's own overhead per operator, which inflates
steps made of many small operators: read the shares, not the totals).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks import micro

#: group -> operator names (exact) whose self time it collects; the rest is "other"
GROUPS: dict[str, tuple[str, ...]] = {
    "matrix products": ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm"),
    "Adam (fused) and zero_grad": (
        "aten::_fused_adam_",
        "Optimizer.step#Adam.step",
        "Optimizer.zero_grad#Adam.zero_grad",
    ),
    "noise draws": ("aten::normal_",),
    "softplus, sigmoid, log (per weight)": ("aten::softplus", "aten::sigmoid", "aten::log"),
    "Python of the fused autograd node": ("LocalLinearGaussian", "LocalLinearGaussianBackward"),
}


def grouped_ms(step: Callable[[], None], steps: int) -> dict[str, float]:
    """Self CPU milliseconds per step of each group (and ``other``, ``total``)."""
    for _ in range(10):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    out = dict.fromkeys([*GROUPS, "other"], 0.0)
    lookup = {name: group for group, names in GROUPS.items() for name in names}
    for event in prof.key_averages():
        out[lookup.get(event.key, "other")] += event.self_cpu_time_total / 1e3 / steps
    out["total"] = sum(out.values())
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50, help="profiled steps per configuration (default 50)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.threads < 1:
        parser.error("--steps and --threads must be >= 1")
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    columns = {
        "deterministic": micro.deterministic_step(device)[0],
        "BBB local S=1": micro.bayes_step("local", "gaussian", 1, device)[0],
        "BBB local S=4": micro.bayes_step("local", "gaussian", 4, device)[0],
    }
    results = {name: grouped_ms(step, args.steps) for name, step in columns.items()}
    print("| group (self CPU ms per step) | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for group in [*GROUPS, "other", "total"]:
        cells = []
        for name in columns:
            ms, total = results[name][group], results[name]["total"]
            cells.append(f"{ms:.2f}" if group == "total" else f"{ms:.2f} ({100 * ms / total:.0f}%)")
        print(f"| {group} | " + " | ".join(cells) + " |")
    det_total = results["deterministic"]["total"]
    for name in list(columns)[1:]:
        print(f"{name}: {results[name]['total'] / det_total:.2f}x the deterministic step (profiled)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
