"""A module no lightning_bnn code path may import: importing it writes a marker file.

Hostile configs name classes in here; the tests assert that the marker never appears
and that this module is never in ``sys.modules``.
"""

import os
from pathlib import Path

MARKER_ENV = "LIGHTNING_BNN_EVIL_MARKER"

Path(os.environ.get(MARKER_ENV, "/tmp/lightning_bnn_evil_marker")).write_text("imported\n")


class Evil:
    """Would run if instantiated."""

    def __init__(self, *args, **kwargs) -> None:
        Path(os.environ.get(MARKER_ENV, "/tmp/lightning_bnn_evil_marker")).write_text("instantiated\n")
