"""``models:/`` URIs: a registered model (by alias or version) or a LoggedModel, as a local checkpoint.

Where serlens takes a model (``model.name`` of a run, the API's ``model``), it also takes::

    models:/serlens-ser@champion      a registered model by alias
    models:/serlens-ser/3             a registered model by version
    models:/m-0123456789abcdef...     a LoggedModel by id (MLflow 3)

``resolve`` turns an alias into the version it points at now (so that a run records which
weights it used), and ``download`` fetches the model's artifacts once per version into a cache
folder and returns its ``checkpoint`` folder, which loads through the same transformers code
as any local checkpoint. A malformed URI, an unknown name, alias or version is a named error
raised before anything is downloaded.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from mlflow.exceptions import MlflowException

from serlens.shared.errors import InvalidConfigError, NotFoundError, TrackingError
from serlens.shared.logged_models import CHECKPOINT_ARTIFACT
from serlens.shared.tracking import TrackingConfig, call

SCHEME = "models:/"
_NAME = r"[A-Za-z0-9][\w.\- ]*"
_PATTERN = re.compile(rf"^models:/(?:(?P<model_id>m-[0-9a-f]{{8,}})|(?P<name>{_NAME})"
                      rf"(?:@(?P<alias>[\w\-]+)|/(?P<version>[0-9]+)))/?$")


@dataclass(frozen=True)
class ModelUri:
    """A parsed ``models:/`` URI: exactly one of ``model_id``, ``(name, alias)``, ``(name, version)``."""

    text: str
    name: str | None = None
    alias: str | None = None
    version: str | None = None
    model_id: str | None = None

    @property
    def cache_key(self) -> str:
        """A folder name for its downloaded artifacts (pinned URIs only)."""
        return self.model_id or f"{self.name}/v{self.version}"


def is_model_uri(text: str) -> bool:
    """Whether ``text`` means a ``models:/`` URI (and not a folder or a hub id)."""
    return text.startswith("models:")


def parse(text: str) -> ModelUri:
    """Parse a ``models:/`` URI.

    Raises:
        InvalidConfigError: naming the URI and the forms accepted.
    """
    match = _PATTERN.match(text.strip())
    if match is None:
        raise InvalidConfigError(
            f"model {text!r} is not a models:/ URI serlens can load; expected models:/<name>@<alias>, "
            "models:/<name>/<version> or models:/<model_id> (e.g. models:/serlens-ser@champion)")
    return ModelUri(text=text.strip(), **{k: v for k, v in match.groupdict().items() if v is not None})


def resolve(config: TrackingConfig, text: str) -> ModelUri:
    """Pin a URI: an alias becomes the version it points at now; the version or model must exist.

    Returns:
        A URI with ``version`` (registered models) or ``model_id`` (LoggedModels) set.

    Raises:
        InvalidConfigError: a malformed URI.
        NotFoundError: no such registered model, alias, version or LoggedModel at the tracking store.
        TrackingError: the store cannot be reached.
    """
    uri = parse(text)
    where = f"in the MLflow model registry at {config.tracking_uri}"
    try:
        if uri.model_id is not None:
            call(config, f"look up {uri.text}", lambda c: c.get_logged_model(uri.model_id))
            return uri
        if uri.alias is not None:
            found = call(config, f"look up {uri.text}", lambda c: c.get_model_version_by_alias(uri.name, uri.alias))
        else:
            found = call(config, f"look up {uri.text}", lambda c: c.get_model_version(uri.name, uri.version))
    except TrackingError as err:
        cause = err.__cause__
        if isinstance(cause, MlflowException) and cause.error_code in ("RESOURCE_DOES_NOT_EXIST",
                                                                        "INVALID_PARAMETER_VALUE"):
            raise NotFoundError(f"model {uri.text!r}: not found {where} ({str(cause).splitlines()[0]})") from err
        raise
    return ModelUri(text=f"{SCHEME}{uri.name}/{found.version}", name=uri.name, version=str(found.version),
                    model_id=None)


def _artifact_location(config: TrackingConfig, uri: ModelUri) -> str:
    if uri.model_id is not None:
        return str(call(config, f"look up {uri.text}", lambda c: c.get_logged_model(uri.model_id)).artifact_location)
    version = call(config, f"look up {uri.text}", lambda c: c.get_model_version(uri.name, uri.version))
    return str(version.source)


def download(config: TrackingConfig, text: str, cache_dir: Path) -> Path:
    """The local checkpoint folder of a ``models:/`` URI, downloaded once per pinned version.

    Args:
        config: the tracking store holding the registry.
        text: the URI.
        cache_dir: where downloads are kept (``<cache_dir>/<name>/v<version>``).

    Raises:
        InvalidConfigError: a malformed URI.
        NotFoundError: no such model, or one without a serlens checkpoint inside.
        TrackingError: the store cannot be reached.
    """
    from mlflow.artifacts import download_artifacts

    uri = resolve(config, text)
    target = Path(cache_dir) / uri.cache_key
    checkpoint = target / "artifacts" / CHECKPOINT_ARTIFACT
    if checkpoint.is_dir():
        return checkpoint
    location = _artifact_location(config, uri)
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    root = Path(call(config, f"download {uri.text}", lambda c: download_artifacts(
        artifact_uri=location, dst_path=str(partial), tracking_uri=config.tracking_uri)))
    if not (root / "artifacts" / CHECKPOINT_ARTIFACT).is_dir():
        shutil.rmtree(partial, ignore_errors=True)
        raise NotFoundError(f"model {uri.text!r} ({location}) holds no serlens checkpoint "
                            f"(artifacts/{CHECKPOINT_ARTIFACT}); was it logged by serlens?")
    try:
        os.replace(root, target)  # another process may have finished the same download first
    except OSError:
        pass
    shutil.rmtree(partial, ignore_errors=True)
    return checkpoint


def local_source(name_or_uri: str, config: TrackingConfig, cache_dir: Path) -> str:
    """``name_or_uri`` itself, or for a ``models:/`` URI its downloaded checkpoint folder."""
    return str(download(config, name_or_uri, cache_dir)) if is_model_uri(name_or_uri) else name_or_uri
