"""Run the benchmarks and print a table: ``python -m benchmarks [--quick] [--json PATH] [--device cuda]``.

``--quick`` (about a minute on 2 CPU cores): training-step and predictive-sampling rows
with few rounds (``--only-train --train-samples 1``: the S=1 training-step rows alone). The
full run measures longer and adds the regime comparison of the prediction estimators, one
Fashion-MNIST epoch, the dashboard's load-and-predict path, the quality check (3 epochs,
BBB vs deterministic: accuracy, NLL, ECE over 10 seeds at a constant learning rate, and over
5 seeds with ``model.lr_schedule=cosine``) and the dashboard's first screen (``streamlit run``
to the rendered Runs table in headless Chromium: :mod:`benchmarks.first_screen`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

from benchmarks import harness, micro


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run (about a minute on 2 CPU cores)")
    parser.add_argument("--json", metavar="PATH", help="write the rows and the machine record to PATH")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    parser.add_argument("--rounds", type=int, help="interleaved timing rounds of the training steps")
    parser.add_argument("--epochs", type=int, default=3, help="Fashion-MNIST epochs of the quality check")
    parser.add_argument("--seeds", type=int, default=10, help="seeds of the quality check (default 10)")
    parser.add_argument(
        "--cosine-seeds",
        type=int,
        default=5,
        help="seeds of the same check with model.lr_schedule=cosine (default 5; 0 skips it)",
    )
    parser.add_argument(
        "--skip-fashion", action="store_true", help="full run without the Fashion-MNIST and dashboard parts"
    )
    parser.add_argument(
        "--skip-first-screen",
        action="store_true",
        help="full run without the dashboard's first-screen rows (which need Chromium and Playwright)",
    )
    parser.add_argument(
        "--only-train",
        action="store_true",
        help="only the training-step rows (a subset for a busy machine; with --train-samples 1, the S=1 rows)",
    )
    parser.add_argument(
        "--train-samples",
        default=",".join(map(str, micro.TRAIN_SAMPLES)),
        help="comma-separated S of the training-step rows (default 1,4,16; must include 1)",
    )
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    if args.rounds is not None and args.rounds < 1:
        parser.error(f"--rounds must be >= 1, got {args.rounds}")
    if args.epochs < 1:
        parser.error(f"--epochs must be >= 1, got {args.epochs}")
    if args.seeds < 1:
        parser.error(f"--seeds must be >= 1, got {args.seeds}")
    if args.cosine_seeds < 0:
        parser.error(f"--cosine-seeds must be >= 0, got {args.cosine_seeds}")
    try:
        args.train_samples = tuple(int(v) for v in args.train_samples.split(","))
    except ValueError:
        parser.error(f"--train-samples must be comma-separated integers, got {args.train_samples!r}")
    if 1 not in args.train_samples or min(args.train_samples) < 1:
        parser.error(f"--train-samples must be integers >= 1 including 1, got {args.train_samples}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"--device {args.device}: CUDA is not available on this machine", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f} s] {message}", file=sys.stderr, flush=True)

    machine = harness.machine_info(device, args.threads)
    if args.quick:
        settings = micro.Settings(rounds=args.rounds or 10, warmup=2, predict_rounds=5, regime_rows=False)
    else:
        settings = micro.Settings(rounds=args.rounds or 25, warmup=3, predict_rounds=15, regime_rows=True)
    settings.train_samples = args.train_samples
    rows = micro.training_rows(device, settings, log)
    if not args.only_train:
        rows += micro.byon_rows(device, settings, log)
        rows += micro.predictive_rows(device, settings, log)
    extra: dict = {"quick": args.quick, "command": "python -m benchmarks " + " ".join(sys.argv[1:] or [])}
    if not args.quick and not args.skip_fashion and not args.only_train:
        from benchmarks import fashion

        if fashion.available():
            epoch_rows, summary = fashion.quality(args.epochs, args.seeds, device, log)
            rows += epoch_rows
            extra["quality"] = summary
            if args.cosine_seeds:
                extra["quality_cosine"] = fashion.quality(args.epochs, args.cosine_seeds, device, log, "cosine")[1]
            rows += fashion.dashboard_path(device, repeats=5, log=log)
        else:
            log("Fashion-MNIST IDX files not installed: skipping the epoch, dashboard and quality benchmarks")
    if not args.quick and not args.only_train and not args.skip_first_screen:
        from benchmarks import first_screen

        reason = first_screen.available()
        if reason:
            log(f"skipping the dashboard's first-screen rows: {reason}")
        else:
            rows += first_screen.rows(runs=3, repeats=3, log=log)
    machine["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    machine["wall_s"] = round(time.perf_counter() - started, 1)
    print(harness.markdown_table(rows))
    if "quality" in extra:
        from benchmarks import fashion

        for key in ("quality", "quality_cosine"):
            if key in extra:
                print()
                print(fashion.quality_report(extra[key]))
    print()
    print(json.dumps(machine))
    if args.json:
        harness.write_json(args.json, machine, rows, extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
