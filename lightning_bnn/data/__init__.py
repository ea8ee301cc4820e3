"""Data modules and the typed preprocessing that turns raw inputs into model inputs.

The shipped data sets (:mod:`.base`: the toy regression curve and scikit-learn's digits;
:mod:`.idx`: Fashion-MNIST and MNIST from IDX files; :mod:`.tabular`: a user's CSV) all
derive from :class:`BaseDataModule` and record a :class:`~.preprocessing.Preprocessing`
that travels with the trained model. Configs name them by their short class path,
e.g. ``lightning_bnn.data.DigitsDataModule``.
"""

from lightning_bnn.data.base import BaseDataModule, DigitsDataModule, Splits, ToyRegressionDataModule
from lightning_bnn.data.idx import FashionMNISTDataModule, MNISTDataModule
from lightning_bnn.data.tabular import CSVDataModule

__all__ = [
    "BaseDataModule",
    "CSVDataModule",
    "DigitsDataModule",
    "FashionMNISTDataModule",
    "MNISTDataModule",
    "Splits",
    "ToyRegressionDataModule",
]
