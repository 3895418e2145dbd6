"""HTTP error bodies: {"error": {"code", "message", "field"}} with the right status."""

from __future__ import annotations

import logging

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from usage_metering.client import MeteringHttpError
from usage_metering.schemas import ErrorDetail, NotFoundError, ValidationError
from usage_metering.store import StoreLockedError

from .models import ErrorBody, typed_response

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.detail = ErrorDetail(code, message, field)


def error_response(status_code: int, detail: ErrorDetail) -> Response:
    return typed_response(ErrorBody(detail), status_code)


async def handle_api_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.detail)


async def handle_validation_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ValidationError)
    return error_response(422, ErrorDetail.of(exc))


async def handle_not_found(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, NotFoundError)
    return error_response(404, ErrorDetail(f"unknown_{exc.kind}", str(exc), f"{exc.kind}_id"))


async def handle_http_exception(_request: Request, exc: Exception) -> Response:
    """Unknown routes (404) and wrong methods (405) answer JSON like every other error."""
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return error_response(exc.status_code, ErrorDetail(code, str(exc.detail)))


async def handle_unexpected(_request: Request, exc: Exception) -> Response:
    """Last resort: log it, answer 503 so clients retry; nothing recorded is lost (the batch rolled back)."""
    log.exception("request failed", exc_info=exc)
    if isinstance(exc, StoreLockedError):
        return error_response(503, ErrorDetail("store_locked", str(exc)))
    return error_response(503, ErrorDetail("unavailable", "temporarily unable to serve; retry"))


async def handle_node_answer(_request: Request, exc: Exception) -> Response:
    """Another node's error answer (an owner asked about a quota), passed on with its status."""
    assert isinstance(exc, MeteringHttpError)
    return error_response(exc.status, ErrorDetail(exc.code or "node_error", exc.message, None))


EXCEPTION_HANDLERS = {
    ApiError: handle_api_error,
    MeteringHttpError: handle_node_answer,
    HTTPException: handle_http_exception,
    ValidationError: handle_validation_error,
    NotFoundError: handle_not_found,
    Exception: handle_unexpected,
}
