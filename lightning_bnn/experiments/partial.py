"""Last layer or every layer? Partial vs full BBB on a user network (issue 15), over seeds.

::

    python -m lightning_bnn.experiments partial [--seeds 0 1 2] [--epochs 6] [--width 4] [--jobs 2]
        [--quick] [--tracking-uri URI] [--doc docs/experiments.md]

The network is the shipped example of bringing your own network, :class:`~lightning_bnn.nn.resnet.
ResidualCNN` (``configs/fashion_mnist_resnet.yaml``; ``--width`` channels in its first block), trained
three ways through the real CLI with the same budget:

* ``deterministic``: the point estimate, no Bayesian layer;
* ``last_layer``: ``bayesian_layers: ["head"]``, only the final linear layer Bayesian;
* ``full``: every conv and linear layer Bayesian (BatchNorm stays deterministic).

Both Bayesian variants follow the recipe of ``configs/experiments/bbb_recipe.yaml`` (the paper's
scale-mixture prior with the KL bound, and a MOPED start within the run: the first half of the epochs
train the means alone, then sigma = 0.1 |mu| and the ELBO). Each run keeps its best-validation-NLL
epoch (``fit``'s default; among the ELBO epochs for the Bayesian ones) and is tested there, with the
OOD sets of :mod:`lightning_bnn.evaluation.ood`. The tables give mean ± SE over the seeds, as the
calibration experiment's (:mod:`.calibration`).

``--quick`` (for CI): the bundled 8x8 digits, width 4, 6 epochs, two seeds.
Runs go to the MLflow experiment ``partial-<dataset>``; the table replaces the block between
``<!-- experiments:partial:start/end -->`` (``partial-quick``) of ``--doc``.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from pathlib import Path

from lightning_bnn.experiments.calibration import Estimate, summarise, table, train_models
from lightning_bnn.experiments.paper import CONFIGS, EXPERIMENT_CONFIGS, write_section
from lightning_bnn.tracking.store import resolve_tracking_uri

#: the example user network, by class path
NETWORK = "lightning_bnn.nn.resnet.ResidualCNN"
#: model -> (label, variant config or None, CLI arguments)
MODELS = {
    "deterministic": (
        "deterministic",
        EXPERIMENT_CONFIGS / "deterministic.yaml",
        ("--model.bayesian_layers", "null"),
    ),
    "last_layer": (
        "last layer Bayesian (`head`)",
        EXPERIMENT_CONFIGS / "bbb_recipe.yaml",
        ("--model.bayesian_layers", '["head"]'),
    ),
    "full": (
        "full BBB (every conv and linear)",
        EXPERIMENT_CONFIGS / "bbb_recipe.yaml",
        ("--model.bayesian_layers", "null"),
    ),
}
#: CLI arguments of the Fashion-MNIST runs on top of configs/fashion_mnist_resnet.yaml
FULL_ARGS = ("--trainer.limit_val_batches", "0.4", "--model.num_samples_eval", "10")
#: the reduced version: the shipped digits config with the user network in place of its MLP
QUICK_ARGS = ("--model.network.class_path", NETWORK, "--model.num_samples_eval", "10")


def jobs(uri: str, seeds: Sequence[int], epochs: int, width: int, quick: bool) -> list[tuple]:
    """The ``(model, seed, train_run arguments)`` of every run."""
    base = CONFIGS / ("digits.yaml" if quick else "fashion_mnist_resnet.yaml")
    experiment = f"partial-{'digits' if quick else 'fashion_mnist'}"
    common = [*(QUICK_ARGS if quick else FULL_ARGS), "--model.network.init_args.width", str(width)]
    common += ["--trainer.max_epochs", str(epochs)]
    out = []
    for model, (_, variant, args) in MODELS.items():
        pretrain = [] if model == "deterministic" else ["--model.pretrain_epochs", str(epochs // 2)]
        for seed in seeds:
            extra = [*common, *args, *pretrain, "--seed_everything", str(seed)]
            out.append((model, seed, ([base, variant], uri, experiment, f"{model}-seed{seed}", *extra)))
    return out


def run(
    uri: str, seeds: Sequence[int], epochs: int, width: int, quick: bool = False, processes: int = 1
) -> tuple[str, dict[str, dict[str, Estimate]]]:
    """Train every model for every seed (``processes`` runs at a time); return (markdown, summary)."""
    results = train_models(jobs(uri, seeds, epochs, width, quick), uri, processes, "partial")
    summary = summarise(results.metrics)
    command = "python -m lightning_bnn.experiments partial" + (" --quick" if quick else "")
    if not quick:
        command += f" --seeds {' '.join(map(str, seeds))} --epochs {epochs} --width {width}"
    intro = (
        f"Data: {'digits' if quick else 'fashion_mnist'}; `ResidualCNN` of width {width}; {len(seeds)} seeds "
        f"({', '.join(map(str, seeds))}) per model, {epochs} epochs each ({epochs // 2} of them the Bayesian "
        f"variants' mean-only pretraining), tested at the best-validation-NLL epoch; mean ± SE over the seeds. "
        f"Command: `{command}`. Total {results.wall / 60:.1f} min wall, {results.cpu / 60:.1f} min CPU."
    )
    labels = {model: label for model, (label, _, _) in MODELS.items()}
    return intro + "\n\n" + table(summary, results.run_ids, labels, target_rows=[]), summary


def main(argv: list[str] | None = None) -> int:
    """Run the partial-vs-full experiment and write its tables into the doc."""
    parser = argparse.ArgumentParser(prog="python -m lightning_bnn.experiments partial", description=__doc__)
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="model seeds (default 0 1 2; quick 0 1)")
    parser.add_argument("--epochs", type=int, default=6, help="epochs per run (default 6)")
    parser.add_argument("--width", type=int, default=4, help="channels of the network's first block (default 4)")
    parser.add_argument("--quick", action="store_true", help="reduced version for CI (digits, seconds)")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at a time (1 torch thread each when > 1)")
    parser.add_argument("--tracking-uri", default=None, help="MLflow store (default as for training)")
    parser.add_argument("--doc", type=Path, default=None, help="markdown file to write the tables into")
    args = parser.parse_args(argv)
    if args.epochs < 2 or args.width < 1:
        parser.error(f"--epochs must be at least 2 and --width at least 1, got {args.epochs} and {args.width}")
    seeds = args.seeds or ([0, 1] if args.quick else [0, 1, 2])
    os.environ.setdefault("PYTHONHASHSEED", "0")
    start = time.perf_counter()
    uri = resolve_tracking_uri(args.tracking_uri)
    markdown, _ = run(uri, seeds, args.epochs, args.width, args.quick, max(1, args.jobs))
    if args.doc is not None:
        write_section(args.doc, "partial-quick" if args.quick else "partial", markdown)
    print(markdown)
    print(f"[partial] done in {(time.perf_counter() - start) / 60:.1f} min", flush=True)
    return 0
