"""lightning-bnn: Bayes by Backprop (Blundell et al. 2015) as a PyTorch Lightning package."""

from lightning_bnn.layers import BayesConv2d, BayesianModule, BayesLinear, total_kl
from lightning_bnn.module import BNNModule
from lightning_bnn.priors import PriorConfig, make_prior
from lightning_bnn.tracking import load_model

__all__ = [
    "BNNModule",
    "BayesConv2d",
    "BayesLinear",
    "BayesianModule",
    "PriorConfig",
    "load_model",
    "make_prior",
    "total_kl",
]
