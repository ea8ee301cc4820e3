"""Speed and memory benchmarks of lightning-bnn: ``python -m benchmarks [--quick] [--json PATH]``.

See :mod:`benchmarks.__main__` for the options, :mod:`benchmarks.harness` for how time
and memory are measured, and ``docs/performance.md`` for the figures.
"""
