"""Rebuild a run's data module from its stored ``config.yaml``: the one place that does it.

A run's config names its data module by class path. Only lightning_bnn's own data
modules are rebuilt (nothing named by a store is imported), under their current short
path (``lightning_bnn.data.DigitsDataModule``), their full path, or the path that runs
recorded before the package was split into layers (``lightning_bnn.idx.MNISTDataModule``).
"""

from __future__ import annotations

from typing import Any

from lightning_bnn import data as _data


class StoredDataError(ValueError):
    """A stored config names no data module, or one that is not rebuilt."""


#: class name -> (module, whether it is bundled: built without user files or downloads)
_CLASSES = {
    "DigitsDataModule": ("base", True),
    "ToyRegressionDataModule": ("base", True),
    "FashionMNISTDataModule": ("idx", True),
    "MNISTDataModule": ("idx", False),
    "CSVDataModule": ("tabular", False),
}
#: every accepted class path -> class name
CLASS_PATHS: dict[str, str] = {}
for _name, (_module, _) in _CLASSES.items():
    for _prefix in ("lightning_bnn.data", f"lightning_bnn.data.{_module}", f"lightning_bnn.{_module}"):
        CLASS_PATHS[f"{_prefix}.{_name}"] = _name
for _name in ("DigitsDataModule", "ToyRegressionDataModule"):
    CLASS_PATHS[f"lightning_bnn.data.{_name}"] = _name  # the pre-split module was lightning_bnn/data.py


def datamodule_class(class_path: object, bundled_only: bool = False) -> type:
    """The data module class a stored ``class_path`` names.

    Args:
        class_path: the ``data.class_path`` of a run's config.
        bundled_only: accept only data sets that need no user file or download.

    Raises:
        StoredDataError: for any other class path.
    """
    name = CLASS_PATHS.get(class_path) if isinstance(class_path, str) else None
    if name is None or (bundled_only and not _CLASSES[name][1]):
        if bundled_only:
            bundled = sorted(n for n, (_, ok) in _CLASSES.items() if ok)
            raise StoredDataError(f"{class_path!r}: examples are only rebuilt for the bundled data sets {bundled}")
        raise StoredDataError(
            f"data.class_path {class_path!r} is not a lightning_bnn data module; known: {sorted(_CLASSES)}"
        )
    return getattr(_data, name)


def datamodule_from_config(config: Any, bundled_only: bool = False, drop: tuple[str, ...] = ()) -> Any:
    """Instantiate the data module of a parsed run config (its ``data`` section).

    Args:
        config: the parsed ``config.yaml`` of a run.
        bundled_only: see :func:`datamodule_class`.
        drop: init args to leave out (e.g. ``num_workers`` when rebuilding in a server).

    Raises:
        StoredDataError: no data section, a class that is not rebuilt, or init args that do not fit.
    """
    data = config.get("data") if isinstance(config, dict) else None
    if not isinstance(data, dict):
        raise StoredDataError("the run's config.yaml names no data module")
    cls = datamodule_class(data.get("class_path"), bundled_only)
    init_args = {k: v for k, v in (data.get("init_args") or {}).items() if k not in drop}
    try:
        return cls(**init_args)
    except TypeError as err:
        raise StoredDataError(f"the run's data init_args do not fit {cls.__name__}: {err}") from None
