"""Request ids: one per HTTP request, echoed in `X-Request-ID`, visible to every log record.

A pure ASGI middleware (no Request/Response objects: it sits on the hot path
of POST /api/events and GET /api/quota). The id lives in a contextvar, which
Starlette copies into the worker threads it runs blocking handlers in, so
`usage_metering.node.logs` can put it on any record logged while serving the request.
"""

from __future__ import annotations

import logging
import random
import re
import time
from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # types only: node logging imports this module without loading Starlette
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = b"x-request-id"
_SANE_ID = re.compile(rb"[A-Za-z0-9._:@/+=-]{1,128}")  # no spaces, quotes or control characters

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
access_log = logging.getLogger("usage_metering.access")


def incoming_request_id(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The client's X-Request-ID when it is a sane token (else None: we make our own)."""
    for name, value in headers:
        if name == HEADER:
            return value.decode("ascii") if _SANE_ID.fullmatch(value) else None
    return None


def new_request_id() -> str:
    """64 random bits as hex. A correlation id, not a secret: `random` needs no system call, while
    os.urandom's getrandom() gives up the GIL, and on a busy node the event loop then waits for the
    writer thread to hand it back (up to the 5 ms switch interval, once per request)."""
    return f"{random.getrandbits(64):016x}"


class RequestIdMiddleware:
    """Assigns the request id, returns it in the response, logs one access line (when INFO is on for
    `usage_metering.access`: `usage_metering.node.logs.configure_logging` turns it on in JSON mode)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = incoming_request_id(scope["headers"]) or new_request_id()
        header = (HEADER, request_id.encode("ascii"))
        status = 500  # what the client gets if the app raises (the error handler then answers 5xx)
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), header]
            await send(message)

        token = request_id_var.set(request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if access_log.isEnabledFor(logging.INFO):
                _log_access(scope, status, started)
            request_id_var.reset(token)


def _log_access(scope: Scope, status: int, started: float) -> None:
    duration_ms = round((time.perf_counter() - started) * 1000, 3)
    method, path = scope["method"], scope["path"]
    access_log.info(
        "%s %s %d %.3fms",
        method,
        path,
        status,
        duration_ms,
        extra={"method": method, "path": path, "status": status, "duration_ms": duration_ms},
    )
