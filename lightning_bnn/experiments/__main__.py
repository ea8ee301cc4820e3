"""``python -m lightning_bnn.experiments NAME ...``: run one experiment.

* ``classification``, ``regression``, ``pruning``: the paper's experiments (:mod:`.paper`);
* ``uci``: the UCI regression benchmark (:mod:`.uci`);
* ``calibration``: BBB vs a point estimate vs MC dropout over seeds (:mod:`.calibration`);
* ``partial``: last-layer vs full BBB on a user network over seeds (:mod:`.partial`).
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    """Dispatch to the experiment named first."""
    if argv and argv[0] == "uci":
        from lightning_bnn.experiments.uci import main as uci

        return uci(argv[1:])
    if argv and argv[0] == "calibration":
        from lightning_bnn.experiments.calibration import main as calibration

        return calibration(argv[1:])
    if argv and argv[0] == "partial":
        from lightning_bnn.experiments.partial import main as partial

        return partial(argv[1:])
    from lightning_bnn.experiments.paper import main as paper

    return paper(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
