"""``python -m lightning_bnn prune RUN_ID --fractions ...``: SNR pruning (:mod:`lightning_bnn.evaluation.prune`).

Prints the table and the child run that :func:`lightning_bnn.tracking.pruning.prune_run` logged.
"""

from __future__ import annotations

import argparse

from lightning_bnn.evaluation.prune import PruneError, table_markdown
from lightning_bnn.tracking.pruning import prune_run


def main(argv: list[str] | None = None) -> int:
    """``python -m lightning_bnn prune RUN_ID --fractions ...``: print the table, return an exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m lightning_bnn prune",
        description="Remove the weights with the lowest |mu|/sigma and evaluate the pruned mean network.",
    )
    parser.add_argument("run_id", help="MLflow run id of a Bayes-by-Backprop run")
    parser.add_argument(
        "--fractions",
        type=float,
        nargs="+",
        default=[0.0, 0.5, 0.75, 0.95, 0.98],
        help="fractions of the weights to remove, each in [0, 1] (default: the paper's 0 0.5 0.75 0.95 0.98)",
    )
    parser.add_argument("--tracking-uri", default=None, help="MLflow store (default as for training)")
    parser.add_argument("--save-dir", default=None, help="write pruned-<percent>.safetensors and model.json here")
    args = parser.parse_args(argv)
    try:
        result = prune_run(args.run_id, args.fractions, args.tracking_uri, args.save_dir)
    except (PruneError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}")
        return 2
    print(f"{result['total_weights']} weights; child run {result['child_run_id']}")
    print(table_markdown(result["rows"]))
    return 0
