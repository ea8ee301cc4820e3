"""``python -m lightning_bnn.experiments NAME ...``: run one experiment.

The paper's experiments: ``classification``, ``regression``, ``pruning`` (:mod:`.paper`).
"""

from __future__ import annotations

import sys

from lightning_bnn.experiments.paper import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
