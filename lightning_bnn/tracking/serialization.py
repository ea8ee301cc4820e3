"""Save and load a trained model as ``weights.safetensors`` + ``model.json``: no pickle anywhere.

``model.json`` holds the format name and version, the class (only names in
:data:`MODEL_CLASSES` are accepted; nothing is imported by name) and the module's
hyperparameters as plain JSON. The weights are a flat safetensors file of the
module's ``state_dict``. Loading validates the JSON, rebuilds the module from its
hyperparameters, and refuses weights whose keys or shapes do not match it.

Format version 2 adds the user's own network to the hyperparameters (``network``:
class path and init args; ``bayesian_layers``, ``pretrained``, ``delta``). Version 1 files
have none of these keys; the module's defaults (the built-in architectures) rebuild them as
before. A network's class path is imported only from ``lightning_bnn`` and the modules the
user trusts (:func:`lightning_bnn.nn.custom.check_trusted`); anything else is refused before
any import.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from lightning_bnn.nn.custom import NetworkSpec, UntrustedClassError, check_trusted
from lightning_bnn.training.module import BNNModule, restoring_weights

FORMAT = "lightning_bnn.model"
FORMAT_VERSION = 2
#: the versions this code reads (1: before user networks; its files load unchanged)
READABLE_VERSIONS = (1, 2)
WEIGHTS_FILE = "weights.safetensors"
CONFIG_FILE = "model.json"
MAX_CONFIG_BYTES = 1024 * 1024
MODEL_CLASSES: dict[str, type[BNNModule]] = {"BNNModule": BNNModule}


class ModelLoadError(ValueError):
    """A saved model is missing, corrupted or does not match its configuration."""


def model_config(module: BNNModule) -> dict:
    """The JSON-ready description of ``module`` (class and hyperparameters)."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "class": type(module).__name__,
        "hparams": dict(module.hparams),
    }


def save_model(module: BNNModule, directory: str | Path) -> Path:
    """Write ``weights.safetensors`` and ``model.json`` for ``module`` into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_FILE), metadata={"format": FORMAT})
    (directory / CONFIG_FILE).write_text(json.dumps(model_config(module), indent=2, sort_keys=True))
    return directory


def build_from_config(config: object, trusted_modules: Iterable[str] | None = None) -> BNNModule:
    """Rebuild an untrained module from a parsed ``model.json``.

    Args:
        config: the parsed ``model.json``.
        trusted_modules: modules (besides ``lightning_bnn`` and those named by
            ``LIGHTNING_BNN_TRUSTED_MODULES``) whose network classes may be imported.

    Raises:
        ModelLoadError: for a config of another format, an unknown class, bad hyperparameters, or a
            network class outside the trusted modules (nothing is imported then).
    """
    if not isinstance(config, dict):
        raise ModelLoadError("model.json must hold a JSON object")
    if config.get("format") != FORMAT:
        raise ModelLoadError(f"model.json: format must be {FORMAT!r}, got {config.get('format')!r}")
    if config.get("format_version") not in READABLE_VERSIONS:
        raise ModelLoadError(
            f"model.json: format_version {config.get('format_version')!r} is not supported "
            f"(this version of lightning_bnn reads {', '.join(map(str, READABLE_VERSIONS))})"
        )
    unknown = sorted(set(config) - {"format", "format_version", "class", "hparams"})
    if unknown:
        raise ModelLoadError(f"model.json: unknown key(s) {unknown}")
    name = config.get("class")
    if name not in MODEL_CLASSES:
        raise ModelLoadError(f"model.json: class {name!r} is not a lightning_bnn model; known: {sorted(MODEL_CLASSES)}")
    hparams = config.get("hparams")
    if not isinstance(hparams, dict):
        raise ModelLoadError("model.json: hparams must be a JSON object")
    try:
        spec = NetworkSpec.from_value(hparams.get("network"))
        if spec is not None:
            check_trusted(spec.class_path, trusted_modules)
    except UntrustedClassError as err:
        raise ModelLoadError(f"model.json: {err}") from None
    except ValueError as err:
        raise ModelLoadError(f"model.json: invalid hyperparameter: {err}") from err
    try:
        with restoring_weights():  # the saved weights follow: a pretrained start is not read
            return MODEL_CLASSES[name](**hparams)
    except TypeError as err:
        raise ModelLoadError(f"model.json: hparams do not fit {name}: {err}") from err
    except ValueError as err:
        raise ModelLoadError(f"model.json: invalid hyperparameter: {err}") from err


def read_config(path: Path) -> dict:
    """Parse ``model.json`` with a size limit and clear errors."""
    if not path.is_file():
        raise ModelLoadError(f"missing model config {path.name}")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise ModelLoadError(f"{path.name} is larger than {MAX_CONFIG_BYTES} bytes; refusing to parse it")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelLoadError(f"{path.name} is not valid JSON: {err}") from err


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file; a truncated or foreign file raises :class:`ModelLoadError`."""
    if not path.is_file():
        raise ModelLoadError(f"missing weights file {path.name}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise ModelLoadError(f"{path.name} is not a valid safetensors file (truncated or corrupted?): {err}") from err


def load_model_dir(directory: str | Path, trusted_modules: Iterable[str] | None = None) -> BNNModule:
    """Load a model saved by :func:`save_model`, in ``eval()`` mode, ready to sample.

    ``trusted_modules``: see :func:`build_from_config`.
    """
    directory = Path(directory)
    module = build_from_config(read_config(directory / CONFIG_FILE), trusted_modules)
    state = load_weights(directory / WEIGHTS_FILE)
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ModelLoadError(
            f"weights do not match model.json: missing {missing[:5]}, unexpected {unexpected[:5]}"
            + (" ..." if len(missing) > 5 or len(unexpected) > 5 else "")
        )
    for key, tensor in state.items():
        if tensor.shape != expected[key].shape:
            raise ModelLoadError(
                f"weights do not match model.json: {key} has shape {tuple(tensor.shape)}, "
                f"the config builds {tuple(expected[key].shape)}"
            )
        if not torch.isfinite(tensor).all():
            raise ModelLoadError(f"weights contain NaN or infinite values in {key}")
    module.load_state_dict(state, strict=True)
    return module.eval()
