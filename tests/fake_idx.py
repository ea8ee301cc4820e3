"""Write small, valid IDX files (the MNIST format) for tests: MNIST itself is never downloaded in tests."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from lightning_bnn.data.idx import IDX_FILES


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX encoding of a uint8 array: magic 0x00 0x00 0x08 ndim, big-endian uint32 dims, then the data."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()


def write_idx(path: Path, array: np.ndarray) -> Path:
    """Write ``array`` as an IDX file, gzip-compressed when ``path`` ends in ``.gz``."""
    data = idx_bytes(array)
    if path.suffix == ".gz":
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path


def write_fake_mnist(folder: Path, num_train: int = 64, num_test: int = 32, seed: int = 0, gz: bool = True) -> Path:
    """The four MNIST IDX files with random 28x28 images and labels 0-9, in ``folder``."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".gz" if gz else ""
    arrays = {
        "train_images": rng.integers(0, 256, (num_train, 28, 28)),
        "train_labels": rng.integers(0, 10, num_train),
        "test_images": rng.integers(0, 256, (num_test, 28, 28)),
        "test_labels": rng.integers(0, 10, num_test),
    }
    for key, array in arrays.items():
        write_idx(folder / f"{IDX_FILES[key]}{suffix}", array)
    return folder
