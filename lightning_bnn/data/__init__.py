"""Data modules and the typed preprocessing that turns raw inputs into model inputs.

The shipped data sets (:mod:`.base`: the toy regression curve and scikit-learn's digits;
:mod:`.idx`: Fashion-MNIST and MNIST from IDX files; :mod:`.tabular`: a user's CSV) all
derive from :class:`BaseDataModule` and record a :class:`~.preprocessing.Preprocessing`
that travels with the trained model. Configs name them by their short class path,
e.g. ``lightning_bnn.data.DigitsDataModule``.
"""

from __future__ import annotations

import importlib
from typing import Any

#: the data modules, imported on first use (they import Lightning; the preprocessing does not)
_EXPORTS = {
    "BaseDataModule": "base",
    "DigitsDataModule": "base",
    "Splits": "base",
    "ToyRegressionDataModule": "base",
    "FashionMNISTDataModule": "idx",
    "MNISTDataModule": "idx",
    "CSVDataModule": "tabular",
    "UCIDataModule": "uci",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'lightning_bnn.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"lightning_bnn.data.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value
