"""Data modules: the toy curve, digits, IDX image sets (Fashion-MNIST, fake MNIST) and CSV files."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from fake_idx import idx_bytes, write_fake_mnist, write_idx

from lightning_bnn.data.base import DigitsDataModule, ToyRegressionDataModule, split_indices, toy_curve
from lightning_bnn.data.idx import (
    FASHION_MNIST_DIR,
    FashionMNISTDataModule,
    IdxError,
    MNISTDataModule,
    read_idx,
)
from lightning_bnn.data.tabular import CSVDataError, CSVDataModule

# -- toy regression ---------------------------------------------------------------------------------------


def test_toy_curve_is_the_papers():
    x = np.array([0.0, 0.1, 0.25])
    e = np.array([0.0, 0.01, -0.02])
    expected = x + 0.3 * np.sin(2 * np.pi * (x + e)) + 0.3 * np.sin(4 * np.pi * (x + e)) + e
    np.testing.assert_allclose(toy_curve(x, e), expected)


def test_toy_regression_splits_are_seeded_and_in_the_interval():
    dm = ToyRegressionDataModule(num_train=100, num_val=20, num_test=30, x_low=-0.2, x_high=0.6, seed=3)
    s = dm.splits
    assert s.x_train.shape == (100, 1) and s.y_val.shape == (20, 1) and s.x_test.shape == (30, 1)
    for x in (s.x_train, s.x_val, s.x_test):  # every split drawn from the configured interval, across all of it
        assert x.min() >= -0.2 and x.max() <= 0.6
    assert s.x_train.min() < -0.15 and s.x_train.max() > 0.55  # not the default [0, 0.5]
    again = ToyRegressionDataModule(num_train=100, num_val=20, num_test=30, x_low=-0.2, x_high=0.6, seed=3).splits
    assert torch.equal(s.x_train, again.x_train) and torch.equal(s.y_test, again.y_test)
    other = ToyRegressionDataModule(num_train=100, num_val=20, num_test=30, x_low=-0.2, x_high=0.6, seed=4).splits
    assert not torch.equal(s.x_train, other.x_train)
    # the noise level: test_toy_regression_noise_has_the_configured_std
    assert dm.task == "regression" and dm.input_shape == [1] and dm.num_outputs == 1
    assert list(dm.preprocessing.train_range) == [-0.2, 0.6]
    batch = next(iter(dm.train_dataloader()))
    assert batch[0].shape == (64, 1)


# -- digits -----------------------------------------------------------------------------------------------


def test_digits_splits_are_seeded_disjoint_and_complete():
    dm = DigitsDataModule(seed=0)
    s = dm.splits
    assert s.x_train.shape[1:] == (1, 8, 8) and dm.input_shape == [1, 8, 8] and dm.num_outputs == 10
    assert len(s.y_train) + len(s.y_val) + len(s.y_test) == 1797
    assert len(s.y_test) == round(1797 * 0.2) and len(s.y_val) == round(1797 * 0.1)
    assert 0.0 <= s.x_train.min() and s.x_train.max() <= 1.0
    train, val, test = split_indices(1797, 0.1, 0.2, 0)
    assert not set(train) & set(val) and not set(train) & set(test) and not set(val) & set(test)
    assert torch.equal(DigitsDataModule(seed=0).splits.y_test, s.y_test)
    assert not torch.equal(DigitsDataModule(seed=1).splits.y_test, s.y_test)


# -- IDX --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_idx_round_trip(tmp_path, suffix):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = write_idx(tmp_path / f"images{suffix}", images)
    np.testing.assert_array_equal(read_idx(path), images)
    labels = write_idx(tmp_path / f"labels{suffix}", np.array([1, 2, 3], dtype=np.uint8))
    np.testing.assert_array_equal(read_idx(labels), [1, 2, 3])


def test_read_idx_truncated_file(tmp_path):
    data = idx_bytes(np.zeros((5, 28, 28), dtype=np.uint8))
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(data[:-100])
    with pytest.raises(IdxError, match=r"holds 3820 data bytes, expected 3920 for shape \(5, 28, 28\)"):
        read_idx(path)
    path.write_bytes(data[:10])  # cut inside the header
    with pytest.raises(IdxError, match="truncated"):
        read_idx(path)


def test_read_idx_absurd_header(tmp_path):
    path = tmp_path / "huge-idx3-ubyte"
    path.write_bytes(bytes([0, 0, 0x08, 3]) + (2**32 - 1).to_bytes(4, "big") * 3 + bytes(10))
    with pytest.raises(IdxError, match=f"holds 10 data bytes, expected {(2**32 - 1) ** 3} for shape"):
        read_idx(path)


def test_read_idx_truncated_gzip(tmp_path):
    blob = gzip.compress(idx_bytes(np.zeros((50, 28, 28), dtype=np.uint8)))
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(IdxError, match="cannot read IDX file"):
        read_idx(path)


def test_read_idx_bad_magic(tmp_path):
    path = tmp_path / "train-labels-idx1-ubyte"
    path.write_bytes(b"PK\x03\x04 this is a zip file, not IDX")
    with pytest.raises(IdxError, match="is not an IDX file \\(bad magic number\\)"):
        read_idx(path)
    path.write_bytes(b"\x00\x00\x0d\x01" + (3).to_bytes(4, "big") + b"\x00" * 12)  # float32 data
    with pytest.raises(IdxError, match="only unsigned-byte IDX data is supported \\(type code 0x0d\\)"):
        read_idx(path)
    with pytest.raises(IdxError, match="cannot read IDX file"):
        read_idx(tmp_path / "missing")


def test_missing_fashion_mnist_says_how_to_install(tmp_path):
    dm = FashionMNISTDataModule(data_dir=str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        dm.setup("fit")


@pytest.mark.skipif(not Path(FASHION_MNIST_DIR).is_dir(), reason="needs apt-get install dataset-fashion-mnist")
def test_fashion_mnist_from_the_debian_package():
    dm = FashionMNISTDataModule(val_size=1000, train_subset=500)
    s = dm.splits
    assert s.x_train.shape == (500, 1, 28, 28) and s.x_val.shape == (1000, 1, 28, 28)
    assert s.x_test.shape == (10000, 1, 28, 28) and s.y_test.shape == (10000,)
    assert 0.0 <= s.x_train.min() and s.x_train.max() <= 1.0
    assert set(s.y_test.tolist()) == set(range(10))
    assert dm.preprocessing.class_names[9] == "Ankle boot"


@pytest.mark.parametrize("pixel_scale", ["unit", "blundell"])
def test_mnist_from_fake_idx_files(tmp_path, pixel_scale):
    folder = write_fake_mnist(tmp_path / "mnist", num_train=40, num_test=10, gz=pixel_scale == "unit")
    dm = MNISTDataModule(data_dir=str(folder), pixel_scale=pixel_scale, download=False, val_size=8)
    s = dm.splits
    assert s.x_train.shape == (32, 1, 28, 28) and s.x_val.shape == (8, 1, 28, 28) and s.x_test.shape == (10, 1, 28, 28)
    divisor = 126.0 if pixel_scale == "blundell" else 255.0
    assert s.x_train.max().item() == pytest.approx(255 / divisor, rel=1e-6)  # the paper's pixels / 126
    assert dm.preprocessing.scale == pytest.approx(255.0 / divisor)


def test_mnist_without_files_and_download_off(tmp_path):
    dm = MNISTDataModule(data_dir=str(tmp_path), download=False)
    with pytest.raises(FileNotFoundError, match="MNIST IDX files .* not found in"):
        dm.setup("fit")


def test_mnist_mismatched_labels_and_val_size(tmp_path):
    folder = write_fake_mnist(tmp_path / "mnist", num_train=20, num_test=5)
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.zeros(19, dtype=np.uint8))
    with pytest.raises(IdxError, match="20 training images but 19 labels"):
        MNISTDataModule(data_dir=str(folder), download=False, val_size=5).setup()
    folder = write_fake_mnist(tmp_path / "mnist2", num_train=20, num_test=5)
    with pytest.raises(ValueError, match="data.val_size=20 leaves no training images"):
        MNISTDataModule(data_dir=str(folder), download=False, val_size=20).setup()
    with pytest.raises(ValueError, match="data.pixel_scale must be 'unit' or 'blundell', got 'x'"):
        MNISTDataModule(data_dir=str(folder), pixel_scale="x")


# -- CSV --------------------------------------------------------------------------------------------------


def _write_csv(path: Path, rows: int = 40, **overrides) -> Path:
    rng = np.random.default_rng(0)
    columns = {"a": rng.normal(size=rows), "b": rng.normal(size=rows) * 5 + 2, "label": rng.integers(0, 3, rows)}
    columns["y"] = columns["a"] * 2 + 1
    columns.update(overrides)
    header = ",".join(columns)
    lines = [",".join(str(columns[c][i]) for c in columns) for i in range(rows)]
    path.write_text(header + "\n" + "\n".join(lines) + "\n")
    return path


def test_csv_regression_shapes_names_and_split_sizes(tmp_path):
    """Shapes, names and the 40 rows split (units: test_csv_regression_features_and_target_are_standardised_...)."""
    path = _write_csv(tmp_path / "data.csv")
    dm = CSVDataModule(str(path), target="y", task="regression", feature_columns=["a", "b"])
    s = dm.splits
    assert dm.input_shape == [2] and dm.num_outputs == 1 and dm.task == "regression"
    assert s.x_train.mean(0).abs().max() < 1e-5
    pre = dm.preprocessing
    assert list(pre.feature_names) == ["a", "b"] and list(pre.target_names) == ["y"]
    assert len(s.y_train) + len(s.y_val) + len(s.y_test) == 40


def test_csv_classification_maps_labels(tmp_path):
    labels = np.array(["cat", "dog", "emu", "dog"] * 10)
    path = _write_csv(tmp_path / "data.csv", label=labels)
    dm = CSVDataModule(str(path), target="label", task="classification", feature_columns=["a", "b"])
    assert dm.num_outputs == 3 and list(dm.preprocessing.class_names) == ["cat", "dog", "emu"]
    assert dm.splits.y_train.dtype == torch.long


def test_csv_missing_target_column(tmp_path):
    path = _write_csv(tmp_path / "data.csv")
    with pytest.raises(CSVDataError, match="data.target: column 'price' not in"):
        CSVDataModule(str(path), target="price").setup()


def test_csv_non_numeric_feature(tmp_path):
    path = _write_csv(tmp_path / "data.csv", b=np.array(["red", "blue"] * 20))
    with pytest.raises(CSVDataError, match=r"feature column\(s\) \['b'\] are not numeric"):
        CSVDataModule(str(path), target="y").setup()


def test_csv_nan_feature_and_target(tmp_path):
    a = np.random.default_rng(1).normal(size=40)
    a[7] = np.nan
    path = _write_csv(tmp_path / "data.csv", a=a)
    with pytest.raises(CSVDataError, match="feature column 'a' has a missing or infinite value at row 9"):
        CSVDataModule(str(path), target="label", task="classification").setup()
    y = np.arange(40, dtype=float)
    y[3] = np.nan
    path = _write_csv(tmp_path / "data2.csv", y=y)
    with pytest.raises(CSVDataError, match="data.target: column 'y' has 1 missing value"):
        CSVDataModule(str(path), target="y").setup()


def test_csv_other_errors(tmp_path):
    with pytest.raises(CSVDataError, match="data.path: no such file"):
        CSVDataModule(str(tmp_path / "none.csv"), target="y").setup()
    small = _write_csv(tmp_path / "small.csv", rows=5)
    with pytest.raises(CSVDataError, match="has 5 rows; at least 10"):
        CSVDataModule(str(small), target="y").setup()
    path = _write_csv(tmp_path / "data.csv", label=np.array(["x", "y"] * 20))
    with pytest.raises(CSVDataError, match="column 'label' is not numeric; use task=classification"):
        CSVDataModule(str(path), target="label", task="regression").setup()
    with pytest.raises(ValueError, match="data.task must be 'classification' or 'regression', got 'ranking'"):
        CSVDataModule(str(path), target="y", task="ranking")


def test_stored_class_paths_old_and_new_resolve_to_the_same_classes():
    from lightning_bnn.data import CSVDataModule, DigitsDataModule, FashionMNISTDataModule
    from lightning_bnn.data.stored import StoredDataError, datamodule_class

    # paths recorded by runs before the package was split into layers, the full and the short path
    for path in ("lightning_bnn.idx.FashionMNISTDataModule", "lightning_bnn.data.idx.FashionMNISTDataModule"):
        assert datamodule_class(path) is FashionMNISTDataModule
    assert datamodule_class("lightning_bnn.tabular.CSVDataModule") is CSVDataModule
    assert datamodule_class("lightning_bnn.data.DigitsDataModule", bundled_only=True) is DigitsDataModule
    with pytest.raises(StoredDataError, match="only rebuilt for the bundled data sets"):
        datamodule_class("lightning_bnn.tabular.CSVDataModule", bundled_only=True)
    with pytest.raises(StoredDataError, match="is not a lightning_bnn data module"):
        datamodule_class("os.system")


def test_toy_regression_noise_has_the_configured_std():
    """y = f(x + e) + e with e ~ N(0, noise_std^2): to first order y - f(x) = e (1 + f'(x)) (f(x) = curve - x).

    Where |1 + f'(x)| > 1 the residual divided by it estimates e; 4,000 points give its std within
    ~3% (measured 0.0202 for 0.02, 0.0531 for 0.05: second-order terms grow with the noise);
    noise_std = 0 gives the curve exactly.
    """

    def f(x):
        return x + 0.3 * np.sin(2 * np.pi * x) + 0.3 * np.sin(4 * np.pi * x)

    def slope(x):
        return 1 + 0.6 * np.pi * np.cos(2 * np.pi * x) + 1.2 * np.pi * np.cos(4 * np.pi * x)

    for noise_std in (0.02, 0.05):
        s = ToyRegressionDataModule(num_train=4000, noise_std=noise_std, seed=1).splits
        x, y = s.x_train.double().numpy()[:, 0], s.y_train.double().numpy()[:, 0]
        steep = np.abs(slope(x)) > 1.0
        e = (y - f(x))[steep] / slope(x)[steep]
        assert np.std(e) == pytest.approx(noise_std, rel=0.1), noise_std
    s = ToyRegressionDataModule(num_train=50, noise_std=0.0, seed=1).splits
    np.testing.assert_allclose(s.y_train.numpy()[:, 0], f(s.x_train.double().numpy()[:, 0]), atol=1e-5)


def test_csv_regression_features_and_target_are_standardised_and_restored_in_units(tmp_path):
    """Features and target are standardised (mean 0, std 1 on the training split), and the saved
    preprocessing maps them back to the CSV's own units: there y = 2 a + 1 exactly."""
    path = _write_csv(tmp_path / "data.csv")
    dm = CSVDataModule(str(path), target="y", task="regression", feature_columns=["a", "b"])
    s, pre = dm.splits, dm.preprocessing
    torch.testing.assert_close(s.x_train.mean(0), torch.zeros(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(s.x_train.std(0, unbiased=False), torch.ones(2), atol=1e-3, rtol=0)
    assert abs(float(s.y_train.mean())) < 1e-5 and abs(float(s.y_train.std(unbiased=False)) - 1) < 1e-3
    for x, y in ((s.x_train, s.y_train), (s.x_test, s.y_test)):
        a = x[:, 0].double() * pre.feature_std[0] + pre.feature_mean[0]
        raw_y = y[:, 0].double() * pre.target_std + pre.target_mean
        torch.testing.assert_close(raw_y, 2 * a + 1, atol=1e-4, rtol=0)
    # the unit scale itself: b was drawn with std 5 around 2
    assert 3.0 < pre.feature_std[1] < 7.0 and 0.0 < pre.feature_mean[1] < 4.0
