"""LightningDataModules that need no download: the paper's toy regression curve and digits.

Every data module loads its splits into tensors once, with a seeded split, and
exposes what the model needs to be built (``input_shape``, ``num_outputs``,
``task``) and how raw inputs become model inputs (``preprocessing``, saved with the
model so that the dashboard can prepare uploads the same way).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import lightning.pytorch as L
import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightning_bnn.data.preprocessing import ImagePreprocessing, NoPreprocessing, Preprocessing, TabularPreprocessing
from lightning_bnn.nn.likelihoods import Task


@dataclass
class Splits:
    """Model-space tensors of the three splits."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def _check_int(value: object, field: str, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{field} must be an integer >= {low}, got {value!r}")
    return value


def _check_fraction(value: object, field: str) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not 0.0 < value < 1.0:
        raise ValueError(f"{field} must lie strictly between 0 and 1, got {value!r}")
    return float(value)


def split_indices(n: int, val_fraction: float, test_fraction: float, seed: int) -> tuple[np.ndarray, ...]:
    """Seeded permutation of range(n) cut into train, validation and test indices."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    n_test = max(1, int(round(n * test_fraction)))
    n_val = max(1, int(round(n * val_fraction)))
    if n - n_test - n_val < 1:
        raise ValueError(f"{n} examples are too few for val_fraction={val_fraction}, test_fraction={test_fraction}")
    return order[n_test + n_val :], order[n_test : n_test + n_val], order[:n_test]


class BaseDataModule(L.LightningDataModule):
    """Tensors in memory, seeded splits, plain DataLoaders.

    Args:
        batch_size: minibatch size for training and evaluation.
        seed: seed of the train/validation/test split (and of generated data).
        num_workers: DataLoader worker processes.
    """

    #: short dataset name, logged as the ``dataset`` param and used as default experiment name
    name = "data"

    def __init__(self, batch_size: int = 128, seed: int = 0, num_workers: int = 0) -> None:
        super().__init__()
        self.batch_size = _check_int(batch_size, "data.batch_size")
        self.seed = _check_int(seed, "data.seed", low=0)
        self.num_workers = _check_int(num_workers, "data.num_workers", low=0)
        self._splits: Splits | None = None

    def set_split_fractions(self, val_fraction: float, test_fraction: float) -> None:
        """Validate and keep the fractions of a random split (``data.val_fraction``, ``data.test_fraction``)."""
        self.val_fraction = _check_fraction(val_fraction, "data.val_fraction")
        self.test_fraction = _check_fraction(test_fraction, "data.test_fraction")

    # what the model needs -------------------------------------------------------------------
    @property
    def task(self) -> str:
        """``classification`` or ``regression``."""
        return Task.classification.value

    @property
    def input_shape(self) -> list[int]:
        """Shape of one model input."""
        return list(self.splits.x_train.shape[1:])

    @property
    def num_outputs(self) -> int:
        """Classes (classification) or target dimensions (regression)."""
        raise NotImplementedError

    @property
    def preprocessing(self) -> Preprocessing:
        """How raw inputs become model inputs and outputs go back to original units; saved with the model."""
        return NoPreprocessing()

    # data ----------------------------------------------------------------------------------------
    def load(self) -> Splits:
        """Build the three splits (model-space tensors)."""
        raise NotImplementedError

    @property
    def splits(self) -> Splits:
        """The splits, loaded on first use."""
        if self._splits is None:
            self._splits = self.load()
        return self._splits

    def setup(self, stage: str | None = None) -> None:
        self.splits  # noqa: B018 - load once, early, so errors surface before training

    def _loader(self, x: torch.Tensor, y: torch.Tensor, shuffle: bool) -> DataLoader:
        return DataLoader(
            TensorDataset(x, y),
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.splits.x_train, self.splits.y_train, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.splits.x_val, self.splits.y_val, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.splits.x_test, self.splits.y_test, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()


def toy_curve(x: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """The regression curve of Blundell et al. (2015, section 5.2).

    y = x + 0.3 sin(2 pi (x + e)) + 0.3 sin(4 pi (x + e)) + e, with e the noise.
    """
    return x + 0.3 * np.sin(2 * np.pi * (x + noise)) + 0.3 * np.sin(4 * np.pi * (x + noise)) + noise


class ToyRegressionDataModule(BaseDataModule):
    """The paper's 1-D regression curve with x drawn uniformly from [x_low, x_high].

    Validation and test points come from the same interval; predictions outside it
    show how the uncertainty grows away from the data.

    Args:
        num_train: training points.
        num_val: validation points.
        num_test: test points.
        x_low: lower end of the input interval.
        x_high: upper end of the input interval.
        noise_std: std of e ~ N(0, noise_std^2) (0.02 in the paper).
        batch_size: minibatch size.
        seed: seed of the generated data.
        num_workers: DataLoader workers.
    """

    name = "toy_regression"

    def __init__(
        self,
        num_train: int = 512,
        num_val: int = 128,
        num_test: int = 256,
        x_low: float = 0.0,
        x_high: float = 0.5,
        noise_std: float = 0.02,
        batch_size: int = 64,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, seed=seed, num_workers=num_workers)
        self.num_train = _check_int(num_train, "data.num_train")
        self.num_val = _check_int(num_val, "data.num_val")
        self.num_test = _check_int(num_test, "data.num_test")
        for field, value in (("data.x_low", x_low), ("data.x_high", x_high)):
            if not (isinstance(value, (int, float)) and math.isfinite(value)):
                raise ValueError(f"{field} must be a finite number, got {value!r}")
        if not x_low < x_high:
            raise ValueError(f"data.x_low must be below data.x_high, got x_low={x_low}, x_high={x_high}")
        if not (isinstance(noise_std, (int, float)) and math.isfinite(noise_std) and noise_std >= 0):
            raise ValueError(f"data.noise_std must be a finite number >= 0, got {noise_std!r}")
        self.x_low, self.x_high, self.noise_std = float(x_low), float(x_high), float(noise_std)

    @property
    def task(self) -> str:
        return Task.regression.value

    @property
    def input_shape(self) -> list[int]:
        return [1]

    @property
    def num_outputs(self) -> int:
        return 1

    @property
    def preprocessing(self) -> TabularPreprocessing:
        return TabularPreprocessing(
            feature_names=("x",),
            feature_mean=(0.0,),
            feature_std=(1.0,),
            target_names=("y",),
            target_mean=0.0,
            target_std=1.0,
            train_range=(self.x_low, self.x_high),
        )

    def sample(self, n: int, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw n (x, y) pairs as float tensors [n, 1]."""
        x = rng.uniform(self.x_low, self.x_high, size=(n, 1))
        y = toy_curve(x, rng.normal(0.0, self.noise_std, size=(n, 1)))
        return torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.float32)

    def load(self) -> Splits:
        rng = np.random.default_rng(self.seed)
        return Splits(
            *self.sample(self.num_train, rng), *self.sample(self.num_val, rng), *self.sample(self.num_test, rng)
        )


class DigitsDataModule(BaseDataModule):
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images), pixels scaled to [0, 1].

    Args:
        val_fraction, test_fraction: fractions of the images held out for validation and testing.
        batch_size, seed, num_workers: as :class:`BaseDataModule` (``seed`` seeds the split).
    """

    name = "digits"

    def __init__(
        self,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        batch_size: int = 64,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, seed=seed, num_workers=num_workers)
        self.set_split_fractions(val_fraction, test_fraction)

    @property
    def input_shape(self) -> list[int]:
        return [1, 8, 8]

    @property
    def num_outputs(self) -> int:
        return 10

    @property
    def preprocessing(self) -> ImagePreprocessing:
        return ImagePreprocessing(channels=1, height=8, width=8, class_names=tuple(str(i) for i in range(10)))

    def load(self) -> Splits:
        from sklearn.datasets import load_digits

        digits = load_digits()
        x = torch.as_tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1)
        y = torch.as_tensor(digits.target, dtype=torch.long)
        train, val, test = split_indices(len(y), self.val_fraction, self.test_fraction, self.seed)
        return Splits(x[train], y[train], x[val], y[val], x[test], y[test])
