"""The paper's experiments, one command each: train the runs, then write their tables to ``docs/experiments.md``.

::

    python -m lightning_bnn.experiments classification [--dataset fashion_mnist|mnist] [--units 400] [--epochs N]
    python -m lightning_bnn.experiments regression
    python -m lightning_bnn.experiments pruning [--run RUN_ID]
    ... [--quick] [--tracking-uri URI] [--doc docs/experiments.md]

* ``classification`` (Blundell et al. 2015, section 5.1 / Table 1): Bayes by Backprop
  with a Gaussian and with the scale-mixture prior, a deterministic network and MC
  dropout, each ``configs/experiments/<dataset>.yaml`` plus one variant config.
* ``regression`` (Figure 5): BBB vs a deterministic network on the toy curve
  (``configs/toy_regression.yaml`` plus ``toy_bbb.yaml`` / ``toy_deterministic.yaml``),
  with the predictive band of both drawn beyond the training interval.
* ``pruning`` (section 5.1 / Table 2): :mod:`lightning_bnn.tracking.pruning` on the BBB run of
  the classification experiment with the lowest test error (or ``--run``).

Each run goes to MLflow (experiment ``paper-<name>``, tagged ``experiment``) with its
wall time as the metric ``wall_time_s``. The markdown table replaces the block between
``<!-- experiments:NAME:start -->`` and ``<!-- experiments:NAME:end -->`` in the doc
(appended if the markers are missing), so the prose around it stays.

``--quick`` runs a reduced version (bundled digits data, small networks, few epochs)
for CI: the same code path in seconds.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from lightning_bnn.tracking.experiment_runs import (
    REGRESSION_CURVE,
    finished_runs,
    get_run,
    log_figure_to_runs,
    record_cost,
    run_metrics,
)
from lightning_bnn.tracking.store import resolve_tracking_uri

PACKAGE = Path(__file__).resolve().parent.parent
CONFIGS = PACKAGE / "configs"
EXPERIMENT_CONFIGS = CONFIGS / "experiments"
DEFAULT_FRACTIONS = (0.0, 0.5, 0.75, 0.95, 0.98)

#: variant -> (config file, label)
CLASSIFICATION_VARIANTS = {
    "bbb_gaussian": ("bbb_gaussian.yaml", "BBB, Gaussian prior"),
    "bbb_scale_mixture": ("bbb_scale_mixture.yaml", "BBB, scale-mixture prior"),
    "deterministic": ("deterministic.yaml", "deterministic (SGD)"),
    "mc_dropout": ("mc_dropout.yaml", "MC dropout"),
}
REGRESSION_VARIANTS = {
    "bbb": ("toy_bbb.yaml", "BBB"),
    "deterministic": ("toy_deterministic.yaml", "deterministic"),
}
#: Blundell et al. (2015) Table 2: MNIST, BBB scale mixture 2x1200, test error (%) after removing a fraction
PAPER_PRUNING = {0.0: 1.24, 0.5: 1.24, 0.75: 1.24, 0.95: 1.29, 0.98: 1.39}


# -- running -------------------------------------------------------------------------------------------
def _store_dir(uri: str) -> Path | None:
    return Path(uri[len("sqlite:///") :]).parent if uri.startswith("sqlite:///") else None


def train_run(configs: Sequence[Path], uri: str, experiment: str, run_name: str, *extra: str) -> tuple[str, float]:
    """Train one run through the real CLI; return (run id, wall time in seconds, fit + test + OOD).

    The wall time and the process CPU time (all threads) are logged as ``wall_time_s`` and
    ``cpu_time_s``: on a shared machine the CPU time is the steadier measure of the cost.
    """
    from lightning_bnn.cli.app import main

    args = ["fit"]
    for config in configs:
        args += ["--config", str(config)]
    args += ["--mlflow.tracking_uri", uri, "--mlflow.experiment", experiment, "--mlflow.run_name", run_name]
    args += ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    store = _store_dir(uri)
    if store is not None:
        args += ["--trainer.default_root_dir", str(store / "checkpoints")]
    start, cpu_start = time.perf_counter(), time.process_time()
    cli = main([*args, *extra])
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    run_id = cli.trainer.logger.run_id
    record_cost(uri, run_id, experiment, wall, cpu, torch.get_num_threads())
    return run_id, wall


def _fmt(value: float | None, digits: int = 3, scale: float = 1.0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value * scale:.{digits}f}"


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


def _times(row: dict) -> str:
    cpu = row.get("cpu_time_s")
    return _minutes(row["wall"]) + (f" / {_minutes(cpu)}" if cpu is not None else "")


# -- classification -------------------------------------------------------------------------------------
def classification(
    uri: str,
    dataset: str = "fashion_mnist",
    units: int = 400,
    epochs: int | None = None,
    quick: bool = False,
    variants: Sequence[str] | None = None,
) -> tuple[str, list[dict]]:
    """Train the classification variants (default: all four); return (markdown, rows)."""
    if quick:
        base, dataset, units, epochs = CONFIGS / "digits.yaml", "digits", 32, epochs or 2
    else:
        base = EXPERIMENT_CONFIGS / f"{dataset}.yaml"
    experiment = f"paper-classification-{dataset}"
    extra = ["--model.hidden_sizes", f"[{units},{units}]"]
    if epochs is not None:
        extra += ["--trainer.max_epochs", str(epochs)]
    rows = []
    used_epochs = epochs if epochs is not None else _config_epochs(base)
    for variant in variants or list(CLASSIFICATION_VARIANTS):
        config, label = CLASSIFICATION_VARIANTS[variant]
        name = f"{variant}-{units}-{used_epochs}ep"
        run_id, wall = train_run([base, EXPERIMENT_CONFIGS / config], uri, experiment, name, *extra)
        m = run_metrics(uri, run_id)
        rows.append({"variant": variant, "label": label, "run_id": run_id, "wall": wall, **m})
        rows[-1]["threads"] = torch.get_num_threads()
        print(f"[experiments] {variant}: test/acc={m.get('test/acc')} wall={wall:.0f}s run={run_id}", flush=True)
    command = "python -m lightning_bnn.experiments classification" + (" --quick" if quick else "")
    if not quick and (dataset != "fashion_mnist" or units != 400 or epochs is not None):
        command += f" --dataset {dataset} --units {units}" + (f" --epochs {epochs}" if epochs is not None else "")
    if variants:
        command += " --variants " + " ".join(variants)
    return classification_table(rows, dataset, units, used_epochs, command), rows


def _config_epochs(path: Path) -> int | None:
    import yaml

    return (yaml.safe_load(path.read_text()).get("trainer") or {}).get("max_epochs")


def classification_table(rows: list[dict], dataset: str, units: int, epochs: int | None, command: str) -> str:
    """Markdown table of the classification runs (test set; OOD AUROCs by predictive entropy / MI)."""
    ood_names = sorted({k.split("_")[-1] for r in rows for k in r if k.startswith("test/ood_auroc_entropy_")})
    header = ["model", "test error %", "NLL", "ECE", "Brier", "mean entropy", "mean MI"]
    header += [f"AUROC {n} (H / MI)" for n in ood_names] + ["wall / CPU time", "run"]
    lines = [
        f"Data: {dataset}, MLP 784-{units}-{units}-10, {epochs} epochs, batch 128, Adam lr 1e-3. Command: `{command}`.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for r in rows:
        cells = [
            r["label"],
            _fmt(1.0 - r["test/acc"], 2, 100.0) if "test/acc" in r else "-",
            _fmt(r.get("test/nll"), 4),
            _fmt(r.get("test/ece"), 4),
            _fmt(r.get("test/brier"), 4),
            _fmt(r.get("test/entropy"), 3),
            _fmt(r.get("test/mi"), 4),
        ]
        for n in ood_names:
            cells.append(f"{_fmt(r.get(f'test/ood_auroc_entropy_{n}'))} / {_fmt(r.get(f'test/ood_auroc_mi_{n}'))}")
        cells += [_times(r), f"`{r['run_id'][:8]}`"]
        lines.append("| " + " | ".join(cells) + " |")
    total, cpu = sum(r["wall"] for r in rows), sum(r.get("cpu_time_s", 0.0) for r in rows)
    lines += [
        "",
        f"Total: {_minutes(total)} wall, {_minutes(cpu)} CPU (fit + validation + test + OOD scoring; "
        f"{rows[0].get('threads', '?')} torch thread(s)).",
    ]
    return "\n".join(lines)


# -- regression ------------------------------------------------------------------------------------------
def regression(uri: str, epochs: int | None = None, quick: bool = False, figure: Path | None = None) -> str:
    """Train BBB and deterministic on the toy curve; return the markdown table (and write the band figure)."""
    from lightning_bnn.tracking.store import load_model

    base = CONFIGS / "toy_regression.yaml"
    experiment = "paper-regression"
    extra = []
    if quick:
        epochs = epochs or 3
        extra += ["--model.hidden_sizes", "[16]"]
    if epochs is not None:
        extra += ["--trainer.max_epochs", str(epochs)]
    rows, models = [], {}
    for variant, (config, label) in REGRESSION_VARIANTS.items():
        run_id, wall = train_run([base, EXPERIMENT_CONFIGS / config], uri, experiment, f"toy-{variant}", *extra)
        models[label] = load_model(run_id, tracking_uri=uri)
        rows.append({"label": label, "run_id": run_id, "wall": wall, **run_metrics(uri, run_id)})
    grid = torch.linspace(-0.5, 1.2, 341)[:, None]
    bands = {label: band(model, grid) for label, model in models.items()}
    from lightning_bnn.tracking.figures import band_figure

    log_figure_to_runs(
        uri, [r["run_id"] for r in rows], band_figure(grid, bands, train_points(base)), REGRESSION_CURVE, copy_to=figure
    )
    header = [
        "model",
        "test RMSE",
        "test NLL",
        "PICP95",
        "width95",
        "mean 95% width, x in [0, 0.5] (train)",
        "x in [0.7, 1.2] (away)",
        "wall / CPU time",
        "run",
    ]
    used = epochs if epochs is not None else _config_epochs(base)
    command = "python -m lightning_bnn.experiments regression" + (" --quick" if quick else "")
    lines = [
        f"Data: the toy curve, 512 training points with x in [0, 0.5], {used} epochs. Command: `{command}`.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    x = grid[:, 0]
    inside, away = (x >= 0) & (x <= 0.5), x >= 0.7
    for r in rows:
        width = bands[r["label"]]["upper"] - bands[r["label"]]["lower"]
        cells = [
            r["label"],
            _fmt(r.get("test/rmse"), 4),
            _fmt(r.get("test/nll"), 3),
            _fmt(r.get("test/picp95"), 3),
            _fmt(r.get("test/width95"), 3),
            _fmt(float(width[inside].mean()), 3),
            _fmt(float(width[away].mean()), 3),
            _times(r),
            f"`{r['run_id'][:8]}`",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


@torch.no_grad()
def band(model, x: torch.Tensor, num_samples: int = 200) -> dict[str, torch.Tensor]:
    """Predictive mean and central 95% band of a regression model at inputs x [N, 1]."""
    summary = model.summarise(model.sample_predictions(x, num_samples))
    return {"mean": summary.mean[:, 0], "lower": summary.lower[:, 0], "upper": summary.upper[:, 0]}


def train_points(config: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The training points of the toy-regression config (same seed, so the same points)."""
    import yaml

    from lightning_bnn.data.base import ToyRegressionDataModule

    init = (yaml.safe_load(config.read_text())["data"] or {}).get("init_args") or {}
    splits = ToyRegressionDataModule(**init).splits
    return splits.x_train[:, 0], splits.y_train[:, 0]


# -- pruning ------------------------------------------------------------------------------------------------
def best_bbb_runs(uri: str, dataset: str = "fashion_mnist") -> list:
    """The finished BBB runs of ``paper-classification-<dataset>`` with the highest test accuracy, one per prior.

    Ordered best first, so the first is the best BBB run overall.
    """
    runs = finished_runs(uri, f"paper-classification-{dataset}", "tags.layer_type = 'bayes'", "metrics.`test/acc` DESC")
    if runs is None:
        raise SystemExit(f"no experiment paper-classification-{dataset} in {uri}: run the classification one first")
    best: dict[str, object] = {}
    for run in runs:
        if "test/acc" in run.data.metrics and "mlflow.parentRunId" not in run.data.tags:
            best.setdefault(run.data.params.get("prior.name", "?"), run)
    if not best:
        raise SystemExit(f"no finished BBB run in paper-classification-{dataset}")
    return list(best.values())


def pruning(uri: str, run_id: str | None = None, dataset: str = "fashion_mnist", quick: bool = False) -> str:
    """Prune the best BBB run of each prior (or ``run_id``) by SNR; return the table beside the paper's Table 2."""
    import pandas as pd

    from lightning_bnn.tracking.pruning import prune_run

    if quick:
        dataset = "digits"
    runs = [get_run(uri, run_id)] if run_id else best_bbb_runs(uri, dataset)
    results, notes = [], []
    for run in runs:
        start = time.perf_counter()
        result = prune_run(run.info.run_id, DEFAULT_FRACTIONS, tracking_uri=uri)
        wall = time.perf_counter() - start
        error = 100 * (1 - run.data.metrics.get("test/acc", float("nan")))
        results.append((run, result))
        notes.append(
            f"`{run.info.run_id[:8]}` ({run.info.run_name}, prior {run.data.params.get('prior.name')}, "
            f"sampled test error {error:.2f}%) -> child run `{result['child_run_id'][:8]}`, {wall:.0f} s"
        )
    command = "python -m lightning_bnn.experiments pruning" + (" --quick" if quick else "")
    header = ["removed", "weights left"]
    header += [f"test error % ({run.info.run_name})" for run, _ in results]
    header += ["pruned file", "paper, MNIST 2x1200 (%)"]
    first = results[0][1]
    table = []
    for i, row in enumerate(first["rows"]):
        paper = PAPER_PRUNING.get(round(row["fraction"], 4))
        cells = [f"{row['fraction'] * 100:g}%", f"{row['weights_left']:,}"]
        cells += [f"{result['rows'][i]['test_error'] * 100:.2f}" for _, result in results]
        cells += [f"{row['file_bytes'] / 1e6:.2f} MB", str(paper) if paper is not None else "-"]
        table.append(cells)
    markdown = pd.DataFrame(table).to_markdown(
        index=False, headers=header, disable_numparse=True, colalign=("right",) * len(header)
    )
    intro = (
        f"Data: {dataset}. Runs pruned (the best BBB run of each prior, best first): " + "; ".join(notes) + ". "
        f"{first['total_weights']:,} weights. Test error of the posterior-mean network. Command: `{command}`."
    )
    return f"{intro}\n\n{markdown}"


# -- the doc ---------------------------------------------------------------------------------------------
def write_section(doc: Path, name: str, markdown: str) -> None:
    """Replace the ``experiments:NAME`` block of ``doc`` with ``markdown`` (append it if absent)."""
    start, end = f"<!-- experiments:{name}:start -->", f"<!-- experiments:{name}:end -->"
    block = f"{start}\n{markdown}\n{end}"
    text = doc.read_text() if doc.exists() else "# Experiments\n"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip("\n") + f"\n\n{block}\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text)


def main(argv: list[str] | None = None) -> int:
    """Run one experiment and write its table into the doc."""
    parser = argparse.ArgumentParser(prog="python -m lightning_bnn.experiments", description=__doc__.split("\n")[0])
    parser.add_argument("experiment", choices=["classification", "regression", "pruning"])
    parser.add_argument("--quick", action="store_true", help="reduced version for CI (bundled data, seconds)")
    parser.add_argument("--tracking-uri", default=None, help="MLflow store (default as for training)")
    parser.add_argument(
        "--doc", type=Path, default=None, help="markdown file to write the table into (default: print it only)"
    )
    parser.add_argument("--dataset", choices=["fashion_mnist", "mnist"], default="fashion_mnist")
    parser.add_argument("--units", type=int, default=400, help="hidden units per layer (paper: 400, 800, 1200)")
    parser.add_argument("--epochs", type=int, default=None, help="override the config's max_epochs")
    parser.add_argument("--run", default=None, help="pruning: run id (default: the best BBB run of each prior)")
    parser.add_argument(
        "--variants", nargs="+", choices=list(CLASSIFICATION_VARIANTS), default=None, help="classification: a subset"
    )
    args = parser.parse_args(argv)
    uri = resolve_tracking_uri(args.tracking_uri)
    os.environ.setdefault("PYTHONHASHSEED", "0")
    section = args.experiment if not args.quick else f"{args.experiment}-quick"
    if args.experiment == "classification":
        markdown, _ = classification(uri, args.dataset, args.units, args.epochs, args.quick, args.variants)
        if not args.quick and (args.dataset != "fashion_mnist" or args.units != 400 or args.epochs or args.variants):
            section = f"classification-{args.dataset}-{args.units}u" + (f"-{args.epochs}ep" if args.epochs else "")
    elif args.experiment == "regression":
        figure = None if args.quick or args.doc is None else args.doc.parent / "figures" / "regression_band.html"
        markdown = regression(uri, args.epochs, args.quick, figure)
    else:
        markdown = pruning(uri, args.run, args.dataset, args.quick)
    if args.doc is not None:
        write_section(args.doc, section, markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
