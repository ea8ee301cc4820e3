r"""How raw inputs become model inputs, and model outputs go back to original units: one typed record.

A data module builds the record; the trained model keeps it (``hparams.preprocessing``, saved
in ``model.json`` as :meth:`Preprocessing.to_dict` with a format version); everything that
feeds a model raw data or reports its answers (the pyfunc model, the dashboard, the run
recorder, pruning) uses it through :func:`Preprocessing.from_dict`. Nothing else reads the dict.

Kinds:

* :class:`ImagePreprocessing`: 8-bit pixels of light ink on a dark background become
  ``pixel / 255 * scale`` at ``height x width``; a picture of any size is fitted first (cropped
  to its ink, centred on a square with a margin, resized; dark ink on light paper inverted).
* :class:`TabularPreprocessing`: features are standardised with the training split's
  statistics, ``x' = (x - mean) / std``; regression targets likewise, so model outputs go back
  as ``y = y' * std_y + mean_y`` and predictive standard deviations as ``s = s' * std_y``.
* :class:`NoPreprocessing`: model inputs are used as they are (a module built without data).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

if TYPE_CHECKING:
    import torch

#: version of the dict written by :meth:`Preprocessing.to_dict`; dicts without one are version 1
FORMAT_VERSION = 1
#: fraction of the side left empty around a centred digit: MNIST-style 28x28 images hold it in a
#: 20x20 box; scikit-learn's 8x8 digits fill the frame's height
MNIST_MARGIN = 4 / 28
#: longest side of the square a picture is centred on before resizing; a longer crop is shrunk first
#: (a 28 x 42268 strip would otherwise make a square of 42268^2 pixels)
MAX_FRAME_SIDE = 2048


class PreprocessingError(ValueError):
    """A preprocessing record that cannot be read, or an input that does not fit it."""


class Preprocessing(ABC):
    """Raw input -> model input (:meth:`transform`), model output -> original units (:meth:`inverse`)."""

    kind: ClassVar[str]
    #: class names of a classifier (empty for regression)
    class_names: tuple[str, ...]

    @abstractmethod
    def transform(self, raw: Any) -> torch.Tensor:
        """Raw inputs -> a float32 model-input batch."""

    def inverse(self, mean: torch.Tensor, std: torch.Tensor | None = None) -> Any:
        """Regression outputs (standardised units) -> original units: ``mean`` and, if given, ``std``."""
        return mean if std is None else (mean, std)

    def inverse_target(self, y: torch.Tensor) -> torch.Tensor:
        """Targets as the model saw them -> original units."""
        return y

    def serving_input(self, model_input: Any, input_shape: Sequence[int]) -> torch.Tensor:
        """A served request's inputs -> a model-input batch ``[B, *input_shape]``.

        Served requests carry model-space arrays (images as training saw them), flat or shaped;
        :class:`TabularPreprocessing` takes raw feature rows instead and standardises them.
        """
        if hasattr(model_input, "to_numpy"):
            model_input = model_input.to_numpy()
        shape = tuple(int(n) for n in input_shape)
        array = np.asarray(model_input, dtype=np.float32)
        size = int(np.prod(shape))
        if array.ndim == 0 or array.size % size or array.shape[1:] not in (shape, (size,)):
            raise PreprocessingError(
                f"expected input of shape [B, {', '.join(map(str, shape))}], got {list(array.shape)}"
            )
        import torch

        return torch.from_numpy(np.ascontiguousarray(array.reshape(-1, *shape)))

    def serving_example(self, x: torch.Tensor) -> torch.Tensor:
        """Model inputs -> the form :meth:`serving_input` takes (model space, unless overridden)."""
        return x

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON: ``kind``, ``format_version`` and the fields."""
        out = {"kind": self.kind, "format_version": FORMAT_VERSION}
        for key, value in asdict(self).items():
            out[key] = list(value) if isinstance(value, tuple) else value
        return out

    @staticmethod
    def from_dict(record: Any) -> Preprocessing:
        """The typed preprocessing of a record written by :meth:`to_dict` (or by older versions).

        Raises:
            PreprocessingError: a record of an unknown kind or version, or with bad fields.
        """
        if record is None or (isinstance(record, dict) and not record):
            return NoPreprocessing()
        if isinstance(record, Preprocessing):
            return record
        if not isinstance(record, dict):
            raise PreprocessingError(f"preprocessing must be a JSON object, got {type(record).__name__}")
        data = dict(record)
        version = data.pop("format_version", 1)
        if version != FORMAT_VERSION:
            raise PreprocessingError(
                f"preprocessing format_version {version!r} is not supported (this version reads {FORMAT_VERSION})"
            )
        kind = data.pop("kind", None)
        if kind is None and "format_version" not in record:  # version 1 records might name no kind
            kind = _legacy_kind(data)
        cls = _KINDS.get(kind)
        if cls is None:
            raise PreprocessingError(f"preprocessing kind {kind!r} is unknown; known: {sorted(_KINDS)}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise PreprocessingError(f"preprocessing ({kind}) has unknown field(s) {unknown}")
        try:
            return cls(**data)
        except (TypeError, ValueError) as err:
            raise PreprocessingError(f"preprocessing ({kind}): {err}") from None


def _legacy_kind(data: dict[str, Any]) -> str:
    """The kind of a record written before kinds were required: image by its frame, tabular by its statistics."""
    if {"height", "width"} & set(data):
        return "image"
    if {"feature_names", "feature_mean", "target_mean", "target_std", "target_names"} & set(data):
        return "tabular"
    return "none"


def _names(values: Sequence[Any] | None) -> tuple[str, ...]:
    return tuple(str(v) for v in (values or ()))


def _floats(values: Sequence[Any], name: str) -> tuple[float, ...]:
    out = tuple(float(v) for v in values)
    if not all(math.isfinite(v) for v in out):
        raise ValueError(f"{name} must hold finite numbers")
    return out


@dataclass(frozen=True)
class NoPreprocessing(Preprocessing):
    """Model inputs are taken as they are; outputs are already in their units."""

    kind: ClassVar[str] = "none"
    class_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "class_names", _names(self.class_names))

    def transform(self, raw: Any) -> torch.Tensor:
        """``raw`` as a float32 tensor."""
        import torch

        return torch.as_tensor(np.asarray(raw, dtype=np.float32))


@dataclass(frozen=True)
class ImagePreprocessing(Preprocessing):
    """Images: 8-bit light-on-dark pixels -> ``pixel / 255 * scale``, ``[channels, height, width]``.

    Args:
        channels, height, width: the model's input shape.
        ink: ``light`` (light ink on a dark background, as MNIST) or ``dark``.
        scale: model-space value of a full-intensity pixel (1.0 for pixels / 255).
        class_names: the classes.
        margin: fraction of the side left empty around a fitted picture (default: none for
            8x8 frames, :data:`MNIST_MARGIN` for larger ones).
    """

    kind: ClassVar[str] = "image"
    channels: int = 1
    height: int = 28
    width: int = 28
    ink: str = "light"
    scale: float = 1.0
    class_names: tuple[str, ...] = ()
    margin: float | None = None

    def __post_init__(self) -> None:
        for name in ("channels", "height", "width"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.ink not in ("light", "dark"):
            raise ValueError(f"ink must be 'light' or 'dark', got {self.ink!r}")
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"scale must be a finite number > 0, got {self.scale!r}")
        if self.margin is not None and not 0 <= self.margin < 0.5:
            raise ValueError(f"margin must be in [0, 0.5), got {self.margin!r}")
        object.__setattr__(self, "class_names", _names(self.class_names))

    @property
    def frame_margin(self) -> float:
        """The margin used when fitting a picture into the frame."""
        if self.margin is not None:
            return float(self.margin)
        return 0.0 if max(self.height, self.width) <= 8 else MNIST_MARGIN

    def pixels_to_array(self, raw: Any) -> np.ndarray:
        """Pixels ``[N, height, width]`` (uint8, light ink on dark) -> model inputs ``[N, C, H, W]`` (numpy float32)."""
        pixels = np.asarray(raw)
        if pixels.ndim == 2:
            pixels = pixels[None]
        if pixels.ndim != 3 or pixels.shape[1:] != (self.height, self.width):
            raise PreprocessingError(
                f"images must be [N, {self.height}, {self.width}] pixels, got shape {list(pixels.shape)}"
            )
        scaled = (pixels.astype(np.float32) / 255.0 * self.scale).astype(np.float32)
        return np.ascontiguousarray(np.repeat(scaled[:, None], self.channels, axis=1))

    def transform(self, raw: Any) -> torch.Tensor:
        """Pixels ``[N, height, width]`` (uint8, light ink on dark) -> model inputs ``[N, C, H, W]``."""
        import torch

        return torch.from_numpy(self.pixels_to_array(raw))

    def to_pixels(self, x: torch.Tensor | np.ndarray) -> np.ndarray:
        """Inverse of :meth:`transform` for one input ``[C, H, W]``: uint8 pixels ``[H, W]``."""
        first = np.asarray(x, dtype=np.float64)[0]
        return np.clip(np.round(first / self.scale * 255.0), 0, 255).astype(np.uint8)

    def fit_picture(self, gray: np.ndarray) -> tuple[np.ndarray, bool]:
        """A grayscale picture of any size -> uint8 pixels ``[height, width]`` in the model's ink.

        Dark ink on a light background (judged by the border) is inverted; the ink is
        cropped to its bounding box, centred on a square with :attr:`frame_margin` around it,
        resized by box filtering and stretched so that the brightest ink is 255.

        Returns:
            (pixels, whether the picture was inverted).
        """
        from PIL import Image

        gray = np.asarray(gray, dtype=np.uint8)
        border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
        inverted = float(np.median(border)) > 127.0
        image = Image.fromarray(255 - gray if inverted else gray)
        # PIL's getbbox of the ink mask; ImageOps.pad would centre with round() and autocontrast would
        # also lift the darkest pixel to 0, so the centring and the stretch below are written out
        mask = Image.fromarray(np.asarray(image) > 0.1 * max(int(np.asarray(image).max()), 1))
        box = mask.getbbox()
        if box is not None:
            image = image.crop(box)
        if max(image.size) > MAX_FRAME_SIDE:  # a long thin strip: shrink it first, not a square of its length
            factor = MAX_FRAME_SIDE / max(image.size)
            small = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
            image = image.resize(small, Image.Resampling.BOX)
        side = max(image.size)
        pad = int(round(side * self.frame_margin / (1 - 2 * self.frame_margin)))
        square = Image.new("L", (side + 2 * pad, side + 2 * pad), 0)
        square.paste(image, (pad + (side - image.width) // 2, pad + (side - image.height) // 2))
        resized = np.asarray(square.resize((self.width, self.height), Image.Resampling.BOX), dtype=np.float32)
        peak = resized.max()
        if peak > 0:
            resized = resized * (255.0 / peak)  # the brightest ink becomes full intensity
        out = np.clip(np.round(resized), 0, 255).astype(np.uint8)
        if self.ink == "dark":
            out = 255 - out
            inverted = not inverted
        return out, inverted


@dataclass(frozen=True)
class TabularPreprocessing(Preprocessing):
    r"""Tabular rows: features standardised with training statistics; regression targets too.

    Args:
        feature_names: the model's input columns, in order.
        feature_mean, feature_std: training statistics of the features (std 0 counts as 1).
        target_names: the target column(s).
        target_mean, target_std: training statistics of a regression target (None: classification).
        class_names: the classes of a classifier.
        train_range: for a one-feature toy set, the interval the training inputs were drawn from.
    """

    kind: ClassVar[str] = "tabular"
    feature_names: tuple[str, ...] = ()
    feature_mean: tuple[float, ...] = ()
    feature_std: tuple[float, ...] = ()
    target_names: tuple[str, ...] = ()
    target_mean: float | None = None
    target_std: float | None = None
    class_names: tuple[str, ...] = ()
    train_range: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "feature_names", _names(self.feature_names))
        set_(self, "target_names", _names(self.target_names))
        set_(self, "class_names", _names(self.class_names))
        n = len(self.feature_names)
        mean = _floats(self.feature_mean or [0.0] * n, "feature_mean")
        std = tuple(s if s > 0 else 1.0 for s in _floats(self.feature_std or [1.0] * n, "feature_std"))
        if len(mean) != n or len(std) != n:
            raise ValueError(f"feature_mean and feature_std must have one value per feature ({n})")
        set_(self, "feature_mean", mean)
        set_(self, "feature_std", std)
        if (self.target_mean is None) != (self.target_std is None):
            raise ValueError("target_mean and target_std go together")
        if self.target_std is not None:
            set_(self, "target_mean", _floats([self.target_mean], "target_mean")[0])
            t_std = _floats([self.target_std], "target_std")[0]
            set_(self, "target_std", t_std if t_std > 0 else 1.0)
        if self.train_range is not None:
            set_(self, "train_range", _floats(self.train_range, "train_range"))

    def transform(self, raw: Any) -> torch.Tensor:
        """Raw feature rows ``[N, F]`` (array, or a DataFrame with the feature columns) -> ``[N, F]``."""
        if hasattr(raw, "columns"):
            missing = [c for c in self.feature_names if c not in raw.columns]
            if missing:
                raise PreprocessingError(f"missing feature column(s) {missing}; the model takes {self.features}")
            raw = raw[list(self.feature_names)].to_numpy()
        x = np.asarray(raw, dtype=np.float64)
        if x.ndim == 1:
            x = x[None]
        if x.ndim != 2 or x.shape[1] != len(self.feature_names):
            raise PreprocessingError(f"rows must have {len(self.feature_names)} features, got shape {list(x.shape)}")
        standard = (x - np.asarray(self.feature_mean)) / np.asarray(self.feature_std)
        import torch

        return torch.as_tensor(standard.astype(np.float32))

    def serving_input(self, model_input: Any, input_shape: Sequence[int]) -> torch.Tensor:
        """Raw feature rows (a DataFrame with the feature columns, or an array ``[B, F]``) -> standardised."""
        if hasattr(model_input, "columns") and set(self.feature_names) <= set(model_input.columns):
            model_input = model_input[list(self.feature_names)]
        raw = super().serving_input(model_input, input_shape)
        return self.transform(raw.numpy())

    def serving_example(self, x: torch.Tensor) -> torch.Tensor:
        """Model inputs -> raw feature rows, the form :meth:`serving_input` takes."""
        import torch

        return self.inverse_features(x.reshape(x.shape[0], -1).to(torch.float64))

    def inverse_features(self, x: torch.Tensor) -> torch.Tensor:
        """Model inputs ``[N, F]`` -> raw feature values."""
        import torch

        mean = torch.tensor(self.feature_mean, dtype=x.dtype, device=x.device)
        std = torch.tensor(self.feature_std, dtype=x.dtype, device=x.device)
        return x * std + mean

    def inverse(self, mean: torch.Tensor, std: torch.Tensor | None = None) -> Any:
        """Standardised regression outputs -> original units: ``mean * std_y + mean_y``, ``std * std_y``."""
        if self.target_std is None:
            return super().inverse(mean, std)
        out = mean * self.target_std + self.target_mean
        return out if std is None else (out, std * self.target_std)

    def inverse_target(self, y: torch.Tensor) -> torch.Tensor:
        """Standardised targets -> original units (class indices pass through)."""
        return y if self.target_std is None else y * self.target_std + self.target_mean

    @property
    def features(self) -> list[str]:
        """The feature names as a list."""
        return list(self.feature_names)


_KINDS: dict[Any, type[Preprocessing]] = {
    cls.kind: cls for cls in (NoPreprocessing, ImagePreprocessing, TabularPreprocessing)
}

__all__ = [
    "FORMAT_VERSION",
    "ImagePreprocessing",
    "NoPreprocessing",
    "Preprocessing",
    "PreprocessingError",
    "TabularPreprocessing",
]
