"""Data modules and the typed preprocessing that turns raw inputs into model inputs.

The shipped data sets (:mod:`.base`: the toy regression curve and scikit-learn's digits;
:mod:`.idx`: Fashion-MNIST and MNIST from IDX files; :mod:`.tabular`: a user's CSV) all
derive from :class:`BaseDataModule` and record a :class:`~.preprocessing.Preprocessing`
that travels with the trained model. Configs name them by their short class path,
e.g. ``lightning_bnn.data.DigitsDataModule``.
"""

from __future__ import annotations

from lightning_bnn._lazy import lazy_getattr

#: the data modules, imported on first use (they import Lightning; the preprocessing does not)
_EXPORTS = {
    "BaseDataModule": "lightning_bnn.data.base",
    "DigitsDataModule": "lightning_bnn.data.base",
    "Splits": "lightning_bnn.data.base",
    "ToyRegressionDataModule": "lightning_bnn.data.base",
    "FashionMNISTDataModule": "lightning_bnn.data.idx",
    "MNISTDataModule": "lightning_bnn.data.idx",
    "CSVDataModule": "lightning_bnn.data.tabular",
    "UCIDataModule": "lightning_bnn.data.uci",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_getattr("lightning_bnn.data", _EXPORTS, globals())
