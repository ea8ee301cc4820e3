"""Sweep files: parse and validate them into a :class:`SweepSpec` (no Optuna study is touched here).

A sweep file names a base training config, fixed overrides, the metric and its direction,
a sampler, a trial budget, an optional pruner and a search space per dotted config field
(the keys of the ``fit`` command line)::

    name: prior_tpe                  # the Optuna study's name and the MLflow parent run's name
    base: digits.yaml                # relative to this file (or the current folder)
    experiment: digits-sweeps        # MLflow experiment of the parent and its trials
    metric: val/nll                  # the trial's value: the last value its run logged ...
    direction: minimize              # ... minimised (or maximize)
    sampler: tpe                     # grid, random or tpe; or {name: tpe, n_startup_trials: 10}
    trials: 27                       # budget of the whole study (grid: default every point)
    seed: 0                          # the sampler's seed
    pruner: median                   # optional: median, hyperband, threshold; or {name: median, ...}
    fixed:                           # the same in every trial
      model.prior.name: scale_mixture
    space:
      model.prior.pi: {type: float, low: 0.1, high: 0.9}
      model.prior.sigma1: {type: float, low: 0.05, high: 1.0, log: true}
      model.num_samples_train: {type: int, low: 1, high: 10}
      model.hidden_sizes: {type: categorical, choices: [[64], [128, 128]]}
      model.kl: [mc, closed_form]    # a plain list: the grid's values (categorical for random/tpe)

Every error names the key or field at fault.
"""

from __future__ import annotations

import inspect
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SAMPLERS = ("grid", "random", "tpe")
PRUNERS = ("median", "hyperband", "threshold")
DIRECTIONS = ("minimize", "maximize")
PARAM_TYPES = ("float", "int", "categorical")
TOP_KEYS = (
    "name",
    "base",
    "experiment",
    "metric",
    "direction",
    "sampler",
    "trials",
    "seed",
    "pruner",
    "fixed",
    "space",
    "tracking_uri",
    "storage",
)
_PARAM_KEYS = {
    "float": {"type", "low", "high", "log", "step"},
    "int": {"type", "low", "high", "log", "step"},
    "categorical": {"type", "choices"},
}


class SweepError(ValueError):
    """A sweep file that cannot be run; the message names the key or field at fault."""


@dataclass(frozen=True)
class Param:
    """The search space of one config field.

    Args:
        key: dotted config key, as on the ``fit`` command line (``model.prior.pi``).
        name: the name of the param in Optuna and in the trial's MLflow run (``prior.pi``).
        type: ``float``, ``int`` or ``categorical``.
        low: lower bound (float, int).
        high: upper bound, inclusive (float, int).
        log: sample on a log scale (float, int).
        step: discretisation step (float, int).
        choices: the values (categorical; a grid's values). Values that Optuna cannot store
            (lists, mappings) are kept as their command-line text.
    """

    key: str
    name: str
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: Any) -> Any:
        """Ask an Optuna trial for this field's value."""
        if self.type == "float":
            return trial.suggest_float(self.name, self.low, self.high, log=self.log, step=self.step)
        if self.type == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return trial.suggest_categorical(self.name, list(self.choices))


@dataclass
class SweepSpec:
    """A parsed sweep file (see the module docstring).

    Args:
        name: study name and parent run name.
        base: path of the base training config.
        space: the searched fields, in file order.
        sampler: ``grid``, ``random`` or ``tpe``.
        sampler_args: extra keyword arguments of the Optuna sampler.
        trials: the study's trial budget (grid: at most the number of points).
        seed: the sampler's seed.
        pruner: ``None``, ``median``, ``hyperband`` or ``threshold``.
        pruner_args: keyword arguments of the Optuna pruner.
        fixed: config key -> value applied to every trial.
        experiment: MLflow experiment of the parent and the trials.
        metric: the trial's value (the last value its run logged).
        direction: ``minimize`` or ``maximize``.
        tracking_uri: MLflow store, unless given on the command line.
        storage: Optuna storage URL, unless given on the command line.
        source: the sweep file.
    """

    name: str
    base: Path
    space: list[Param]
    sampler: str = "tpe"
    sampler_args: dict[str, Any] = field(default_factory=dict)
    trials: int = 0
    seed: int = 0
    pruner: str | None = None
    pruner_args: dict[str, Any] = field(default_factory=dict)
    fixed: dict[str, Any] = field(default_factory=dict)
    experiment: str | None = None
    metric: str = "val/nll"
    direction: str = "minimize"
    tracking_uri: str | None = None
    storage: str | None = None
    source: Path | None = None

    def grid(self) -> list[dict[str, Any]]:
        """The grid's points (param name -> value), in file order: the Cartesian product of the choices."""
        import itertools

        names = [p.name for p in self.space]
        return [dict(zip(names, values)) for values in itertools.product(*(p.choices for p in self.space))]

    def key_of(self, name: str) -> str:
        """The config key of the param ``name``."""
        return next(p.key for p in self.space if p.name == name)

    def fingerprint(self, extra_args: list[str]) -> str:
        """Hash of what makes two runs of this sweep the same study: base config, fixed values, space, extras."""
        import hashlib

        text = json.dumps(
            {
                "base": self.base.read_text(),
                "fixed": self.fixed,
                "space": [p.__dict__ for p in self.space],
                "metric": self.metric,
                "direction": self.direction,
                "extra": extra_args,
            },
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def param_name(key: str) -> str:
    """The name under which the trial's run records config key ``key`` as a param.

    Mirrors ``lightning_bnn.cli.app._readable_params``: model fields unprefixed
    (``model.prior.pi`` -> ``prior.pi``), ``data.*`` and ``trainer.*`` kept,
    ``seed_everything`` -> ``seed``.
    """
    parts = key.split(".")
    if parts[0] == "model":
        rest = parts[2:] if len(parts) > 2 and parts[1] == "init_args" else parts[1:]
        return ".".join(rest)
    if parts[0] == "data" and len(parts) > 2 and parts[1] == "init_args":
        return ".".join(["data", *parts[2:]])
    if key == "seed_everything":
        return "seed"
    return key


def cli_value(value: Any) -> str:
    """A value as the ``fit`` command line parses it (YAML): strings as-is, the rest as JSON.

    Floats keep a decimal point (``1e-05`` -> ``1.0e-05``): YAML 1.1 reads ``1e-05`` as a string.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise SweepError(f"non-finite value {value!r} in a sweep")
        text = repr(value)
        if "e" in text and "." not in text.split("e")[0]:
            mantissa, exponent = text.split("e")
            text = f"{mantissa}.0e{exponent}"
        return text
    return json.dumps(value)


def _storable(value: Any) -> Any:
    """A value Optuna can store as a categorical choice: scalars as they are, the rest as command-line text."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return cli_value(value)


def _number(where: str, name: str, value: Any, integer: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        kind = "an integer" if integer else "a number"
        raise SweepError(f"{where}.{name} must be {kind}, got {value!r}")
    if not math.isfinite(value):
        raise SweepError(f"{where}.{name} must be finite, got {value!r}")
    return value


def _parse_param(path: Path, key: str, raw: Any) -> Param:
    where = f"{path}: space.{key}"
    name = param_name(key)
    if isinstance(raw, list):
        if not raw:
            raise SweepError(f"{where} must be a non-empty list of values")
        return Param(key, name, "categorical", choices=tuple(_storable(v) for v in raw))
    if not isinstance(raw, dict):
        raise SweepError(f"{where} must be a list of values or a mapping with a type, got {raw!r}")
    kind = raw.get("type")
    if kind not in PARAM_TYPES:
        raise SweepError(f"{where}.type must be one of {list(PARAM_TYPES)}, got {kind!r}")
    unknown = sorted(set(raw) - _PARAM_KEYS[kind])
    if unknown:
        raise SweepError(f"{where}: unknown key(s) {unknown} for type {kind}; known: {sorted(_PARAM_KEYS[kind])}")
    if kind == "categorical":
        choices = raw.get("choices")
        if not isinstance(choices, list) or not choices:
            raise SweepError(f"{where}.choices must be a non-empty list, got {choices!r}")
        return Param(key, name, kind, choices=tuple(_storable(v) for v in choices))
    integer = kind == "int"
    for bound in ("low", "high"):
        if bound not in raw:
            raise SweepError(f"{where}.{bound} is required for type {kind}")
    low = _number(where, "low", raw["low"], integer)
    high = _number(where, "high", raw["high"], integer)
    if low > high:
        raise SweepError(f"{where}: low ({low!r}) must not be greater than high ({high!r})")
    log = raw.get("log", False)
    if not isinstance(log, bool):
        raise SweepError(f"{where}.log must be true or false, got {log!r}")
    if log and low <= 0:
        raise SweepError(f"{where}: log: true needs low > 0, got {low!r}")
    step = raw.get("step")
    if step is not None:
        step = _number(where, "step", step, integer)
        if step <= 0:
            raise SweepError(f"{where}.step must be positive, got {step!r}")
        if log and (not integer or step != 1):
            raise SweepError(f"{where}: step and log: true cannot be combined")
    return Param(key, name, kind, low=low, high=high, log=log, step=step)


def _named(path: Path, key: str, raw: Any, known: tuple[str, ...], factory: Any) -> tuple[str | None, dict]:
    """``NAME`` or ``{name: NAME, **kwargs}`` -> (name, kwargs), kwargs checked against ``factory(name)``."""
    if raw is None:
        return None, {}
    args: dict[str, Any] = {}
    if isinstance(raw, dict):
        args = {str(k): v for k, v in raw.items() if k != "name"}
        raw = raw.get("name")
    if raw not in known:
        raise SweepError(f"{path}: {key} must be one of {list(known)}, got {raw!r}")
    accepted = set(inspect.signature(factory(raw)).parameters) - {"self", "seed", "search_space"}
    unknown = sorted(set(args) - accepted)
    if unknown:
        raise SweepError(f"{path}: {key}.{unknown[0]} is not an option of the {raw} {key}; options: {sorted(accepted)}")
    return raw, args


def sampler_class(name: str) -> Any:
    """The Optuna sampler class of a sampler name (``grid`` runs enqueued trials: a RandomSampler behind them)."""
    import optuna

    return {"grid": optuna.samplers.RandomSampler, "random": optuna.samplers.RandomSampler}.get(
        name, optuna.samplers.TPESampler
    )


def pruner_class(name: str) -> Any:
    """The Optuna pruner class of a pruner name."""
    import optuna

    return {
        "median": optuna.pruners.MedianPruner,
        "hyperband": optuna.pruners.HyperbandPruner,
        "threshold": optuna.pruners.ThresholdPruner,
    }[name]


def make_pruner(name: str | None, args: dict[str, Any]) -> Any:
    """The Optuna pruner of a spec (``NopPruner`` without one)."""
    import optuna

    if name is None:
        return optuna.pruners.NopPruner()
    try:
        return pruner_class(name)(**args)
    except (TypeError, ValueError) as err:
        raise SweepError(f"pruner {name}: {err}") from None


def load_spec(path: str | Path) -> SweepSpec:
    """Parse and validate a sweep file.

    Raises:
        SweepError: naming the bad key, field or value.
    """
    path = Path(path)
    if not path.is_file():
        raise SweepError(f"sweep file {path} does not exist")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise SweepError(f"{path}: a sweep file is a mapping, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(TOP_KEYS))
    if unknown:
        hint = " (grid: is now space:, with sampler: grid)" if "grid" in unknown else ""
        raise SweepError(f"{path}: unknown key(s) {unknown}{hint}; known keys: {sorted(TOP_KEYS)}")
    name = raw.get("name") or path.stem
    if not isinstance(name, str) or "'" in name:
        raise SweepError(f"{path}: name must be a string without quotes, got {name!r}")
    base = raw.get("base")
    if not isinstance(base, str):
        raise SweepError(f"{path}: base must be the path of a training config, got {base!r}")
    base_path = next((p for p in (path.parent / base, Path(base)) if p.is_file()), None)
    if base_path is None:
        raise SweepError(f"{path}: base config {base!r} not found next to the sweep file or in {Path.cwd()}")
    space_raw = raw.get("space")
    if not isinstance(space_raw, dict) or not space_raw:
        raise SweepError(f"{path}: space must map config keys to their search space, got {space_raw!r}")
    space = [_parse_param(path, str(k), v) for k, v in space_raw.items()]
    names = [p.name for p in space]
    for duplicate in sorted({n for n in names if names.count(n) > 1}):
        raise SweepError(f"{path}: space names the param {duplicate!r} twice")
    fixed = raw.get("fixed") or {}
    if not isinstance(fixed, dict):
        raise SweepError(f"{path}: fixed must map config keys to values, got {fixed!r}")
    both = sorted(set(map(str, fixed)) & set(map(str, space_raw)))
    if both:
        raise SweepError(f"{path}: {both} are both fixed and in space")
    direction = raw.get("direction", "minimize")
    if direction not in DIRECTIONS:
        raise SweepError(f"{path}: direction must be one of {list(DIRECTIONS)}, got {direction!r}")
    default_sampler = "grid" if all(isinstance(v, list) for v in space_raw.values()) else "tpe"
    sampler, sampler_args = _named(path, "sampler", raw.get("sampler", default_sampler), SAMPLERS, sampler_class)
    if sampler == "grid":
        ranges = [p.key for p in space if p.type != "categorical"]
        if ranges:
            raise SweepError(f"{path}: space.{ranges[0]}: the grid sampler needs a list of values, not a range")
    pruner, pruner_args = _named(path, "pruner", raw.get("pruner"), PRUNERS, pruner_class)
    make_pruner(pruner, pruner_args)  # bad values (e.g. reduction_factor: 1) fail now, not in a trial
    seed = raw.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise SweepError(f"{path}: seed must be an integer, got {seed!r}")
    spec = SweepSpec(
        name=name,
        base=base_path.resolve(),
        space=space,
        sampler=str(sampler),
        sampler_args=sampler_args,
        seed=seed,
        pruner=pruner,
        pruner_args=pruner_args,
        fixed={str(k): v for k, v in fixed.items()},
        experiment=raw.get("experiment"),
        metric=str(raw.get("metric", "val/nll")),
        direction=direction,
        tracking_uri=raw.get("tracking_uri"),
        storage=raw.get("storage"),
        source=path.resolve(),
    )
    points = len(spec.grid()) if sampler == "grid" else None
    trials = raw.get("trials", points)
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise SweepError(f"{path}: trials must be a positive integer (the study's budget), got {trials!r}")
    if points is not None and trials > points:
        raise SweepError(f"{path}: trials ({trials}) exceeds the grid's {points} points")
    spec.trials = trials
    return spec
