"""One root error carrying its HTTP status; one subclass per cause.

The HTTP ingress maps every ``ServiceError`` to a JSON body in one place; the CLI prints
``str(error)``. Messages name the offending value (file, row, key) and what was expected.
"""

from __future__ import annotations

from collections.abc import Sequence


def _rebuild(cls: type[ServiceError], args: tuple[object, ...], state: dict[str, object]) -> ServiceError:
    """Unpickle a ``ServiceError`` without calling its ``__init__`` (subclasses take other arguments)."""
    err = cls.__new__(cls)
    err.args = args
    err.__dict__.update(state)
    return err


class ServiceError(Exception):
    """Root of every error serlens raises on purpose.

    Every subclass survives pickling with its message and attributes, so an error raised in a
    Ray task or actor reaches the driver as the same named error. A subclass states its HTTP
    status in its header: ``class NotFoundError(ServiceError, http_status=404)``.
    """

    http_status: int = 500

    def __init_subclass__(cls, *, http_status: int | None = None, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if http_status is not None:
            cls.http_status = http_status

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return _rebuild, (type(self), self.args, dict(self.__dict__))

    def to_dict(self) -> dict[str, object]:
        """The JSON body the HTTP ingress returns for this error."""
        return {"error": type(self).__name__, "detail": str(self)}


def unwrap(err: BaseException) -> ServiceError | None:
    """The serlens error behind ``err``: itself, or the cause a Ray task or actor raised.

    Ray wraps an exception raised remotely in a ``RayTaskError`` (or ``RayActorError``) whose
    ``cause`` is the original; the driver should report the original, named, without Ray's
    traceback. Returns None when no serlens error is behind ``err``.
    """
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        cause = getattr(current, "cause", None)
        if isinstance(cause, ServiceError):
            return _plain(cause)
        if isinstance(current, ServiceError):
            return _plain(current)
        current = cause if isinstance(cause, BaseException) else current.__cause__
    return None


def _plain(err: ServiceError) -> ServiceError:
    """The error as its own class (Ray may hand back a class derived from RayTaskError and it)."""
    for cls in type(err).__mro__:
        if cls.__module__.startswith("serlens.") and issubclass(cls, ServiceError):
            return err if type(err) is cls else _rebuild(cls, err.args, dict(err.__dict__))
    return err


class InvalidConfigError(ServiceError, http_status=400):
    """A config file or ``--set`` override that does not validate."""


class InvalidAudioError(ServiceError, http_status=422):
    """Audio that decodes but cannot be used: NaN, silence, too short, too long."""


class AudioDecodeError(InvalidAudioError):
    """Bytes or a file that are not decodable audio (empty, truncated, not audio)."""


class UnsupportedMediaTypeError(ServiceError, http_status=415):
    """An upload whose container is not one of WAV, FLAC, MP3, OGG."""


class PayloadTooLargeError(ServiceError, http_status=413):
    """An upload over the configured size limit."""


class InvalidInputError(ServiceError):
    """Input that does not validate, naming every problem at once (arrays, rows, files).

    Args:
        problems: one ``(culprit, reason)`` pair per offending item.
        source: what the items belong to, for the message.
    """

    http_status = 422
    hint = ""

    def __init__(self, problems: Sequence[tuple[str, str]], *, source: str = "input") -> None:
        self.problems = list(problems)
        self.source = source
        lines = [f"  {culprit}: {reason}" for culprit, reason in self.problems]
        super().__init__(f"{len(self.problems)} invalid item(s) in {source}:\n" + "\n".join(lines) + self.hint)

    def to_dict(self) -> dict[str, object]:
        """JSON body with every problem listed."""
        return {
            "error": type(self).__name__,
            "detail": f"{len(self.problems)} invalid item(s) in {self.source}",
            "problems": [{"item": c, "reason": r} for c, r in self.problems],
        }


class InvalidManifestError(InvalidInputError):
    """A dataset whose rows or files do not validate; names every problem at once."""

    hint = "\n(run with --skip-invalid to leave them out; each is recorded in the store)"

    def __init__(self, problems: Sequence[tuple[str, str]], *, source: str = "dataset") -> None:
        super().__init__(problems, source=source)


class InvalidRequestError(ServiceError, http_status=400):
    """A request parameter or body that does not validate (names it and what was expected)."""


class JobBackendError(ServiceError, http_status=503):
    """The training ledger (a Ray actor of the cluster) cannot be reached or did not answer."""


class QueryRejectedError(ServiceError, http_status=400):
    """A SQL query refused by the read-only query guard."""


class QueryTimeoutError(QueryRejectedError):
    """A SQL query that ran past the time limit and was interrupted."""


class QueryLimitError(QueryRejectedError):
    """A SQL query over its memory, spill or response-size limit; stopped."""


class QueryBusyError(ServiceError, http_status=503):
    """Too many SQL queries at once in this process; retry later."""


class NotFoundError(ServiceError, http_status=404):
    """A checkpoint, run or table that does not exist."""


class ModelLoadError(ServiceError, http_status=500):
    """A model folder or hub id that cannot be loaded as a speech encoder."""


class UnsupportedModelError(ModelLoadError, http_status=400):
    """A model whose type serlens cannot run as a speech encoder (the message lists the supported ones)."""


class ModelOutOfMemoryError(ServiceError, http_status=503):
    """A clip that ran the model out of memory (CUDA or CPU) even on its own."""


class StoreError(ServiceError, http_status=503):
    """The feature store is missing, unreadable, or inconsistent."""


class TrackingError(ServiceError, http_status=503):
    """The MLflow tracking server or store could not be reached or refused a call."""


class AuthenticationError(ServiceError, http_status=401):
    """A request without a valid API token (missing, malformed, unknown or revoked)."""


class PermissionDeniedError(ServiceError, http_status=403):
    """A valid API token whose scopes do not include what the endpoint needs."""


class ConflictError(ServiceError, http_status=409):
    """A request that clashes with work in progress (the same fit running for another caller)."""


class TooManyJobsError(ServiceError, http_status=429):
    """A training submission over the limit of concurrent jobs; retry when one has finished."""
