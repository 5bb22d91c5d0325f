"""Who is calling: bearer-token authentication before anything is read, scopes per router.

``TokenAuth`` (ASGI middleware) answers 401 to any request but ``/healthz`` without a valid
``Authorization: Bearer <token>`` header, before the body is read, and records the ``Caller``
in the request's state; ``require(scope)`` is the dependency each router declares (403 when
the caller's token lacks that scope).
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from serlens.api.tokens import Caller, TokenRegistry
from serlens.shared.errors import AuthenticationError, PermissionDeniedError

#: Paths answered without a token (liveness probes cannot carry one).
PUBLIC_PATHS = frozenset({"/healthz"})

#: Longest ``Authorization`` header looked at, in bytes (a token is 51 characters).
MAX_AUTHORIZATION_BYTES = 512


def bearer_token(scope: Scope) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    for key, value in scope.get("headers", []):
        if key.lower() == b"authorization" and len(value) <= MAX_AUTHORIZATION_BYTES:
            kind, _, token = value.decode("latin-1").partition(" ")
            if kind.lower() == "bearer" and token.strip():
                return token.strip()
    return None


class TokenAuth:
    """ASGI middleware: authenticate every request but ``PUBLIC_PATHS`` before the app runs.

    Args:
        app: the wrapped ASGI app.
        registry: the valid tokens.
    """

    def __init__(self, app: ASGIApp, *, registry: TokenRegistry) -> None:
        self.app = app
        self.registry = registry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass an authenticated request on with its caller, or answer 401 unread."""
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        token = bearer_token(scope)
        caller = self.registry.authenticate(token) if token else None
        if caller is None:
            error = AuthenticationError(
                "a valid API token is required: send 'Authorization: Bearer <token>'"
                if token is None
                else "the API token is not valid (unknown or revoked)"
            )
            response = JSONResponse(
                error.to_dict(),
                status_code=error.http_status,
                headers={"WWW-Authenticate": 'Bearer realm="serlens"'},
            )
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["caller"] = caller
        await self.app(scope, receive, send)


def require(scope: str) -> Callable[[Request], Caller]:
    """A FastAPI dependency: the caller, if its token has ``scope``.

    Raises:
        PermissionDeniedError: the token lacks ``scope`` (403).
        AuthenticationError: no authenticated caller (the middleware is missing).
    """

    def caller_with_scope(request: Request) -> Caller:
        caller = getattr(request.state, "caller", None)
        if not isinstance(caller, Caller):
            raise AuthenticationError("a valid API token is required")
        if scope not in caller.scopes:
            raise PermissionDeniedError(
                f"the token of {caller.name!r} has scopes {sorted(caller.scopes)}; "
                f"this endpoint needs {scope!r}"
            )
        return caller

    caller_with_scope.__name__ = f"require_{scope}"
    return caller_with_scope
