"""Upload parsing: good images and CSVs convert correctly; every bad input gets its own message."""

from __future__ import annotations

import io
import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

from dashboard import inputs
from dashboard.inputs import InputError
from lightning_bnn.data.preprocessing import Preprocessing

DIGITS = {"kind": "image", "channels": 1, "height": 8, "width": 8, "ink": "light", "scale": 1.0}
MNIST = {**DIGITS, "height": 28, "width": 28}
TABULAR = {"kind": "tabular", "feature_names": ["a", "b"], "feature_mean": [1.0, 10.0], "feature_std": [2.0, 5.0]}


def encode(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def digit_image(dark_on_light: bool = True, size: int = 64, mode: str = "L") -> Image.Image:
    """A bar '1'-like stroke: ink in the middle columns."""
    ink = np.zeros((size, size), dtype=np.uint8)
    ink[size // 8 : -size // 8, size // 2 - size // 16 : size // 2 + size // 16] = 255
    pixels = 255 - ink if dark_on_light else ink
    return Image.fromarray(pixels).convert(mode)


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (the pixel data is a stub)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")
    )


def test_dark_on_light_png_is_inverted_centred_and_scaled():
    item = inputs.image_to_model_input("one.png", encode(digit_image(True)), DIGITS)
    assert item.inverted is True
    assert item.array.shape == (1, 8, 8) and item.array.dtype == np.float32
    assert item.array.max() == pytest.approx(1.0) and item.array.min() >= 0.0
    # the stroke is vertical and centred: the middle columns are bright, the border columns dark
    assert item.array[0, :, 3:5].mean() > 0.5
    assert item.array[0, :, 0].max() == 0.0 and item.array[0, :, 7].max() == 0.0
    assert item.original_size == (64, 64)


def test_light_on_dark_jpeg_is_not_inverted_and_fills_mnist_box():
    item = inputs.image_to_model_input("one.jpg", encode(digit_image(False, 100, "RGB"), "JPEG"), MNIST)
    assert item.inverted is False
    assert item.array.shape == (1, 28, 28)
    assert item.array[0, :3].max() < 0.1  # the 4-pixel MNIST margin stays empty


def test_scale_and_transparent_png():
    rgba = Image.new("RGBA", (40, 40), (0, 0, 0, 0))
    rgba.paste((0, 0, 0, 255), (15, 5, 25, 35))  # dark stroke on transparent: transparent becomes white paper
    item = inputs.image_to_model_input("t.png", encode(rgba), {**DIGITS, "scale": 16.0})
    assert item.inverted is True
    assert item.array.max() == pytest.approx(16.0)
    assert inputs.pixels_from_model_input(item.array, {**DIGITS, "scale": 16.0}).max() == 255


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "the file is empty"),
        (b"hello, this is text\n", "not an image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 10, "could not be read \\(corrupt file\\?\\)"),
        (b"x" * (inputs.MAX_UPLOAD_BYTES + 1), "the file is 5.2 MB; the limit is 5 MB"),
    ],
    ids=["empty", "text", "corrupt-header", "oversized"],
)
def test_bad_bytes(data, message):
    with pytest.raises(InputError, match=message):
        inputs.image_to_model_input("bad.png", data, DIGITS)


def test_truncated_png():
    noisy = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))
    data = encode(noisy)
    with pytest.raises(InputError, match="corrupt or truncated"):
        inputs.image_to_model_input("cut.png", data[: len(data) // 2], DIGITS)


def test_animated_png_and_gif():
    frames = [digit_image(), digit_image(False)]
    apng = encode(frames[0], "PNG", save_all=True, append_images=frames[1:])
    with pytest.raises(InputError, match="animated images are not supported"):
        inputs.image_to_model_input("anim.png", apng, DIGITS)
    gif = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    with pytest.raises(InputError, match="GIF images are not supported; upload a PNG or JPEG"):
        inputs.image_to_model_input("anim.gif", gif, DIGITS)


def test_sixteen_bit_png():
    deep = Image.fromarray(np.full((16, 16), 40000, dtype=np.uint16))
    assert deep.mode.startswith("I")
    with pytest.raises(InputError, match="16-bit"):
        inputs.image_to_model_input("deep.png", encode(deep), DIGITS)


def test_cmyk_jpeg():
    with pytest.raises(InputError, match="CMYK images are not supported"):
        inputs.image_to_model_input("print.jpg", encode(digit_image(mode="CMYK"), "JPEG"), DIGITS)


def test_huge_image_refused_before_decoding():
    with pytest.raises(InputError, match="too large"):
        inputs.image_to_model_input("big.png", png_header_only(5000, 5000), DIGITS)


def test_decompression_bomb():
    with pytest.raises(InputError, match="decompression bomb"):
        inputs.image_to_model_input("bomb.png", png_header_only(40000, 40000), DIGITS)


def test_image_over_pillows_warning_limit_is_refused_as_a_bomb_without_a_warning():
    # 10000 x 10000 lies between Pillow's warning (89.5M pixels) and error (179M) limits: the warning is an error
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(InputError, match="warn.png: the image is too large to decode safely"):
            inputs.open_image("warn.png", png_header_only(10000, 10000))


def test_pixel_limit_is_inclusive_and_the_message_counts_the_pixels():
    # exactly 4096 x 4096 passes the size check (then its stub pixel data fails to decode)
    with pytest.raises(InputError, match="edge.png: the image is corrupt or truncated"):
        inputs.open_image("edge.png", png_header_only(4096, 4096))
    with pytest.raises(
        InputError, match=r"over.png: the image is 4097x4096 = 16,781,312 pixels, too large \(limit 16,777,216\)"
    ):
        inputs.open_image("over.png", png_header_only(4097, 4096))


def _transparent_with_one_black_pixel(mode: str) -> Image.Image:
    if mode == "P":  # a palette image whose index 0 is transparent
        image = Image.new("P", (4, 4), 0)
        image.putpalette([0, 0, 0] * 2)
        image.info["transparency"] = 0
        image.putpixel((1, 2), 1)
        return image
    rgba = Image.new("RGBA", (4, 4), (0, 0, 0, 0))  # transparent black
    rgba.putpixel((1, 2), (0, 0, 0, 255))
    return rgba.convert(mode)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "PA", "P"])
def test_transparent_areas_become_white_paper_in_every_mode_with_alpha(mode):
    gray = inputs.to_grayscale(_transparent_with_one_black_pixel(mode))
    expected = np.full((4, 4), 255, dtype=np.uint8)
    expected[2, 1] = 0  # the one opaque black pixel (x=1, y=2)
    assert gray.dtype == np.uint8
    np.testing.assert_array_equal(gray, expected)


def test_other_format_refused():
    with pytest.raises(InputError, match="BMP images are not supported"):
        inputs.image_to_model_input("x.bmp", encode(digit_image(), "BMP"), DIGITS)


def csv(text: str) -> bytes:
    return text.encode()


def test_good_csv_with_target_column():
    frame = inputs.parse_feature_csv("in.csv", csv("b, a ,y\n1,2,cat\n4.5,-1e3,0\n"), ["a", "b"], ["y"])
    assert list(frame.columns) == ["a", "b", "y"]
    np.testing.assert_allclose(frame[["a", "b"]].to_numpy(), [[2, 1], [-1000, 4.5]])
    assert list(frame["y"]) == ["cat", "0"]  # an allowed extra (the target) is kept as text
    x = inputs.standardise(frame[["a", "b"]].to_numpy(), TABULAR)
    np.testing.assert_allclose(x, [[0.5, -1.8], [-500.5, -1.1]], rtol=1e-6)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "the file is empty"),
        ("   \n\n", "no content"),
        ("a\n1\n", r"missing column\(s\) \['b'\]"),
        ("a,b,c\n1,2,3\n", r"unexpected column\(s\) \['c'\]"),
        ("a,b\n1,two\n", "column 'b', row 2: 'two' is not a number"),
        ("a,b\n1,2\n3,nan\n", "column 'b', row 3: missing value"),
        ("a,b\n1,\n", "column 'b', row 2: missing value"),
        ("a,b\ninf,2\n", "column 'a', row 2: infinite value"),
        ("a,b\n-Infinity,2\n", "infinite value"),
        ("a,b\n", "no data rows"),
        ("a,b\n" + "1,2\n" * (inputs.MAX_CSV_ROWS + 1), "1,001 rows is too many; the limit is 1,000"),
        ('a,b\n1,"2\n', "could not be parsed"),
    ],
    ids=["empty", "blank", "missing", "extra", "text", "nan", "blank-cell", "inf", "neg-inf", "header", "rows", "bad"],
)
def test_bad_csv(text, message):
    with pytest.raises(InputError, match=message):
        inputs.parse_feature_csv("in.csv", csv(text), ["a", "b"])


def test_a_far_too_wide_header_is_refused_before_parsing_counting_the_allowed_extras():
    def wide(n: int) -> bytes:  # the 3 allowed columns, then n - 3 others
        names = ["a", "b", "target"] + [f"x{i}" for i in range(n - 3)]
        return (",".join(names) + "\n" + ",".join(["1"] * n) + "\n").encode()

    # up to 100 columns beyond the allowed 3 (2 features + the target): parsed, then the extras named
    with pytest.raises(InputError, match=r"unexpected column\(s\) \['x0'"):
        inputs.parse_feature_csv("in.csv", wide(103), ["a", "b"], ["target"])
    with pytest.raises(InputError, match="in.csv: the CSV has 104 columns; the model takes exactly the columns"):
        inputs.parse_feature_csv("in.csv", wide(104), ["a", "b"], ["target"])


@pytest.mark.parametrize("token", ["NA", "null", "None", "nan"])
def test_csv_missing_value_tokens(token):
    with pytest.raises(InputError, match="^in.csv: column 'b', row 2: missing value \\(empty or NaN\\).$"):
        inputs.parse_feature_csv("in.csv", csv(f"a,b\n1,{token}\n"), ["a", "b"])


def test_csv_messages_in_full_and_the_kept_target_text():
    features = ["a", "b"]
    with pytest.raises(InputError) as err:
        inputs.parse_feature_csv("in.csv", csv("a,b,c\n1,2,3\n"), features)
    assert str(err.value) == "in.csv: unexpected column(s) ['c']; the model takes exactly the columns ['a', 'b']."
    with pytest.raises(InputError) as err:
        inputs.parse_feature_csv("in.csv", csv("a,b,c\n1,2,3\n"), features, ["target"])
    assert str(err.value) == (
        "in.csv: unexpected column(s) ['c']; the model takes exactly the columns ['a', 'b']"
        " (optionally also ['target'])."
    )
    with pytest.raises(InputError, match="^in.csv: column 'a', row 2: infinite value '-inf'.$"):
        inputs.parse_feature_csv("in.csv", csv("a,b\n-inf,2\n"), features)
    with pytest.raises(InputError, match="could not be parsed: Error tokenizing data"):
        inputs.parse_feature_csv("in.csv", csv('a,b\n1,"2\n'), features)
    # the target is kept as the text written (no number parsing, no leading space), cut at 200 characters
    long = "y" * 300
    frame = inputs.parse_feature_csv("in.csv", csv(f"a, b, target\n1, 2, 007\n3, 4,{long}\n"), features, ["target"])
    assert list(frame["target"]) == ["007", "y" * 200]
    np.testing.assert_array_equal(frame[features].to_numpy(), [[1.0, 2.0], [3.0, 4.0]])
    assert list(inputs.parse_feature_csv("in.csv", csv("a,b,target\n1,2,007\n"), features, ["target"])["target"]) == [
        "007"
    ]
    # exactly the row limit is accepted
    rows = inputs.parse_feature_csv("in.csv", csv("a,b\n" + "1,2\n" * inputs.MAX_CSV_ROWS), features)
    assert len(rows) == inputs.MAX_CSV_ROWS


def test_binary_csv():
    with pytest.raises(InputError, match="not a text CSV"):
        inputs.parse_feature_csv("in.csv", encode(digit_image()), ["a", "b"])


def test_form_values():
    np.testing.assert_allclose(inputs.validate_form_values({"a": 1, "b": "2.5"}, ["a", "b"]), [[1.0, 2.5]])
    with pytest.raises(InputError, match="enter a value for 'b'"):
        inputs.validate_form_values({"a": 1}, ["a", "b"])
    with pytest.raises(InputError, match="'a': 'x' is not a number"):
        inputs.validate_form_values({"a": "x", "b": 1}, ["a", "b"])
    with pytest.raises(InputError, match="not a finite number"):
        inputs.validate_form_values({"a": float("nan"), "b": 1}, ["a", "b"])
    with pytest.raises(InputError, match="^'b': '-inf' is not a finite number.$"):
        inputs.validate_form_values({"a": 1, "b": "-inf"}, ["a", "b"])


def test_upload_warnings_in_full_and_at_their_limits():
    pre = Preprocessing.from_dict(MNIST)  # a 28x28 model
    blank_page = "; the prediction below is the model's answer to a blank page."
    page = np.full((28, 28), 200, np.uint8)
    assert inputs.upload_warnings(page, pre) == ("the image holds no ink: it is a single colour" + blank_page,)
    page[3, 4] = 200 - (inputs.MIN_CONTRAST - 1)
    assert inputs.upload_warnings(page, pre) == (
        f"the image holds no ink: its contrast is {inputs.MIN_CONTRAST - 1} gray levels out of 255" + blank_page,
    )
    page[3, 4] = 200 - inputs.MIN_CONTRAST  # exactly the least contrast that counts as ink
    assert inputs.upload_warnings(page, pre) == ()
    page[3, 4] = 0
    small = "the image is {}x{} pixels, smaller than the model's 28x28 input; it is enlarged, so the prediction "
    small += "may mean little."
    assert inputs.upload_warnings(np.pad(page, ((0, 0), (0, 5)))[:27], pre) == (small.format(33, 27),)  # short
    assert inputs.upload_warnings(np.pad(page, ((0, 5), (0, 0)))[:, :27], pre) == (small.format(27, 33),)  # narrow


def test_several_uploads_keep_their_order_and_a_bad_one_only_gives_its_message():
    good = encode(digit_image())
    items, errors = inputs.images_to_model_inputs([("a.png", good), ("b.txt", b"text"), ("c.png", good)], DIGITS)
    assert [i.name for i in items] == ["a.png", "c.png"]
    np.testing.assert_array_equal(items[0].array, inputs.image_to_model_input("a.png", good, DIGITS).array)
    assert len(errors) == 1 and errors[0].startswith("b.txt: this is not an image")


def test_the_preview_is_the_model_input_as_pixels_and_a_tabular_model_refuses_images():
    item = inputs.image_to_model_input("a.png", encode(digit_image()), DIGITS)
    assert item.name == "a.png" and item.preview.shape == (8, 8) and item.preview.dtype == np.uint8
    np.testing.assert_array_equal(item.preview, inputs.pixels_from_model_input(item.array, DIGITS))
    with pytest.raises(InputError, match="^this model does not take images$"):
        inputs.image_to_model_input("a.png", encode(digit_image()), TABULAR)


def test_message_helpers_cut_long_values_and_lists():
    assert inputs._short("x" * 38) == repr("x" * 38)  # 40 characters: kept
    assert inputs._short("x" * 39) == "'" + "x" * 38 + "…"  # 41: cut to 39 and the ellipsis
    names = [f"c{i}" for i in range(12)]
    assert inputs._names(names[:10]) == "[" + ", ".join(repr(n) for n in names[:10]) + "]"
    assert inputs._names(names) == "[" + ", ".join(repr(n) for n in names[:10]) + ", … 2 more]"
    assert inputs._header_columns("\r\nfirst name,last name\r\n1,2\r\n") == 2  # spaces inside names


def test_upscale_repeats_each_pixel_in_a_square():
    preview = np.arange(6, dtype=np.uint8).reshape(2, 3)
    np.testing.assert_array_equal(inputs.upscale(preview, size=7), np.repeat(np.repeat(preview, 2, 0), 2, 1))
    assert inputs.upscale(np.zeros((8, 8), np.uint8)).shape == (112, 112)  # the default: 8x8 pixels 14x larger
    big = np.zeros((200, 100), np.uint8)
    assert inputs.upscale(big).shape == (200, 100)  # already larger than the size: unchanged


@pytest.mark.parametrize(
    ("image", "preprocessing", "expected"),
    [
        (Image.new("L", (64, 64), 0), DIGITS, ["single colour"]),  # all black
        (Image.new("RGB", (64, 64), (250, 250, 250)), MNIST, ["single colour"]),  # white page
        (
            Image.fromarray(np.full((64, 64), 120, np.uint8) + (np.eye(64, dtype=np.uint8) * 10)),
            DIGITS,
            ["contrast is 10"],
        ),
        (Image.new("L", (1, 1), 255), MNIST, ["single colour", "1x1 pixels, smaller than the model's 28x28"]),
        (digit_image(True, 20), MNIST, ["20x20 pixels, smaller than the model's 28x28"]),
        (digit_image(True, 64), MNIST, []),  # a real stroke, large enough: no warning
        (digit_image(False, 16), DIGITS, []),  # larger than the 8x8 input, with a stroke: no warning
    ],
)
def test_uploads_that_hold_no_digit_are_flagged_and_still_answered(image, preprocessing, expected):
    item = inputs.image_to_model_input("u.png", encode(image), preprocessing)
    assert len(item.warnings) == len(expected)
    for warning, fragment in zip(item.warnings, expected):
        assert fragment in warning
    assert item.array.shape == (1, preprocessing["height"], preprocessing["width"])  # the model still answers
    assert np.isfinite(item.array).all()


def test_uploads_for_several_models_go_through_each_models_preprocessing():
    good, bad = encode(digit_image()), b"text"
    uploads = [("a.png", good), ("b.txt", bad), ("c.png", good)]
    items, errors, arrays = inputs.images_for_models(uploads, {"digits": DIGITS, "mnist": MNIST})
    assert [i.name for i in items] == ["a.png", "c.png"] and items[0].preview.shape == (8, 8)  # the first model's
    assert len(errors) == 1 and errors[0].startswith("b.txt: this is not an image")
    assert list(arrays) == ["digits", "mnist"]
    for label, preprocessing in (("digits", DIGITS), ("mnist", MNIST)):
        one = inputs.image_to_model_input("a.png", good, preprocessing).array
        assert arrays[label].shape == (2, *one.shape)
        np.testing.assert_array_equal(arrays[label][1], one)
    assert arrays["digits"].shape[-1] == 8 and arrays["mnist"].shape[-1] == 28
    items, errors, arrays = inputs.images_for_models([("b.txt", bad)], {"digits": DIGITS, "mnist": MNIST})
    assert items == [] and len(errors) == 1 and arrays == {}


def test_upscale_keeps_pixels_as_bytes_and_fills_112_pixels_by_default():
    preview = np.array([[0, 255], [128, 7]], np.uint8)
    assert inputs.upscale(preview).dtype == np.uint8
    assert inputs.upscale(np.full((1, 1), 9, np.uint8)).shape == (112, 112)  # 112 // 1: the default size itself


@pytest.mark.parametrize("extra", [(), ("target",)])
def test_a_csv_far_wider_than_the_model_is_refused_before_parsing_with_the_columns_it_takes(extra):
    header = ",".join(f"c{i}" for i in range(150))
    data = (header + "\n" + ",".join("1" for _ in range(150)) + "\n").encode()
    also = " (optionally also ['target'])" if extra else ""
    expected = f"w.csv: the CSV has 150 columns; the model takes exactly the columns ['a', 'b']{also}."
    with pytest.raises(InputError) as err:
        inputs.parse_feature_csv("w.csv", data, ["a", "b"], extra)
    assert str(err.value) == expected
