"""The MLflow model registry: register a run's pyfunc model, list registered names, resolve ``models:/`` URIs.

A run records its pyfunc model as an MLflow 3 *LoggedModel* named ``pyfunc`` (see
:func:`lightning_bnn.tracking.recorder.log_pyfunc_model`); :func:`register_run` makes it a version of
a registered model (``models:/NAME/1``) and can point an alias at it (``models:/NAME@champion``),
which is what ``mlflow models serve -m models:/NAME@champion`` serves. Runs recorded before
LoggedModels kept the same model as a plain ``pyfunc/`` artifact folder; they register from that
folder.

:func:`resolve_model_uri` maps any ``models:/`` URI back to the run that trained the model, so
:func:`lightning_bnn.tracking.store.load_model` rebuilds it from the run's safetensors files
(never a pickle, never the pyfunc code). Every function takes the store explicitly
(``MlflowClient(uri)``); MLflow's global tracking URI is set only while a version is created
(the registry reads a ``models:/m-...`` source through it) and restored after. Listing the registry
(:func:`registered_versions`, :func:`registered_labels`) imports neither torch nor Lightning.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from lightning_bnn.tracking import artifacts

MODELS_SCHEME = "models:/"
#: registered model names: no characters that break ``models:/NAME/VERSION`` or ``models:/NAME@ALIAS``
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\- ]*$")
#: aliases: MLflow refuses ``latest`` and ``v<digits>`` (they read as versions)
_ALIAS = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")


class RegistryError(ValueError):
    """A run cannot be registered (unknown, deleted, without a model) or a name/alias is refused."""


def _load_error(message: str) -> Exception:
    """A :class:`~lightning_bnn.tracking.serialization.ModelLoadError` (imported here: it brings torch)."""
    from lightning_bnn.tracking.serialization import ModelLoadError

    return ModelLoadError(message)


@dataclass(frozen=True)
class RegisteredVersion:
    """One version of a registered model and where it came from.

    Attributes:
        name: the registered model's name.
        version: its version number (MLflow numbers from 1).
        aliases: the aliases pointing at this version, sorted.
        run_id: the run that trained it (None if MLflow does not know).
        model_id: the LoggedModel it was registered from (None for a run's plain ``pyfunc/`` folder).
    """

    name: str
    version: str
    aliases: tuple[str, ...]
    run_id: str | None
    model_id: str | None

    @property
    def label(self) -> str:
        """``NAME v1 @champion`` (aliases after the version)."""
        return " ".join([self.name, f"v{self.version}", *(f"@{a}" for a in self.aliases)])

    @property
    def uri(self) -> str:
        """``models:/NAME@ALIAS`` (first alias) if it has one, else ``models:/NAME/VERSION``."""
        return f"{MODELS_SCHEME}{self.name}@{self.aliases[0]}" if self.aliases else self.version_uri

    @property
    def version_uri(self) -> str:
        """``models:/NAME/VERSION``."""
        return f"{MODELS_SCHEME}{self.name}/{self.version}"


def _client(tracking_uri: str | None):
    from mlflow import MlflowClient

    from lightning_bnn.tracking.store import resolve_tracking_uri

    return MlflowClient(resolve_tracking_uri(tracking_uri))


def _version(mv: Any) -> RegisteredVersion:
    source = str(getattr(mv, "source", "") or "")
    # a SQL store does not return the model id it was given; the source names it (models:/m-...)
    from_source = source[len(MODELS_SCHEME) :] if source.startswith(f"{MODELS_SCHEME}m-") else None
    return RegisteredVersion(
        name=mv.name,
        version=str(mv.version),
        aliases=tuple(sorted(getattr(mv, "aliases", None) or ())),
        run_id=getattr(mv, "run_id", None) or None,
        model_id=getattr(mv, "model_id", None) or from_source,
    )


# -- a run's pyfunc model --------------------------------------------------------------------------------
def run_logged_models(client: Any, run_id: str, experiment_id: str) -> list[Any]:
    """The run's READY LoggedModels named ``pyfunc``, newest first (a resumed fit logs one more)."""
    models = client.search_logged_models(
        experiment_ids=[experiment_id],
        filter_string=f"source_run_id = '{run_id}' AND name = '{artifacts.PYFUNC_MODEL}'",
    )
    ready = [m for m in models if str(getattr(m.status, "name", m.status)).upper().endswith("READY")]
    return sorted(ready, key=lambda m: m.creation_timestamp or 0, reverse=True)


def pyfunc_source(client: Any, run_id: str) -> tuple[str, str | None]:
    """Where the run's pyfunc model lives: ``(source URI, model id)``, to register it.

    The run's newest LoggedModel (``models:/m-...``) if it has one; else the plain ``pyfunc/``
    folder of runs recorded before LoggedModels (model id None).

    Raises:
        RegistryError: an unknown or deleted run, or a run with no pyfunc model.
    """
    from mlflow.exceptions import MlflowException

    from lightning_bnn.tracking.serialization import ModelLoadError
    from lightning_bnn.tracking.store import parse_run

    try:
        run_id = parse_run(run_id)
    except ModelLoadError as err:
        raise RegistryError(str(err)) from None
    try:
        run = client.get_run(run_id)
    except MlflowException as err:
        raise RegistryError(f"no run {run_id!r} in the store {client.tracking_uri}") from err
    if run.info.lifecycle_stage == "deleted":
        raise RegistryError(f"run {run_id} is deleted; restore it first")
    models = run_logged_models(client, run_id, run.info.experiment_id)
    if models:
        return f"{MODELS_SCHEME}{models[0].model_id}", models[0].model_id
    try:
        legacy = {f.path for f in client.list_artifacts(run_id, artifacts.PYFUNC_MODEL)}
    except (MlflowException, OSError):
        legacy = set()
    if f"{artifacts.PYFUNC_MODEL}/MLmodel" in legacy:
        return f"{run.info.artifact_uri.rstrip('/')}/{artifacts.PYFUNC_MODEL}", None
    raise RegistryError(
        f"run {run_id} has no pyfunc model to register (its status is {run.info.status}; a run logs its model "
        "when training finishes, and only runs of data with an input example get one)"
    )


# -- register ----------------------------------------------------------------------------------------------
def check_name(name: str) -> str:
    """A registered model name, stripped; refuses names that would not read back in a ``models:/`` URI."""
    name = (name or "").strip() if isinstance(name, str) else ""
    if not _NAME.match(name):
        raise RegistryError(
            f"model name {name!r} is not allowed: use letters, digits, spaces, '_', '-' and '.', "
            "starting with a letter or digit (no '/', '@' or ':')"
        )
    return name


def check_alias(alias: str) -> str:
    """An alias; refuses ``latest``, ``v<digits>`` (MLflow reads them as versions) and odd characters."""
    alias = alias.strip() if isinstance(alias, str) else ""
    if not _ALIAS.match(alias) or alias.lower() == "latest" or re.fullmatch(r"[vV]\d+", alias):
        raise RegistryError(
            f"alias {alias!r} is not allowed: use letters, digits, '_' and '-', starting with a letter "
            "(not 'latest' or 'v<number>', which read as versions)"
        )
    return alias


def register_run(run: str, name: str, alias: str | None = None, tracking_uri: str | None = None) -> RegisteredVersion:
    """Register the pyfunc model of ``run`` as a new version of ``name``, and point ``alias`` at it.

    The registered model is created if it does not exist. The version's source is the run's
    LoggedModel (``models:/m-...``), so the version links to the run and to the model's metrics.

    Args:
        run: a run id or ``runs:/<run_id>`` URI.
        name: the registered model's name.
        alias: an alias to set on the new version (moved from any older version), e.g. ``champion``.
        tracking_uri: the store; defaults as in :func:`lightning_bnn.tracking.store.resolve_tracking_uri`.

    Returns:
        The new version, with its aliases.

    Raises:
        RegistryError: an unknown or deleted run, a run without a pyfunc model, a refused name or alias.
    """
    from mlflow.exceptions import MlflowException

    name = check_name(name)
    alias = check_alias(alias) if alias is not None else None
    from lightning_bnn.tracking.store import parse_run, using_tracking_uri

    client = _client(tracking_uri)
    source, model_id = pyfunc_source(client, run)
    run_id = parse_run(run)
    try:
        try:
            client.create_registered_model(name)
        except MlflowException as err:
            if err.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
                raise
        # the registry reads a models:/m-... source through MLflow's global tracking URI
        with using_tracking_uri(client.tracking_uri):
            mv = client.create_model_version(name, source=source, run_id=run_id, model_id=model_id)
        if alias:
            client.set_registered_model_alias(name, alias, mv.version)
        return _version(client.get_model_version(name, mv.version))
    except MlflowException as err:
        raise RegistryError(f"could not register run {run_id} as {name!r}: {err.message}") from err


# -- list -----------------------------------------------------------------------------------------------
def registered_versions(tracking_uri: str | None = None, client: Any = None) -> list[RegisteredVersion]:
    """Every version of every registered model in the store, by name then newest version first.

    For pickers (e.g. the dashboard's ``NAME@alias`` choice): ``version.uri`` loads with
    :func:`lightning_bnn.tracking.store.load_model`, ``version.run_id`` is the run behind it.
    Aliases come from the registered models (``search_model_versions`` leaves them out).
    """
    client = client or _client(tracking_uri)
    aliases: dict[tuple[str, str], list[str]] = {}
    for model in _pages(client.search_registered_models):
        for alias, version in (getattr(model, "aliases", None) or {}).items():
            aliases.setdefault((model.name, str(version)), []).append(alias)
    versions = []
    for mv in _pages(client.search_model_versions):
        v = _version(mv)
        found = tuple(sorted(set(v.aliases) | set(aliases.get((v.name, v.version), ()))))
        versions.append(RegisteredVersion(v.name, v.version, found, v.run_id, v.model_id))
    return sorted(versions, key=lambda v: (v.name, -int(v.version) if v.version.isdigit() else 0))


def _pages(search: Any) -> list[Any]:
    """Every result of an MLflow search method, page by page."""
    items, token = [], None
    while True:
        page = search(max_results=1000, page_token=token)
        items += list(page)
        token = getattr(page, "token", None)
        if not token:
            return items


def registered_labels(versions: Iterable[RegisteredVersion]) -> dict[str, str]:
    """Map each run id to ``NAME v1 @champion`` (several registrations of one run joined by ``, ``); pure."""
    labels: dict[str, list[str]] = {}
    for v in sorted(versions, key=lambda v: (v.name, int(v.version) if v.version.isdigit() else 0)):
        if v.run_id:
            labels.setdefault(v.run_id, []).append(v.label)
    return {run_id: ", ".join(items) for run_id, items in labels.items()}


# -- models:/ URIs ----------------------------------------------------------------------------------------
def parse_model_uri(uri: str) -> tuple[str, str | None, str | None]:
    """``models:/...`` -> ``(model id or name, version, alias)``; pure.

    ``models:/m-<id>`` gives ``(model id, None, None)``; ``models:/NAME/VERSION`` (a number or
    ``latest``) gives ``(NAME, VERSION, None)``; ``models:/NAME@ALIAS`` gives ``(NAME, None, ALIAS)``.

    Raises:
        ModelLoadError: any other form.
    """
    if not isinstance(uri, str) or not uri.startswith(MODELS_SCHEME):
        raise _load_error(f"expected a 'models:/...' URI, got {uri!r}")
    rest = uri[len(MODELS_SCHEME) :].strip("/")
    form = "models:/m-<model id>, models:/NAME/VERSION, models:/NAME/latest or models:/NAME@ALIAS"
    if "@" in rest:
        name, _, alias = rest.partition("@")
        if name and alias and "/" not in rest:
            return name, None, alias
    elif "/" in rest:
        name, _, version = rest.partition("/")
        if name and (version.isdigit() or version.lower() == "latest"):
            return name, version.lower(), None
    elif rest:
        return rest, None, None
    raise _load_error(f"{uri!r} is not a model URI lightning_bnn reads ({form})")


def resolve_model_uri(uri: str, client: Any) -> str:
    """The id of the run that trained the model ``uri`` names (see :func:`parse_model_uri`).

    Raises:
        ModelLoadError: an unknown model, version or alias, or a model with no source run.
    """
    from mlflow.exceptions import MlflowException

    ref, version, alias = parse_model_uri(uri)
    try:
        if version is None and alias is None:
            run_id = client.get_logged_model(ref).source_run_id
            what = f"logged model {ref}"
        else:
            if alias is not None:
                mv = client.get_model_version_by_alias(ref, alias)
            elif version == "latest":
                found = client.search_model_versions(f"name = '{ref}'")
                if not found:
                    raise _load_error(f"registered model {ref!r} has no versions")
                mv = max(found, key=lambda m: int(m.version))
            else:
                mv = client.get_model_version(ref, version)
            run_id = mv.run_id or (client.get_logged_model(mv.model_id).source_run_id if mv.model_id else None)
            what = f"{ref} version {mv.version}"
    except MlflowException as err:
        raise _load_error(f"{uri}: {err.message}") from err
    if not run_id:
        raise _load_error(f"{uri} ({what}) has no source run: lightning_bnn loads a model from the run that trained it")
    return run_id
