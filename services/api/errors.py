"""Errors of the HTTP layer that ``shared.errors`` has no class for (candidates to move there)."""

from __future__ import annotations

from shared.errors import ServiceError


class InvalidRequestError(ServiceError):
    """A request parameter or body that does not validate (names it and what was expected)."""

    http_status = 400


class JobBackendError(ServiceError):
    """The Ray job service (the dashboard) cannot be reached or refused a call."""

    http_status = 503
