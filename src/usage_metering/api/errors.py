"""HTTP error bodies: {"error": {"code", "message", "field"}} with the right status."""

from __future__ import annotations

import logging
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse

from usage_metering.metering import NotFoundError
from usage_metering.schemas import ValidationError
from usage_metering.store import StoreLockedError

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"code": code, "message": message, "field": field, **extra}


def error_response(status_code: int, body: dict[str, Any], **top_level: Any) -> JSONResponse:
    return JSONResponse({"error": body, **top_level}, status_code=status_code)


async def handle_api_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.body)


async def handle_validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ValidationError)
    return error_response(422, exc.as_dict())


async def handle_not_found(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, NotFoundError)
    return error_response(404, {"code": f"unknown_{exc.kind}", "message": str(exc), "field": f"{exc.kind}_id"})


async def handle_http_exception(_request: Request, exc: Exception) -> JSONResponse:
    """Unknown routes (404) and wrong methods (405) answer JSON like every other error."""
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return error_response(exc.status_code, {"code": code, "message": str(exc.detail), "field": None})


async def handle_unexpected(_request: Request, exc: Exception) -> JSONResponse:
    """Last resort: log it, answer 503 so clients retry; nothing recorded is lost (the batch rolled back)."""
    log.exception("request failed", exc_info=exc)
    status = 503
    if isinstance(exc, StoreLockedError):
        return error_response(status, {"code": "store_locked", "message": str(exc), "field": None})
    return error_response(status, {"code": "unavailable", "message": "temporarily unable to serve; retry", "field": None})


EXCEPTION_HANDLERS = {
    ApiError: handle_api_error,
    HTTPException: handle_http_exception,
    ValidationError: handle_validation_error,
    NotFoundError: handle_not_found,
    Exception: handle_unexpected,
}
