"""Evaluation maths, with no I/O.

Metrics (:mod:`.metrics`), report documents such as the reliability diagram (:mod:`.reports`),
out-of-distribution scores (:mod:`.ood`) and weight pruning by signal-to-noise (:mod:`.prune`).
Nothing here writes to MLflow: :mod:`lightning_bnn.tracking` does that.
"""
