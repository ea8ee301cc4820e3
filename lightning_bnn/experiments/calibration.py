"""Does the Bayesian network pay for itself? BBB (the shipped recipe) vs a point estimate vs MC dropout, over seeds.

::

    python -m lightning_bnn.experiments calibration [--seeds 0 1 2] [--epochs 30] [--jobs 2] [--quick]
        [--tracking-uri URI] [--doc docs/experiments.md]

Each model is trained ``--epochs`` epochs per seed through the real CLI (``configs/experiments/
fashion_mnist.yaml`` plus one variant config: ``bbb_recipe.yaml``, ``deterministic.yaml``,
``mc_dropout.yaml``), keeps its best-validation-NLL epoch (``fit``'s default) and is tested there:
error, NLL, ECE, Brier, AURC, and OOD AUROCs by predictive entropy (H) and mutual information (MI)
against each default OOD set (:mod:`lightning_bnn.evaluation.ood`). The table gives mean ± standard
error over the seeds (SE = sample sd / sqrt(n)) and checks the targets of :data:`TARGETS`.

``--quick`` (for CI): the bundled digits data, MLP 64-256-256-10, 30 epochs (15 of them the
recipe's pretraining), two seeds.
Runs go to the MLflow experiment ``calibration-<dataset>``; the table replaces the block between
``<!-- experiments:calibration:start/end -->`` (``calibration-quick``) of ``--doc``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import math
import multiprocessing
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from lightning_bnn.experiments.paper import CONFIGS, EXPERIMENT_CONFIGS, train_run, write_section
from lightning_bnn.tracking.experiment_runs import run_metrics
from lightning_bnn.tracking.store import resolve_tracking_uri

#: model -> (label, variant config)
MODELS = {
    "bbb": ("BBB (recipe)", "bbb_recipe.yaml"),
    "deterministic": ("deterministic", "deterministic.yaml"),
    "mc_dropout": ("MC dropout", "mc_dropout.yaml"),
}
#: CLI arguments of the reduced version (on top of configs/digits.yaml), for every model
QUICK_ARGS = ("--model.hidden_sizes", "[256,256]", "--model.num_samples_eval", "10")
#: (column, metric, digits, scale): test error is 1 - accuracy, in %
COLUMNS = (
    ("test error %", "test/error", 2, 100.0),
    ("NLL", "test/nll", 4, 1.0),
    ("ECE", "test/ece", 4, 1.0),
    ("Brier", "test/brier", 4, 1.0),
    ("AURC", "test/aurc", 4, 1.0),
)


@dataclass(frozen=True)
class Estimate:
    """Mean and standard error of one metric over seeds."""

    mean: float
    se: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Estimate:
        """Mean and SE = sample standard deviation / sqrt(n) (0 for a single value)."""
        values = [float(v) for v in values]
        n = len(values)
        mean = sum(values) / n
        var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else 0.0
        return cls(mean, math.sqrt(var / n), n)

    def text(self, digits: int, scale: float = 1.0) -> str:
        """``mean ± se`` scaled (e.g. to percent)."""
        return f"{self.mean * scale:.{digits}f} ± {self.se * scale:.{digits}f}"


def summarise(runs: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, Estimate]]:
    """Per model, per metric: the :class:`Estimate` over its runs; adds ``test/error`` = 1 - ``test/acc``."""
    out = {}
    for model, rows in runs.items():
        rows = [{**r, "test/error": 1.0 - r["test/acc"]} if "test/acc" in r else r for r in rows]
        keys = sorted(set.intersection(*(set(r) for r in rows))) if rows else []
        out[model] = {k: Estimate.of([r[k] for r in rows]) for k in keys}
    return out


def ood_sets(summary: dict[str, dict[str, Estimate]]) -> list[str]:
    """The OOD sets every model was scored on."""
    names = [
        {k.removeprefix("test/ood_auroc_entropy_") for k in metrics if k.startswith("test/ood_auroc_entropy_")}
        for metrics in summary.values()
    ]
    return sorted(set.intersection(*names)) if names else []


def lower_by_two_se(a: Estimate, b: Estimate) -> bool:
    """``a`` lower than ``b`` by more than two standard errors of the difference, sqrt(se_a^2 + se_b^2)."""
    return b.mean - a.mean > 2.0 * math.hypot(a.se, b.se)


def targets(summary: dict[str, dict[str, Estimate]]) -> list[tuple[str, str, bool]]:
    """Issue 13's targets: (target, measured, met) for BBB against the deterministic network and MC dropout."""
    bbb, det, mcd = summary["bbb"], summary["deterministic"], summary["mc_dropout"]
    rows = []
    gap = (bbb["test/error"].mean - det["test/error"].mean) * 100
    rows.append(("BBB test error <= deterministic + 0.5 points", f"{gap:+.2f} points", gap <= 0.5 + 1e-9))
    for label, key in (("NLL", "test/nll"), ("ECE", "test/ece"), ("AURC", "test/aurc")):
        diff, se = det[key].mean - bbb[key].mean, math.hypot(det[key].se, bbb[key].se)
        measured = f"deterministic - BBB = {diff:.4f}, 2 SE = {2 * se:.4f}"
        rows.append((f"BBB {label} lower than deterministic by > 2 SE", measured, lower_by_two_se(bbb[key], det[key])))
    for name in ood_sets(summary):
        key = f"test/ood_auroc_mi_{name}"
        ours, theirs = bbb[key].mean, mcd[key].mean
        rows.append((f"BBB MI AUROC >= MC dropout's on {name}", f"{ours:.3f} vs {theirs:.3f}", ours >= theirs))
    if "noise" in ood_sets(summary):
        value = bbb["test/ood_auroc_entropy_noise"].mean
        rows.append(("BBB entropy AUROC on uniform noise >= 0.9", f"{value:.3f}", value >= 0.9))
    return rows


def table(
    summary: dict[str, dict[str, Estimate]],
    runs: dict[str, list[str]],
    labels: dict[str, str] | None = None,
    target_rows: list[tuple[str, str, bool]] | None = None,
) -> str:
    """The markdown tables: quality (mean ± SE), OOD AUROCs (H / MI), and the targets.

    ``labels`` name the models (default: :data:`MODELS`' labels); ``target_rows`` default to :func:`targets`.
    """
    labels = labels or {model: label for model, (label, _) in MODELS.items()}
    header = ["model", *(c[0] for c in COLUMNS), "runs"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model, metrics in summary.items():
        cells = [labels[model]]
        cells += [metrics[key].text(digits, scale) if key in metrics else "-" for _, key, digits, scale in COLUMNS]
        cells.append(" ".join(f"`{r[:8]}`" for r in runs[model]))
        lines.append("| " + " | ".join(cells) + " |")
    names = ood_sets(summary)
    lines += ["", "| model | " + " | ".join(f"AUROC {n} (H / MI)" for n in names) + " |"]
    lines.append("|" + "---|" * (len(names) + 1))
    for model, metrics in summary.items():
        cells = [labels[model]]
        for n in names:
            h, mi = metrics[f"test/ood_auroc_entropy_{n}"], metrics[f"test/ood_auroc_mi_{n}"]
            cells.append(f"{h.text(3)} / {mi.text(3)}")
        lines.append("| " + " | ".join(cells) + " |")
    rows = targets(summary) if target_rows is None else target_rows
    if rows:
        lines += ["", "| target | measured | met |", "|---|---|---|"]
        lines += [f"| {name} | {measured} | {'yes' if met else '**no**'} |" for name, measured, met in rows]
    return "\n".join(lines)


def _train_one(job: tuple) -> tuple[str, float]:
    torch.set_num_threads(1)
    return train_run(*job)


def _train_all(jobs: list[tuple], processes: int) -> list[tuple[str, float]]:
    """Run :func:`train_run` on each job's arguments, ``processes`` at a time (1 torch thread each when > 1)."""
    if processes <= 1:
        return [train_run(*job) for job in jobs]
    context = multiprocessing.get_context("spawn")  # a fresh interpreter per run: no state shared with this one
    with concurrent.futures.ProcessPoolExecutor(processes, mp_context=context, max_tasks_per_child=1) as pool:
        return list(pool.map(_train_one, jobs))


@dataclass
class Results:
    """Per model: the test metrics and run ids of its seeds; the summed wall and CPU time of all runs."""

    metrics: dict[str, list[dict[str, float]]]
    run_ids: dict[str, list[str]]
    wall: float
    cpu: float


def train_models(jobs: list[tuple], uri: str, processes: int, tag: str) -> Results:
    """Train each ``(model, seed, train_run arguments)`` job, ``processes`` at a time; collect their metrics."""
    results = Results({}, {}, 0.0, 0.0)
    for (model, seed, _), (run_id, seconds) in zip(jobs, _train_all([j[2] for j in jobs], processes), strict=True):
        values = run_metrics(uri, run_id)
        results.metrics.setdefault(model, []).append(values)
        results.run_ids.setdefault(model, []).append(run_id)
        results.wall += seconds
        results.cpu += values.get("cpu_time_s", 0.0)
        print(f"[{tag}] {model} seed {seed}: acc={values.get('test/acc')} {seconds:.0f}s {run_id}", flush=True)
    return results


def run(
    uri: str, seeds: Sequence[int], epochs: int | None = None, quick: bool = False, jobs: int = 1
) -> tuple[str, dict[str, dict[str, Estimate]]]:
    """Train every model for every seed (``jobs`` runs at a time); return (markdown, summary)."""
    if quick:
        base, dataset, epochs = CONFIGS / "digits.yaml", "digits", epochs or 30
        extra = list(QUICK_ARGS)
    else:
        base, dataset, extra = EXPERIMENT_CONFIGS / "fashion_mnist.yaml", "fashion_mnist", []
        epochs = epochs or 30
    experiment = f"calibration-{dataset}"
    jobs_list = []
    for model in MODELS:
        for seed in seeds:
            args = [*extra, "--trainer.max_epochs", str(epochs), "--seed_everything", str(seed)]
            if quick and model == "bbb":  # the recipe's pretraining, scaled to the short run
                args += ["--model.pretrain_epochs", str(epochs // 2)]
            configs = [base, EXPERIMENT_CONFIGS / MODELS[model][1]]
            jobs_list.append((model, seed, (configs, uri, experiment, f"{model}-seed{seed}", *args)))
    results = train_models(jobs_list, uri, jobs, "calibration")
    summary = summarise(results.metrics)
    command = "python -m lightning_bnn.experiments calibration" + (" --quick" if quick else "")
    if list(seeds) != [0, 1, 2] and not quick:
        command += " --seeds " + " ".join(map(str, seeds))
    if not quick and epochs != 30:
        command += f" --epochs {epochs}"
    intro = (
        f"Data: {dataset}; {len(seeds)} seeds ({', '.join(map(str, seeds))}) per model, {epochs} epochs each, "
        f"tested at the best-validation-NLL epoch; mean ± SE over the seeds. Command: `{command}`. "
        f"Total {results.wall / 60:.1f} min wall, {results.cpu / 60:.1f} min CPU."
    )
    return intro + "\n\n" + table(summary, results.run_ids), summary


def main(argv: list[str] | None = None) -> int:
    """Run the calibration experiment and write its tables into the doc."""
    parser = argparse.ArgumentParser(prog="python -m lightning_bnn.experiments calibration", description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="model seeds (default 0 1 2; quick 0 1)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per run (default 30, also quick)")
    parser.add_argument("--quick", action="store_true", help="reduced version for CI (digits, seconds)")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at a time (1 torch thread each when > 1)")
    parser.add_argument("--tracking-uri", default=None, help="MLflow store (default as for training)")
    parser.add_argument("--doc", type=Path, default=None, help="markdown file to write the tables into")
    args = parser.parse_args(argv)
    seeds = args.seeds or ([0, 1] if args.quick else [0, 1, 2])
    os.environ.setdefault("PYTHONHASHSEED", "0")
    start = time.perf_counter()
    markdown, _ = run(resolve_tracking_uri(args.tracking_uri), seeds, args.epochs, args.quick, max(1, args.jobs))
    if args.doc is not None:
        write_section(args.doc, "calibration-quick" if args.quick else "calibration", markdown)
    print(markdown)
    print(f"[calibration] done in {(time.perf_counter() - start) / 60:.1f} min", flush=True)
    return 0
