"""Parse and validate user uploads: images for image models, CSV rows and form values for tabular models.

Every function here either returns clean arrays or raises :class:`InputError` with a
message written for the person who uploaded the file (what is wrong, and what to do).
Nothing here touches Streamlit; the pages show ``str(err)`` with ``st.error``.

Image conversion follows the model's typed preprocessing
(:class:`lightning_bnn.data.preprocessing.ImagePreprocessing`): the model sees light ink on a
dark background, ``pixel / 255 * scale``, at ``height x width``. Photos and scans of dark ink
on white paper are inverted first; the digit is cropped to its ink, centred on a square and
resized (:meth:`~lightning_bnn.data.preprocessing.ImagePreprocessing.fit_picture`). This module
decodes and checks the upload.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from lightning_bnn.data.preprocessing import ImagePreprocessing, Preprocessing

#: largest upload we parse (bytes); ``.streamlit/config.toml`` caps uploads at the same size
MAX_UPLOAD_BYTES = 5 * 1024 * 1024
#: largest image (width x height) we decode; bigger ones are refused before decoding
MAX_IMAGE_PIXELS = 4096 * 4096
#: image formats we accept
IMAGE_FORMATS = ("PNG", "JPEG")
#: most CSV rows predicted at once
MAX_CSV_ROWS = 1000
#: most images predicted at once on the Predict page
MAX_IMAGES = 20
#: an upload whose lightest and darkest gray levels differ by less than this holds no ink
MIN_CONTRAST = 24


class InputError(ValueError):
    """An upload or form value the dashboard cannot use; the message says why and what to do."""


@dataclass
class ProcessedImage:
    """An uploaded image converted to the model's input.

    Attributes:
        name: the uploaded file's name.
        array: model input ``[channels, height, width]`` (float32).
        preview: the processed image as uint8 pixels ``[height, width]``, in the model's ink.
        inverted: whether the upload was dark ink on a light background and was inverted.
        original_size: (width, height) of the upload.
        warnings: why the upload may hold no digit or item (no ink, too small); the model answers anyway.
    """

    name: str
    array: np.ndarray
    preview: np.ndarray
    inverted: bool
    original_size: tuple[int, int]
    warnings: tuple[str, ...] = ()

    @property
    def caption(self) -> str:
        """'processed from WxH', and whether it was inverted."""
        size = f"{self.original_size[0]}x{self.original_size[1]}"
        return f"processed from {size}" + (", inverted" if self.inverted else "")


def _check_size(name: str, data: bytes) -> None:
    if not data:
        raise InputError(f"{name}: the file is empty (0 bytes). Upload a PNG or JPEG image.")
    if len(data) > MAX_UPLOAD_BYTES:
        raise InputError(f"{name}: the file is {len(data) / 1e6:.1f} MB; the limit is {MAX_UPLOAD_BYTES / 1e6:.0f} MB.")


def open_image(name: str, data: bytes) -> Image.Image:
    """Decode an uploaded PNG/JPEG, refusing anything the model cannot take.

    Raises:
        InputError: empty or oversized file, not an image, an unsupported format, an
            image too large to decode safely (decompression bomb), an animated,
            16-bit or CMYK image, or a corrupt/truncated file.
    """
    _check_size(name, data)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise InputError(
                f"{name}: the image is too large to decode safely (decompression bomb protection); "
                f"the limit is {MAX_IMAGE_PIXELS:,} pixels."
            ) from None
        except UnidentifiedImageError:
            raise InputError(
                f"{name}: this is not an image (or not one Pillow can read); upload a PNG or JPEG file."
            ) from None
        except (OSError, ValueError, SyntaxError) as err:
            raise InputError(f"{name}: the image could not be read (corrupt file?): {err}") from None
        if image.format not in IMAGE_FORMATS:
            raise InputError(f"{name}: {image.format} images are not supported; upload a PNG or JPEG.")
        width, height = image.size
        if width * height > MAX_IMAGE_PIXELS:
            raise InputError(
                f"{name}: the image is {width}x{height} = {width * height:,} pixels, too large "
                f"(limit {MAX_IMAGE_PIXELS:,}); shrink it first."
            )
        if width < 1 or height < 1:
            raise InputError(f"{name}: the image has no pixels.")
        if getattr(image, "is_animated", False) or getattr(image, "n_frames", 1) > 1:
            raise InputError(f"{name}: animated images are not supported; upload a single still frame.")
        if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F") or image.mode.startswith("I;16"):
            raise InputError(
                f"{name}: 16-bit or floating-point images ({image.mode}) are not supported; save as 8-bit."
            )
        if image.mode == "CMYK":
            raise InputError(f"{name}: CMYK images are not supported; save it as RGB or grayscale.")
        try:
            image.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise InputError(
                f"{name}: the image is too large to decode safely (decompression bomb protection)."
            ) from None
        except (OSError, ValueError, SyntaxError) as err:
            raise InputError(f"{name}: the image is corrupt or truncated and could not be decoded ({err}).") from None
    return image


def to_grayscale(image: Image.Image) -> np.ndarray:
    """8-bit grayscale pixels [H, W]; transparent areas become white paper."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(paper, rgba)
    return np.asarray(image.convert("L"), dtype=np.uint8)


def image_to_model_input(name: str, data: bytes, preprocessing: Preprocessing | dict) -> ProcessedImage:
    """Convert an uploaded image to the input of an image model.

    Args:
        name: the file's name (for messages).
        data: the file's bytes.
        preprocessing: the model's preprocessing (an :class:`ImagePreprocessing`, or its dict).

    Returns:
        The model input ``[channels, height, width]`` = ``pixel / 255 * scale`` and its preview.

    Raises:
        InputError: for any unusable upload (see :func:`open_image`).
    """
    preprocessing = Preprocessing.from_dict(preprocessing)
    if not isinstance(preprocessing, ImagePreprocessing):
        raise InputError("this model does not take images")
    image = open_image(name, data)
    gray = to_grayscale(image)
    preview, inverted = preprocessing.fit_picture(gray)
    array = preprocessing.pixels_to_array(preview)[0]
    return ProcessedImage(name, array, preview, inverted, image.size, upload_warnings(gray, preprocessing))


def upload_warnings(gray: np.ndarray, preprocessing: ImagePreprocessing) -> tuple[str, ...]:
    """Reasons an upload may hold nothing to classify: no ink (one colour or too little contrast), or too small."""
    found = []
    contrast = int(gray.max()) - int(gray.min())
    if contrast < MIN_CONTRAST:
        found.append(
            "the image holds no ink: "
            + ("it is a single colour" if contrast == 0 else f"its contrast is {contrast} gray levels out of 255")
            + "; the prediction below is the model's answer to a blank page."
        )
    height, width = gray.shape
    if height < preprocessing.height or width < preprocessing.width:
        found.append(
            f"the image is {width}x{height} pixels, smaller than the model's {preprocessing.width}x"
            f"{preprocessing.height} input; it is enlarged, so the prediction may mean little."
        )
    return tuple(found)


def images_to_model_inputs(
    uploads: list[tuple[str, bytes]], preprocessing: Preprocessing | dict
) -> tuple[list[ProcessedImage], list[str]]:
    """Convert several uploads ``(name, bytes)``; an unusable one gives its message instead of stopping the rest."""
    items, errors = [], []
    for name, data in uploads:
        try:
            items.append(image_to_model_input(name, data, preprocessing))
        except InputError as err:
            errors.append(str(err))
    return items, errors


def images_for_models(
    uploads: list[tuple[str, bytes]], preprocessings: dict[str, Preprocessing]
) -> tuple[list[ProcessedImage], list[str], dict[str, np.ndarray]]:
    """Convert uploads for several models, each through its own preprocessing.

    Returns:
        (the first model's :class:`ProcessedImage` of each usable upload, the messages of the
        unusable ones, model label -> inputs ``[N, C, H, W]``; empty when no upload was usable).
    """
    (_, first), *_ = preprocessings.items()
    items, errors = images_to_model_inputs(uploads, first)
    if not items:
        return items, errors, {}
    arrays = {
        label: np.stack([i.array for i in (items if pre == first else images_to_model_inputs(uploads, pre)[0])])
        for label, pre in preprocessings.items()
    }
    return items, errors, arrays


def pixels_from_model_input(array: np.ndarray, preprocessing: Preprocessing | dict) -> np.ndarray:
    """Inverse of the scaling: model input ``[C, H, W]`` -> uint8 preview ``[H, W]``."""
    return Preprocessing.from_dict(preprocessing).to_pixels(array)


def _header_columns(text: str) -> int:
    """Number of columns of the first line of a CSV text (quotes respected where they parse)."""
    import csv

    line = text.lstrip("\r\n").split("\n", 1)[0].rstrip("\r")
    try:
        return len(next(csv.reader([line]), []))
    except csv.Error:
        return line.count(",") + 1


def _short(value: object, limit: int = 40) -> str:
    """``repr(value)``, cut to ``limit`` characters: an upload's text never floods a message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _names(values: list, limit: int = 10) -> str:
    """A list of column names for a message: at most ``limit`` of them, each shortened."""
    shown = ", ".join(_short(v) for v in values[:limit])
    return f"[{shown}" + (f", … {len(values) - limit} more]" if len(values) > limit else "]")


def _row_label(index: int) -> str:
    return f"row {index + 2}"  # 1-based, after the header line


def parse_feature_csv(
    name: str, data: bytes, feature_names: list[str], allowed_extra: list[str] | tuple[str, ...] = ()
) -> pd.DataFrame:
    """Read an uploaded CSV of inputs for a tabular model.

    Args:
        name: the file's name (for messages).
        data: the file's bytes.
        feature_names: the model's feature columns (all required).
        allowed_extra: further columns that may be present and are kept as text (e.g. the target).

    Returns:
        A DataFrame with the float64 feature columns first (in model order), then any allowed extras (text).

    Raises:
        InputError: empty file, not text, unreadable CSV, missing or unexpected columns,
            text in a numeric column, missing/NaN/infinite values, no rows or too many rows.
    """
    _check_size(name, data)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"{name}: this is not a text CSV file (it is not UTF-8 text).") from None
    if not text.strip():
        raise InputError(f"{name}: the file has no content.")
    allowed = len(feature_names) + len(allowed_extra)
    header = _header_columns(text)
    if header > allowed + 100:  # refuse before pandas parses it: a 5 MB header of 600k columns takes minutes, GBs
        raise InputError(
            f"{name}: the CSV has {header:,} columns; the model takes exactly the columns {list(feature_names)}"
            + (f" (optionally also {list(allowed_extra)})" if allowed_extra else "")
            + "."
        )
    try:
        frame = pd.read_csv(
            io.StringIO(text), dtype=str, keep_default_na=False, skipinitialspace=True, nrows=MAX_CSV_ROWS + 1
        )
    except pd.errors.EmptyDataError:
        raise InputError(f"{name}: the CSV has no header row.") from None
    except (pd.errors.ParserError, ValueError) as err:
        raise InputError(f"{name}: the CSV could not be parsed: {str(err).strip()}") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    missing = [c for c in feature_names if c not in frame.columns]
    if missing:
        raise InputError(f"{name}: missing column(s) {missing}; the model needs the columns {list(feature_names)}.")
    extra = [c for c in frame.columns if c not in feature_names and c not in allowed_extra]
    if extra:
        raise InputError(
            f"{name}: unexpected column(s) {_names(extra)}; the model takes exactly the columns {list(feature_names)}"
            + (f" (optionally also {list(allowed_extra)})" if allowed_extra else "")
            + "."
        )
    if len(frame) == 0:
        raise InputError(f"{name}: the CSV has a header but no data rows.")
    if len(frame) > MAX_CSV_ROWS:  # pandas read at most MAX_CSV_ROWS + 1 of them
        rows = len(text.strip().splitlines()) - 1
        raise InputError(f"{name}: {rows:,} rows is too many; the limit is {MAX_CSV_ROWS:,} rows per upload.")
    out = pd.DataFrame(index=frame.index)
    for column in feature_names:
        raw = frame[column].astype(str).str.strip()
        values = pd.to_numeric(raw, errors="coerce")
        for i, (text_value, value) in enumerate(zip(raw, values)):
            if text_value == "" or text_value.lower() in ("nan", "na", "null", "none"):
                raise InputError(f"{name}: column '{column}', {_row_label(i)}: missing value (empty or NaN).")
            if math.isnan(value):
                raise InputError(f"{name}: column '{column}', {_row_label(i)}: {_short(text_value)} is not a number.")
            if math.isinf(value):
                raise InputError(f"{name}: column '{column}', {_row_label(i)}: infinite value {_short(text_value)}.")
        out[column] = values.astype(np.float64)
    for column in allowed_extra:  # e.g. true labels: kept as text, shown next to the predictions
        if column in frame.columns:
            out[column] = frame[column].astype(str).str.slice(0, 200)
    return out.reset_index(drop=True)


def validate_form_values(values: dict[str, object], feature_names: list[str]) -> np.ndarray:
    """Check form values (one per feature) and return them as a float64 row ``[1, F]``.

    Raises:
        InputError: a feature is missing, not a number, NaN or infinite.
    """
    row = []
    for feature in feature_names:
        if feature not in values or values[feature] is None:
            raise InputError(f"enter a value for '{feature}'.")
        value = values[feature]
        try:
            number = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise InputError(f"'{feature}': {_short(value)} is not a number.") from None
        if not math.isfinite(number):
            raise InputError(f"'{feature}': {_short(value)} is not a finite number.")
        row.append(number)
    return np.asarray([row], dtype=np.float64)


def standardise(features: np.ndarray, preprocessing: Preprocessing | dict) -> np.ndarray:
    """Raw tabular features ``[N, F]`` -> model inputs ``(x - mean) / std`` (float32)."""
    return Preprocessing.from_dict(preprocessing).transform(features).numpy()  # imports torch (tabular models)


__all__ = [
    "IMAGE_FORMATS",
    "MAX_CSV_ROWS",
    "MAX_IMAGE_PIXELS",
    "MAX_UPLOAD_BYTES",
    "InputError",
    "ProcessedImage",
    "image_to_model_input",
    "open_image",
    "parse_feature_csv",
    "pixels_from_model_input",
    "standardise",
    "validate_form_values",
]


def upscale(preview: np.ndarray, size: int = 112) -> np.ndarray:
    """Nearest-neighbour enlargement of a small preview (so 8x8 pixels stay visible)."""
    factor = max(1, size // max(preview.shape))
    return np.kron(preview, np.ones((factor, factor), dtype=np.uint8))
