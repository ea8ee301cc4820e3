"""A user's CSV file as a data module: numeric feature columns and one target column.

Features are standardised with the training split's mean and std (saved in
``preprocessing`` so that predictions on new rows use the same transform); a
regression target is standardised too, and metrics are reported in its original
units. Classification targets may be any labels: they are mapped to class indices
in sorted order and the names are saved.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from lightning_bnn.data.base import BaseDataModule, Splits, split_indices
from lightning_bnn.data.preprocessing import TabularPreprocessing
from lightning_bnn.nn.likelihoods import Task

#: refuse CSV files with more columns than this (a guard against malformed files)
MAX_COLUMNS = 10_000
#: refuse CSV files larger than this many bytes
MAX_BYTES = 500 * 1024 * 1024
#: refuse a header line longer than this many bytes (read before pandas parses anything)
MAX_HEADER_BYTES = 1024 * 1024


class CSVDataError(ValueError):
    """The CSV file cannot be used as training data."""


def count_header_columns(path: Path) -> int:
    """Columns of the first line of a CSV file, reading at most :data:`MAX_HEADER_BYTES` bytes."""
    import csv

    with open(path, "rb") as file:
        line = file.readline(MAX_HEADER_BYTES + 1)
    if len(line) > MAX_HEADER_BYTES:
        raise CSVDataError(
            f"data.path: {path} has a header line longer than {MAX_HEADER_BYTES // 1024} KiB "
            f"(more than {MAX_COLUMNS} columns?)"
        )
    text = line.decode("utf-8", errors="replace").rstrip("\r\n")
    try:
        return len(next(csv.reader([text]), [])) if text else 0
    except csv.Error:  # e.g. a stray carriage return: count separators (an upper bound) instead
        return text.count(",") + 1


def read_training_csv(path: Path, target: str, task: Task, feature_columns: list[str] | None):
    """Read and validate a training CSV. Returns (features [N, F], target array, feature names, class names)."""
    import pandas as pd

    if not path.exists():
        raise CSVDataError(f"data.path: no such file {path}")
    if not path.is_file():
        raise CSVDataError(f"data.path: {path} is not a file")
    if path.stat().st_size > MAX_BYTES:
        raise CSVDataError(f"data.path: {path} is larger than {MAX_BYTES // 2**20} MiB")
    columns = count_header_columns(path)
    if columns > MAX_COLUMNS:  # pandas takes minutes and gigabytes on a million-column header: refuse first
        raise CSVDataError(f"data.path: {path} has {columns} columns, more than {MAX_COLUMNS}")
    try:
        header = pd.read_csv(path, nrows=0)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise CSVDataError(f"data.path: {path} is not a readable CSV file ({err})") from err
    if len(header.columns) > MAX_COLUMNS:
        raise CSVDataError(f"data.path: {path} has {len(header.columns)} columns, more than {MAX_COLUMNS}")
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise CSVDataError(f"data.path: {path} is not a readable CSV file ({err})") from err
    if target not in frame.columns:
        raise CSVDataError(f"data.target: column {target!r} not in {path} (columns: {list(frame.columns)[:20]})")
    features = feature_columns or [c for c in frame.columns if c != target]
    missing = [c for c in features if c not in frame.columns]
    if missing:
        raise CSVDataError(f"data.feature_columns: {missing} not in {path}")
    if not features:
        raise CSVDataError(f"data.path: {path} has no feature columns besides the target {target!r}")
    if len(frame) < 10:
        raise CSVDataError(f"data.path: {path} has {len(frame)} rows; at least 10 are needed to split and train")
    x_frame = frame[features]
    # pandas' own test: string columns may be pandas StringDtype, which numpy cannot interpret
    non_numeric = [c for c in features if not pd.api.types.is_numeric_dtype(x_frame[c].dtype)]
    if non_numeric:
        raise CSVDataError(f"data.path: feature column(s) {non_numeric[:10]} are not numeric")
    x = x_frame.to_numpy(dtype=np.float64)
    bad = ~np.isfinite(x)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise CSVDataError(
            f"data.path: feature column {features[col]!r} has a missing or infinite value at row {row + 2} "
            f"({int(bad.sum())} in all); clean the file first"
        )
    y_series = frame[target]
    if y_series.isna().any():
        raise CSVDataError(f"data.target: column {target!r} has {int(y_series.isna().sum())} missing value(s)")
    class_names = None
    if task is Task.classification:
        labels = y_series.astype(str).to_numpy()
        class_names = sorted(set(labels))
        if len(class_names) < 2:
            raise CSVDataError(f"data.target: column {target!r} has a single class {class_names}")
        index = {name: i for i, name in enumerate(class_names)}
        y = np.array([index[v] for v in labels], dtype=np.int64)
    else:
        if not pd.api.types.is_numeric_dtype(y_series.dtype):
            raise CSVDataError(f"data.target: column {target!r} is not numeric; use task=classification for labels")
        y = y_series.to_numpy(dtype=np.float64)
        if not np.isfinite(y).all():
            raise CSVDataError(f"data.target: column {target!r} has infinite values")
    return x, y, list(features), class_names


class CSVDataModule(BaseDataModule):
    """Tabular data from a CSV file with a named target column.

    Args:
        path: CSV file with a header row.
        target: name of the target column.
        task: ``classification`` or ``regression``.
        feature_columns: feature columns to use (default: every other column).
        val_fraction, test_fraction: fractions of the rows held out for validation and testing.
        batch_size, seed, num_workers: as :class:`~lightning_bnn.data.base.BaseDataModule` (``seed`` seeds the split).
    """

    name = "csv"

    def __init__(
        self,
        path: str,
        target: str,
        task: Task = Task.regression,
        feature_columns: list[str] | None = None,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        batch_size: int = 64,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, seed=seed, num_workers=num_workers)
        self.path = Path(path).expanduser()
        self.target = target
        try:
            self._task = Task(task.value if isinstance(task, Task) else task)
        except ValueError:
            raise ValueError(f"data.task must be 'classification' or 'regression', got {task!r}") from None
        self.feature_columns = feature_columns
        self.set_split_fractions(val_fraction, test_fraction)
        self._meta: dict | None = None

    @property
    def task(self) -> str:
        return self._task.value

    @property
    def num_outputs(self) -> int:
        return len(self.meta["class_names"]) if self._task is Task.classification else 1

    @property
    def meta(self) -> dict:
        """Preprocessing statistics (loads the file on first use)."""
        self.splits  # noqa: B018
        assert self._meta is not None
        return self._meta

    @property
    def preprocessing(self) -> TabularPreprocessing:
        return TabularPreprocessing(**self.meta)

    def load(self) -> Splits:
        x, y, features, class_names = read_training_csv(self.path, self.target, self._task, self.feature_columns)
        train, val, test = split_indices(len(x), self.val_fraction, self.test_fraction, self.seed)
        mean = x[train].mean(axis=0)
        std = x[train].std(axis=0)
        std = np.where(std > 0, std, 1.0)  # constant columns pass through centred
        xs = torch.as_tensor((x - mean) / std, dtype=torch.float32)
        meta = {
            "feature_names": features,
            "feature_mean": mean.tolist(),
            "feature_std": std.tolist(),
        }
        if self._task is Task.classification:
            ys = torch.as_tensor(y, dtype=torch.long)
            meta["class_names"] = class_names
            meta["target_names"] = [self.target]
        else:
            t_mean, t_std = float(y[train].mean()), float(y[train].std())
            t_std = t_std if t_std > 0 else 1.0
            ys = torch.as_tensor((y - t_mean) / t_std, dtype=torch.float32).unsqueeze(1)
            meta.update(target_names=[self.target], target_mean=t_mean, target_std=t_std)
        self._meta = meta
        return Splits(xs[train], ys[train], xs[val], ys[val], xs[test], ys[test])
