"""The paper's experiments and the benchmarks of uncertainty quality, outside the library's core.

``python -m lightning_bnn.experiments NAME ...``; each experiment writes its tables to a file
that the caller names, never into the package.
"""
