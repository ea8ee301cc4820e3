"""Must hold 5 (bad input) for the training entry points: CLI configs and CSV data, fuzzed with Hypothesis.

Every generated config holds exactly one bad value (or unknown key) on top of the
bundled digits config; the CLI must exit with status 2 and an ``error:`` message that
names the field, quickly, without starting a run. Every generated CSV must either load
as finite arrays or raise :class:`CSVDataError`, never another exception.
"""

from __future__ import annotations

import contextlib
import io
import math
import string
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from lightning_bnn.data.tabular import MAX_COLUMNS, CSVDataError, CSVDataModule, read_training_csv
from lightning_bnn.nn.likelihoods import Task
from tests.reliability.jobs import DIGITS

#: seconds one bad config may take to be refused (parsing, building the model; no training)
CONFIG_SECONDS = 20.0
#: seconds one bad CSV may take to be refused
CSV_SECONDS = 10.0
FUZZ = settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
#: CSV checks take milliseconds: fuzz them harder
FUZZ_CSV = settings(FUZZ, max_examples=100)

# -- values that are wrong for a field ------------------------------------------------------------
YAML_WORDS = {"true", "false", "null", "none", "yes", "no", "on", "off", "y", "n", "inf", "nan", "infinity"}
words = st.text(string.ascii_letters, min_size=1, max_size=8).filter(lambda w: w.lower() not in YAML_WORDS)
fractional = st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: not f.is_integer())
non_finite = st.sampled_from([math.nan, math.inf, -math.inf])
not_a_count = st.one_of(words, fractional, st.lists(st.integers(), max_size=3))


def count_outside(low: int, high: int | None = None) -> st.SearchStrategy:
    """Integers below ``low`` or above ``high``, plus values of the wrong type."""
    bad = [st.integers(max_value=low - 1)]
    if high is not None:
        bad.append(st.integers(min_value=high + 1, max_value=10**12))
        bad.append(st.just(10**7))
    return st.one_of(*bad, not_a_count)


def positive_float_broken() -> st.SearchStrategy:
    return st.one_of(st.floats(max_value=0.0, allow_nan=False), non_finite, words)


#: (path in the YAML config, strategy of wrong values)
BAD_FIELDS = [
    (("model", "num_samples_eval"), count_outside(1, 10_000)),
    (("model", "num_samples_train"), count_outside(1, 1_000)),
    (("model", "hidden_sizes"), st.one_of(st.lists(st.integers(max_value=0), min_size=1, max_size=3), words)),
    (("model", "lr"), positive_float_broken()),
    (("model", "kl_scale"), st.one_of(st.floats(max_value=-1e-9, allow_nan=False), non_finite, words)),
    (("model", "estimator"), words),
    (("model", "kl_weighting"), words),
    (("model", "prior", "name"), words),
    (("model", "prior", "sigma"), positive_float_broken()),
    (("model", "dropout"), st.one_of(st.floats(min_value=1.0, allow_infinity=False), st.floats(max_value=-1e-9))),
    (("data", "init_args", "batch_size"), count_outside(1)),
    (("data", "init_args", "seed"), st.one_of(st.integers(max_value=-1), words)),
    (("data", "init_args", "val_fraction"), st.one_of(st.floats(min_value=1.0), st.floats(max_value=0.0), words)),
    (("trainer", "max_epochs"), st.one_of(st.integers(max_value=-2, min_value=-(10**9)), fractional, words)),
]
UNKNOWN_KEY_SECTIONS = [("model",), ("data", "init_args"), ("trainer",), ()]


@st.composite
def bad_configs(draw):
    """(config dict, name of the field the error must name)."""
    if draw(st.booleans()):
        path, strategy = draw(st.sampled_from(BAD_FIELDS))
        value = draw(strategy)
    else:
        section = draw(st.sampled_from(UNKNOWN_KEY_SECTIONS))
        path, value = (*section, "x_" + draw(words)), draw(st.integers())
    return _digits_with(path, value)


def _digits_with(path: tuple[str, ...], value) -> tuple[dict, str]:
    config = yaml.safe_load(DIGITS.read_text())
    config["trainer"].update(max_epochs=1, limit_train_batches=1, limit_val_batches=1)
    node = config
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    return config, path[-1]


@given(case=bad_configs())
@example(case=_digits_with(("model", "num_samples_eval"), 0))
@example(case=_digits_with(("model", "num_samples_eval"), 10**7))
@example(case=_digits_with(("trainer", "max_epochs"), -3))  # refused by the Trainer, not by our code
@example(case=_digits_with(("model", "x_unknown"), 1))
@FUZZ
def test_bad_config_is_refused_with_the_field_named(case, tmp_path):
    from lightning_bnn.cli.app import main

    config, field = case
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    err = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()), pytest.raises(SystemExit) as ex:
        main(["fit", "--config", str(path), "--mlflow.tracking_uri", uri, "--test_after_fit", "false"])
    elapsed = time.perf_counter() - start
    text = err.getvalue()
    assert ex.value.code == 2, text[-2000:]
    message = text[text.rfind("error:") :]
    assert field in message, (field, message[:2000])
    assert elapsed < CONFIG_SECONDS
    _assert_no_runs(uri)


def _assert_no_runs(uri: str) -> None:
    db = Path(uri[len("sqlite:///") :])
    if not db.exists():
        return
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []


# -- CSV data ---------------------------------------------------------------------------------------
def write(tmp_path: Path, text: str | bytes, name: str = "data.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def rows(n: int, columns: int = 3) -> str:
    rng = np.random.default_rng(0)
    header = ",".join([f"x{i}" for i in range(columns - 1)] + ["y"])
    return header + "\n" + "\n".join(",".join(f"{v:.4f}" for v in rng.normal(size=columns)) for _ in range(n)) + "\n"


CSV_CASES = {
    "empty file": (b"", "not a readable CSV"),
    "header only": ("x0,x1,y\n", "has 0 rows"),
    "one row": (rows(1), "has 1 rows"),
    "no target column": (rows(20).replace(",y\n", ",z\n", 1), "column 'y' not in"),
    "target only": ("y\n" + "\n".join(str(i) for i in range(20)), "no feature columns"),
    "text in a feature": (rows(20).replace("\n", "\nabc,", 1).replace("x0,", "x0,x_extra,", 1), "not numeric"),
    "NaN feature": (rows(20) + "nan,1,2\n", "missing or infinite value"),
    "inf feature": (rows(20) + "inf,1,2\n", "missing or infinite value"),
    "missing target": (rows(20) + "1,2,\n", "missing value"),
    "inf target": (rows(20) + "1,2,inf\n", "infinite values"),
    "text target (regression)": (rows(20) + "1,2,abc\n", "is not numeric"),
    "binary garbage": (bytes(range(256)) * 64, "CSV"),
    "a million columns": (",".join(f"c{i}" for i in range(1_000_000)) + ",y\n", "header line longer than"),
    "too many columns": (",".join(f"c{i}" for i in range(MAX_COLUMNS + 1)) + ",y\n", f"more than {MAX_COLUMNS}"),
}


@pytest.mark.parametrize("name", list(CSV_CASES))
def test_bad_csv_gives_csv_data_error(tmp_path, name):
    content, message = CSV_CASES[name]
    path = write(tmp_path, content)
    start = time.perf_counter()
    with pytest.raises(CSVDataError, match=message):
        read_training_csv(path, "y", Task.regression, None)
    assert time.perf_counter() - start < CSV_SECONDS


def test_csv_that_is_a_folder(tmp_path):
    with pytest.raises(CSVDataError, match="not a file"):
        read_training_csv(tmp_path, "y", Task.regression, None)


def test_constant_columns_are_standardised_without_nan(tmp_path):
    """Constant features (std 0) pass through centred; a constant regression target too: no NaN anywhere."""
    text = "a,b,y\n" + "\n".join("1.0,2.0,5.0" for _ in range(20)) + "\n"
    module = CSVDataModule(str(write(tmp_path, text)), target="y")
    splits = module.splits
    for tensor in (splits.x_train, splits.y_train, splits.x_test):
        assert np.isfinite(tensor.numpy()).all()
    assert list(module.preprocessing.feature_std) == [1.0, 1.0]


def test_single_class_target_is_refused(tmp_path):
    text = "a,y\n" + "\n".join(f"{i},cat" for i in range(20)) + "\n"
    with pytest.raises(CSVDataError, match="single class"):
        read_training_csv(write(tmp_path, text), "y", Task.classification, None)


cells = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers().map(str),
    st.text(string.printable, max_size=6),
    st.just(""),
)


@given(
    header=st.lists(st.text(string.ascii_letters + string.digits + " _,\"'", min_size=0, max_size=5), max_size=6),
    body=st.lists(st.lists(cells, max_size=7), max_size=25),
    task=st.sampled_from([Task.regression, Task.classification]),
)
@FUZZ_CSV
def test_fuzzed_csv_loads_finite_or_raises_csv_data_error(tmp_path, header, body, task):
    text = ",".join(header) + "\n" + "\n".join(",".join(row) for row in body)
    path = write(tmp_path, text)
    target = header[-1] if header else "y"
    start = time.perf_counter()
    try:
        x, y, features, _ = read_training_csv(path, target, task, None)
    except CSVDataError:
        pass
    else:
        assert np.isfinite(x).all() and x.shape == (len(y), len(features))
        if task is Task.regression:
            assert np.isfinite(y).all()
    assert time.perf_counter() - start < CSV_SECONDS


@given(data=st.binary(max_size=4096))
@FUZZ_CSV
def test_fuzzed_bytes_load_or_raise_csv_data_error(tmp_path, data):
    path = write(tmp_path, data)
    try:
        read_training_csv(path, "y", Task.regression, None)
    except CSVDataError:
        pass
