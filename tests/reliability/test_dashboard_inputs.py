"""Must hold 5 for the dashboard's uploads: hostile, huge and broken files end in an InputError, fast.

The bombs and huge images are fed to :func:`dashboard.inputs.image_to_model_input` in a
fresh process (``tests/reliability/hostile_images.py``) so that its peak memory can be
measured; Hypothesis then fuzzes the image and CSV parsers in this process with random
bytes, truncations and byte flips of valid files.
"""

from __future__ import annotations

import json
import string
import subprocess
import sys
import time

import numpy as np
import pytest
from bnn_testing import cli_env
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dashboard.inputs import MAX_CSV_ROWS, MAX_UPLOAD_BYTES, InputError, image_to_model_input, parse_feature_csv
from tests.reliability.hostile_images import DIGITS_PREPROCESSING, good_jpeg, good_png

#: seconds one upload may take to be parsed or refused
UPLOAD_SECONDS = 2.0
#: longest message shown for a refused upload (a file's content is never echoed whole)
MESSAGE_CHARS = 600
#: peak memory (RSS) of a process that parses every hostile image and one at the size limit
PEAK_MEMORY_MB = 400
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

EXPECTED = {
    "PNG bomb 20000x20000 (real pixel data)": "too large",
    "PNG header 20000x20000 RGB, truncated data": "too large",
    "PNG 5000x5000 (over the pixel limit, under Pillow's)": "too large",
    "JPEG claiming 20000x20000": "too large",
    "JPEG claiming 65535x65535": "too large",
    "PNG with a 64 MB zTXt text bomb": "could not be read",
    "PNG cut after its header": "truncated",
    "JPEG cut in half": "could not be read",
    "PNG 4096x4096 RGB, at the pixel limit": "ACCEPTED",
}


def test_bombs_and_huge_images_are_refused_in_bounded_time_and_memory():
    out = subprocess.run(
        [sys.executable, "-m", "tests.reliability.hostile_images"],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(report["results"]) == set(EXPECTED)
    for name, result in report["results"].items():
        assert EXPECTED[name] in result["outcome"], (name, result)
        assert len(result["outcome"]) < MESSAGE_CHARS
        assert result["seconds"] < UPLOAD_SECONDS, (name, result)
    assert report["peak_mb"] < PEAK_MEMORY_MB, report["peak_mb"]


def check_image(data: bytes) -> None:
    """An upload either becomes a finite [1, 8, 8] input or raises InputError, in bounded time."""
    start = time.perf_counter()
    try:
        processed = image_to_model_input("upload.png", data, DIGITS_PREPROCESSING)
    except InputError as err:
        assert str(err).startswith("upload.png: ") and len(str(err)) < MESSAGE_CHARS
    else:
        assert processed.array.shape == (1, 8, 8) and np.isfinite(processed.array).all()
    assert time.perf_counter() - start < UPLOAD_SECONDS


@pytest.mark.parametrize("make", [good_png, good_jpeg])
def test_valid_uploads_still_work(make):
    processed = image_to_model_input("upload.png", make(), DIGITS_PREPROCESSING)
    assert processed.array.shape == (1, 8, 8) and processed.array.max() > 0


@given(data=st.binary(max_size=2048))
@FUZZ
def test_fuzzed_bytes_as_image(data):
    check_image(data)


@given(kind=st.sampled_from(["png", "jpeg"]), cut=st.floats(0.0, 1.0))
@FUZZ
def test_truncated_images(kind, cut):
    data = good_png() if kind == "png" else good_jpeg()
    check_image(data[: int(len(data) * cut)])


@given(
    kind=st.sampled_from(["png", "jpeg"]),
    flips=st.lists(st.tuples(st.floats(0.0, 1.0, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=8),
)
@FUZZ
def test_corrupted_images(kind, flips):
    data = bytearray(good_png() if kind == "png" else good_jpeg())
    for where, value in flips:
        data[int(where * len(data))] = value
    check_image(bytes(data))


# -- CSV uploads -------------------------------------------------------------------------------------
FEATURES = ["a", "b"]


def check_csv(data: bytes) -> None:
    start = time.perf_counter()
    try:
        frame = parse_feature_csv("upload.csv", data, FEATURES)
    except InputError as err:
        assert str(err).startswith("upload.csv: ") and len(str(err)) < MESSAGE_CHARS
    else:
        assert list(frame.columns) == FEATURES and 1 <= len(frame) <= MAX_CSV_ROWS
        assert np.isfinite(frame.to_numpy()).all()
    assert time.perf_counter() - start < UPLOAD_SECONDS


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (",".join(f"c{i}" for i in range(700_000)).encode()[:MAX_UPLOAD_BYTES], "columns; the model takes exactly"),
        (b"a,b\n" + b"1,2\n" * 1_000_000, "1,000,000 rows is too many"),
        (b"a,b\n" + b"1," + b"9" * 4_000_000 + b"\n", "column 'b', row 2: '9999"),
        (b"a,b\n" + b'"' + b"x" * 4_000_000 + b"\n", "upload.csv:"),
        (("a,b\n" + "x" * 4_000_000 + ",1\n").encode(), "column .a., row 2: .xxx"),
        (("a,b," + "c" * 4_000_000 + "\n1,2,3\n").encode(), "unexpected column"),
        (b"\x00" * 4_000_000, "upload.csv:"),
    ],
    ids=[
        "a million columns",
        "a million rows",
        "a 4-million-digit number",
        "unterminated quote",
        "a 4 MB word",
        "a 4 MB column name",
        "NUL bytes",
    ],
)
def test_huge_csv_uploads_are_refused_fast(data, message):
    start = time.perf_counter()
    with pytest.raises(InputError, match=message) as err:
        parse_feature_csv("upload.csv", data, FEATURES)
    assert time.perf_counter() - start < UPLOAD_SECONDS
    assert len(str(err.value)) < MESSAGE_CHARS


cells = st.one_of(
    st.floats().map(repr),
    st.integers().map(str),
    st.text(string.printable, max_size=5),
    st.sampled_from(["", "nan", "inf", "-inf", "1e999", "NA", " 1 ", '"2"']),
)


@given(
    header=st.lists(st.sampled_from(["a", "b", "c", " a", "", '"b"']), max_size=4),
    body=st.lists(st.lists(cells, max_size=4), max_size=12),
)
@FUZZ
def test_fuzzed_csv_uploads(header, body):
    check_csv((",".join(header) + "\n" + "\n".join(",".join(row) for row in body)).encode())


@given(data=st.binary(max_size=2048))
@FUZZ
def test_fuzzed_bytes_as_csv(data):
    check_csv(data)


def test_a_long_thin_strip_is_fitted_in_bounded_time():
    # found by test_corrupted_images: a JPEG whose header became 28 x 42268 pixels was centred on a
    # 42268^2 square before resizing (3-4 s); a crop longer than MAX_FRAME_SIDE is shrunk first
    import io

    from PIL import Image

    strip = np.zeros((42268, 28), dtype=np.uint8)
    strip[1000:41000, 10:18] = 255
    buffer = io.BytesIO()
    Image.fromarray(strip).save(buffer, "PNG")
    check_image(buffer.getvalue())
