"""lightning-bnn: Bayes by Backprop (Blundell et al. 2015) as a PyTorch Lightning package.

The package is layered; a lower layer never imports a higher one:

* :mod:`lightning_bnn.nn`: priors, the Gaussian posterior, Bayesian layers, networks and
  likelihoods (torch only);
* :mod:`lightning_bnn.data`, :mod:`lightning_bnn.training`, :mod:`lightning_bnn.evaluation`:
  data modules and preprocessing, the LightningModule and its objective, metrics and
  uncertainty evaluation;
* :mod:`lightning_bnn.tracking`: everything that reads or writes MLflow;
* :mod:`lightning_bnn.cli`: the command line; :mod:`lightning_bnn.experiments`: the paper's
  experiments and benchmarks, outside the library's core.

The names below are imported lazily, so ``import lightning_bnn.nn`` pulls in neither
Lightning nor MLflow.
"""

from __future__ import annotations

from lightning_bnn._lazy import lazy_getattr

_EXPORTS = {
    "BayesConv1d": "lightning_bnn.nn.layers",
    "BayesConv2d": "lightning_bnn.nn.layers",
    "BayesConv3d": "lightning_bnn.nn.layers",
    "SampledNetwork": "lightning_bnn.nn.convert",
    "bayesianize": "lightning_bnn.nn.convert",
    "BayesLinear": "lightning_bnn.nn.layers",
    "BayesianModule": "lightning_bnn.nn.layers",
    "total_kl": "lightning_bnn.nn.layers",
    "PriorConfig": "lightning_bnn.nn.priors",
    "make_prior": "lightning_bnn.nn.priors",
    "BNNModule": "lightning_bnn.training.module",
    "load_model": "lightning_bnn.tracking.store",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_getattr("lightning_bnn", _EXPORTS, globals())


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
