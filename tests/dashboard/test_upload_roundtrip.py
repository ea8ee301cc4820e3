"""An upload of a training digit comes back as its training pixels (the 8x8 and 28x28 paths).

A digit is rendered as a user would send it: dark ink on white paper, enlarged (each pixel a
square block), saved as PNG. The dashboard's upload path inverts it, crops the ink's box, puts
the box in the training set's frame and resizes it. If the frame (the margin around the digit's
box) or the scaling differs from the training data's, the model sees a digit of another size.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from dashboard import inputs
from lightning_bnn.data import DigitsDataModule, MNISTDataModule

#: scikit-learn digits whose ink box spans all 8 rows and is centred left-right, with no faint
#: edge pixels below the ink threshold: their box is the whole frame, so they round-trip exactly.
ROUND_TRIP_DIGITS = (2, 4)
#: max |upload - training pixel|: 8-bit PNG rounding (measured 0.0020 on both paths). A margin of
#: 3/28 or 5/28 instead of 4/28 on the 28x28 path: 1.0 (mean 0.03-0.05); a margin of 1/8 on the 8x8 path: 1.0.
TOLERANCE = 0.01


def _training_digits() -> np.ndarray:
    from sklearn.datasets import load_digits

    return load_digits().images / 16.0  # DigitsDataModule's pixels: [0, 1]


def _upload(pixels: np.ndarray, zoom: int, preprocessing: dict) -> np.ndarray:
    """Render pixels in [0, 1] as a dark-on-light PNG enlarged ``zoom`` times and upload it."""
    ink = np.round(np.kron(pixels, np.ones((zoom, zoom))) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(255 - ink).save(buffer, "PNG")
    return inputs.image_to_model_input("digit.png", buffer.getvalue(), preprocessing).array[0]


@pytest.mark.parametrize("index", ROUND_TRIP_DIGITS)
def test_uploaded_8x8_training_digit_comes_back_as_its_pixels(index):
    digit = _training_digits()[index]
    out = _upload(digit, 8, DigitsDataModule().preprocessing)
    assert out.shape == (8, 8)
    assert np.abs(out - digit).max() <= TOLERANCE


@pytest.mark.parametrize("index", ROUND_TRIP_DIGITS)
def test_uploaded_28x28_digit_in_mnists_frame_comes_back_as_its_pixels(index):
    """MNIST's format (LeCun et al.): the digit fills a 20x20 box inside the 28x28 frame (4 px margin).

    MNIST itself is not downloaded in tests: the digit is a scikit-learn digit enlarged to 20x20
    (5x, then 2x2 averaged) and framed like MNIST's.
    """
    box = np.kron(_training_digits()[index], np.ones((5, 5))).reshape(20, 2, 20, 2).mean(axis=(1, 3))
    frame = np.zeros((28, 28))
    frame[4:24, 4:24] = box
    out = _upload(frame, 4, MNISTDataModule(download=False).preprocessing)
    assert out.shape == (28, 28)
    assert np.abs(out - frame).max() <= TOLERANCE
