"""A user's network named by class path: its record, the trusted-modules rule, building and pretrained weights.

A model trained on the user's own network records it as ``{"class_path": "my_pkg.MyNet",
"init_args": {...}}`` (plain JSON, in the module's hyperparameters). Rebuilding it imports
``my_pkg``, which runs that module's code. A class path read from a store (``model.json``, the
dashboard, the pyfunc model) is therefore imported only from ``lightning_bnn`` and from modules
the user allows, with an argument (``trusted_modules=["my_pkg"]``) or the environment variable
:data:`TRUSTED_MODULES_ENV` (comma-separated: ``LIGHTNING_BNN_TRUSTED_MODULES=my_pkg,other.nets``).
:func:`check_trusted` refuses anything else before importing anything.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

#: environment variable naming the modules (comma-separated) whose classes may be imported from a store
TRUSTED_MODULES_ENV = "LIGHTNING_BNN_TRUSTED_MODULES"
#: always trusted: the package itself
BUILTIN_MODULES = ("lightning_bnn",)
_CLASS_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+")
#: init arguments filled from the data when the network's class takes them and the config does not set them
LINKED_INIT_ARGS = ("input_shape", "num_outputs")


class UntrustedClassError(ValueError):
    """A class path outside ``lightning_bnn`` and the modules the user allows."""


@dataclass(frozen=True)
class NetworkSpec:
    """The user's network: its class path and the keyword arguments of its constructor (plain JSON)."""

    class_path: str
    init_args: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_value(cls, value: object) -> NetworkSpec | None:
        """Parse ``{"class_path": ..., "init_args": {...}}`` (None: no user network).

        Keys beside ``class_path`` and ``init_args`` count as init args: the command line's
        ``--model.network.init_args.width 64`` arrives that way.
        """
        if value is None or isinstance(value, NetworkSpec):
            return value
        if not isinstance(value, Mapping):
            raise ValueError(f"network must be a mapping with class_path and init_args, got {type(value).__name__}")
        data = dict(value)
        class_path = data.pop("class_path", None)
        if not isinstance(class_path, str) or not _CLASS_PATH.fullmatch(class_path):
            raise ValueError(f"network.class_path must be a dotted path such as my_pkg.MyNet, got {class_path!r}")
        init_args = data.pop("init_args", None) or {}
        if not isinstance(init_args, Mapping):
            raise ValueError(f"network.init_args must be a mapping, got {type(init_args).__name__}")
        init_args = {**dict(init_args), **data}
        if not all(isinstance(k, str) for k in init_args):
            raise ValueError("network.init_args keys must be strings")
        return cls(class_path, init_args)

    def to_dict(self) -> dict[str, Any]:
        return {"class_path": self.class_path, "init_args": dict(self.init_args)}


def trusted_modules(extra: Iterable[str] | None = None) -> list[str]:
    """``lightning_bnn``, the modules named by :data:`TRUSTED_MODULES_ENV`, and ``extra``."""
    env = [m.strip() for m in os.environ.get(TRUSTED_MODULES_ENV, "").split(",") if m.strip()]
    if isinstance(extra, str):
        extra = [extra]
    return [*BUILTIN_MODULES, *env, *(extra or [])]


def is_trusted(class_path: str, trusted: Iterable[str]) -> bool:
    """Whether ``class_path`` lives in one of the ``trusted`` modules or packages (or their submodules)."""
    module = class_path.rpartition(".")[0]
    return any(module == t or module.startswith(t + ".") for t in trusted)


def check_trusted(class_path: str, extra: Iterable[str] | None = None) -> None:
    """Refuse a class path outside the trusted modules, before anything is imported.

    Raises:
        UntrustedClassError: naming the class path and the two ways to allow it.
    """
    if is_trusted(class_path, trusted_modules(extra)):
        return
    package = class_path.split(".")[0]
    raise UntrustedClassError(
        f"refusing to import the network class {class_path!r}: importing it runs the code of its module, and "
        f"lightning_bnn imports classes named by a store only from lightning_bnn and the modules you allow. "
        f"If you trust it, allow it with load_model(..., trusted_modules=[{package!r}]) or the environment "
        f"variable {TRUSTED_MODULES_ENV}={package}"
    )


def import_network_class(class_path: str) -> type[nn.Module]:
    """Import the class ``class_path`` (the caller has decided to trust it) and check it is an ``nn.Module``."""
    spec = NetworkSpec.from_value({"class_path": class_path})
    module_name, _, name = spec.class_path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"network.class_path {class_path!r}: cannot import {module_name!r}: {err}") from err
    cls = getattr(module, name, None)
    if not (inspect.isclass(cls) and issubclass(cls, nn.Module)):
        raise ValueError(f"network.class_path {class_path!r} is not a torch.nn.Module subclass")
    return cls


def instantiate_network(spec: NetworkSpec, linked: Mapping[str, Any]) -> nn.Module:
    """``cls(**init_args)``, with the ``linked`` values (input shape, outputs) for parameters the class takes."""
    cls = import_network_class(spec.class_path)
    kwargs = dict(spec.init_args)
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        params = {}
    for key, value in linked.items():
        if key in params and key not in kwargs:
            kwargs[key] = value
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ValueError(f"network {spec.class_path}: init_args {sorted(kwargs)} do not fit: {err}") from err


def check_outputs(network: nn.Module, input_shape: tuple[int, ...], num_outputs: int, name: str) -> None:
    """Run a zero batch of two through ``network`` (eval mode) and check it returns ``[2, num_outputs]``."""
    was_training = network.training
    network.eval()
    try:
        with torch.no_grad():
            out = network(torch.zeros(2, *input_shape))
    except Exception as err:  # the user's forward: report any failure with the shapes involved
        raise ValueError(
            f"network {name} fails on inputs of shape [2, {', '.join(map(str, input_shape))}]: {err}"
        ) from err
    finally:
        network.train(was_training)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, num_outputs):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"network {name} must return [B, {num_outputs}] for this data and likelihood, got {got}")


def load_state_file(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a safetensors file, or from a ``torch.save`` file read with ``weights_only=True``.

    Nothing is unpickled beyond tensors and plain containers. A checkpoint-like dict holding a
    ``state_dict`` entry gives that entry.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"pretrained weights {str(path)!r}: no such file")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as err:
            raise ValueError(f"pretrained weights {str(path)!r}: not a valid safetensors file: {err}") from err
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError (pickled code refused), a corrupt file, ...
        raise ValueError(
            f"pretrained weights {str(path)!r}: not a state dict that torch.load(weights_only=True) reads "
            f"(lightning_bnn never unpickles code): {err}"
        ) from err
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"pretrained weights {str(path)!r}: expected a mapping of names to tensors")
    return dict(state)


def load_pretrained(network: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``network`` strictly, with a message naming the mismatched keys."""
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"pretrained weights {source!r} do not fit the network: {err}") from err
