"""Image sets stored as IDX files: Fashion-MNIST (Debian package) and MNIST (download).

IDX is the plain binary format of LeCun's MNIST: a magic number giving the element
type and the number of dimensions, the dimensions as big-endian uint32, then the data.
Files may be gzip-compressed (``.gz``).
"""

from __future__ import annotations

import gzip
import math
import shutil
import urllib.request
from pathlib import Path

import numpy as np
import torch

from lightning_bnn.data.base import BaseDataModule, Splits, _check_int
from lightning_bnn.data.preprocessing import ImagePreprocessing

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


class IdxError(ValueError):
    """An IDX file is missing, truncated or not IDX."""


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (optionally gzip-compressed) of unsigned bytes into an array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise IdxError(f"cannot read IDX file {path}: {err}") from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise IdxError(f"{path} is not an IDX file (bad magic number)")
    if raw[2] != 0x08:
        raise IdxError(f"{path}: only unsigned-byte IDX data is supported (type code 0x{raw[2]:02x})")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise IdxError(f"{path} is truncated (header)")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = math.prod(dims)  # exact: np.prod wraps around for absurd headers
    if len(raw) - header != expected:
        raise IdxError(f"{path} holds {len(raw) - header} data bytes, expected {expected} for shape {dims}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def find_idx(directory: Path, stem: str) -> Path | None:
    """Locate ``stem`` or ``stem.gz`` in a folder."""
    for candidate in (directory / stem, directory / f"{stem}.gz"):
        if candidate.exists():
            return candidate
    return None


def download_mnist(directory: Path, mirrors: tuple[str, ...] = MNIST_MIRRORS) -> None:
    """Download the four MNIST IDX files into ``directory`` (tries each mirror in turn)."""
    directory.mkdir(parents=True, exist_ok=True)
    for stem in IDX_FILES.values():
        if find_idx(directory, stem):
            continue
        errors = []
        for mirror in mirrors:
            url = f"{mirror}{stem}.gz"
            target = directory / f"{stem}.gz"
            partial = target.with_suffix(".gz.part")
            try:
                with urllib.request.urlopen(url, timeout=30) as response, open(partial, "wb") as out:
                    shutil.copyfileobj(response, out)
                partial.replace(target)
                read_idx(target)
                break
            except (OSError, IdxError) as err:
                partial.unlink(missing_ok=True)
                target.unlink(missing_ok=True)
                errors.append(f"{url}: {err}")
        else:
            raise FileNotFoundError(
                f"could not download MNIST file {stem}: " + "; ".join(errors) + f". Put the IDX files in {directory}."
            )


class IdxImageDataModule(BaseDataModule):
    """28x28 grayscale images from IDX files; validation split cut from the training set.

    Args:
        data_dir: folder with the four IDX files (plain or .gz); default: the class's ``default_dir``.
        val_size: training images held out for validation.
        train_subset: use only this many training images (for quick runs); None for all.
        batch_size: minibatch size.
        seed: seed of the validation split and subset.
        num_workers: DataLoader workers.
    """

    class_names: list[str] = [str(i) for i in range(10)]
    pixel_divisor: float = 255.0

    #: the folder of the IDX files when ``data_dir`` is not given
    default_dir: str | None = None

    def __init__(
        self,
        data_dir: str | None = None,
        val_size: int = 5000,
        train_subset: int | None = None,
        batch_size: int = 128,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size=batch_size, seed=seed, num_workers=num_workers)
        if data_dir is None and self.default_dir is None:
            raise ValueError(f"data.data_dir: {type(self).__name__} needs the folder of its IDX files")
        self.data_dir = Path(data_dir or self.default_dir).expanduser()
        self.val_size = _check_int(val_size, "data.val_size")
        self.train_subset = None if train_subset is None else _check_int(train_subset, "data.train_subset")

    @property
    def input_shape(self) -> list[int]:
        return [1, 28, 28]

    @property
    def num_outputs(self) -> int:
        return 10

    @property
    def preprocessing(self) -> ImagePreprocessing:
        return ImagePreprocessing(
            channels=1, height=28, width=28, scale=255.0 / self.pixel_divisor, class_names=tuple(self.class_names)
        )

    def missing_files_message(self, missing: list[str]) -> str:
        """Error text when IDX files are absent."""
        return f"IDX files {missing} not found in {self.data_dir}"

    def ensure_files(self) -> None:
        """Hook for subclasses that can fetch missing files."""

    def _paths(self) -> dict[str, Path]:
        self.ensure_files()
        paths = {key: find_idx(self.data_dir, stem) for key, stem in IDX_FILES.items()}
        missing = [IDX_FILES[k] for k, v in paths.items() if v is None]
        if missing:
            raise FileNotFoundError(self.missing_files_message(missing))
        return paths

    def load(self) -> Splits:
        paths = self._paths()
        arrays = {key: read_idx(path) for key, path in paths.items()}

        def images(a: np.ndarray) -> torch.Tensor:
            return torch.as_tensor(a, dtype=torch.float32).div_(self.pixel_divisor).unsqueeze(1)

        x_all, y_all = images(arrays["train_images"]), torch.as_tensor(arrays["train_labels"], dtype=torch.long)
        if len(x_all) != len(y_all):
            raise IdxError(f"{len(x_all)} training images but {len(y_all)} labels in {self.data_dir}")
        if self.val_size >= len(x_all):
            raise ValueError(f"data.val_size={self.val_size} leaves no training images (of {len(x_all)})")
        order = np.random.default_rng(self.seed).permutation(len(x_all))
        val, train = order[: self.val_size], order[self.val_size :]
        if self.train_subset is not None:
            train = train[: self.train_subset]
        return Splits(
            x_all[train],
            y_all[train],
            x_all[val],
            y_all[val],
            images(arrays["test_images"]),
            torch.as_tensor(arrays["test_labels"], dtype=torch.long),
        )


class FashionMNISTDataModule(IdxImageDataModule):
    """Fashion-MNIST from the Debian package ``dataset-fashion-mnist`` (no download).

    ``data_dir`` defaults to :data:`FASHION_MNIST_DIR` (where the package puts the files); the
    other arguments are :class:`IdxImageDataModule`'s.
    """

    name = "fashion_mnist"
    class_names = FASHION_MNIST_CLASSES
    default_dir = FASHION_MNIST_DIR

    def missing_files_message(self, missing: list[str]) -> str:
        return (
            f"Fashion-MNIST IDX files {missing} not found in {self.data_dir}. Install them with "
            "'apt-get install dataset-fashion-mnist' (puts them in /usr/share/datasets/fashion-mnist) "
            "or set data.data_dir to a folder that holds them."
        )


class MNISTDataModule(IdxImageDataModule):
    """MNIST from IDX files in ``data_dir``, downloaded there when missing and ``download`` is true.

    Args:
        data_dir: folder for the IDX files.
        pixel_scale: ``unit`` (pixels / 255) or ``blundell`` (pixels / 126, as in the paper).
        download: fetch missing files from the public mirrors.
        val_size: training images held out for validation (10,000 in the paper).
        train_subset: use only this many training images.
        batch_size: minibatch size.
        seed: seed of the validation split.
        num_workers: DataLoader workers.
    """

    name = "mnist"

    def __init__(
        self,
        data_dir: str = "data/mnist",
        pixel_scale: str = "unit",
        download: bool = True,
        val_size: int = 10000,
        train_subset: int | None = None,
        batch_size: int = 128,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        if pixel_scale not in ("unit", "blundell"):
            raise ValueError(f"data.pixel_scale must be 'unit' or 'blundell', got {pixel_scale!r}")
        self.pixel_scale = pixel_scale
        self.pixel_divisor = 126.0 if pixel_scale == "blundell" else 255.0
        self.download = bool(download)
        super().__init__(data_dir, val_size, train_subset, batch_size, seed, num_workers)

    def ensure_files(self) -> None:
        if self.download and any(find_idx(self.data_dir, s) is None for s in IDX_FILES.values()):
            download_mnist(self.data_dir)

    def missing_files_message(self, missing: list[str]) -> str:
        return (
            f"MNIST IDX files {missing} not found in {self.data_dir}. Download them "
            "(e.g. from https://ossci-datasets.s3.amazonaws.com/mnist/) into that folder, "
            "or set data.download=true on a machine that is online."
        )
