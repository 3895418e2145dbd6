"""Reading request bodies and query parameters, with 400/413/422 for bad ones."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from usage_metering.schemas.wire import Identifier

from .errors import ApiError
from .openapi import errors, path_param

if TYPE_CHECKING:
    from usage_metering.metering import Metering

MAX_BATCH_BODY_BYTES = 32 * 1024 * 1024
MAX_BATCH_EVENTS = 10_000
MAX_ADMIN_BODY_BYTES = 1024 * 1024


async def read_json(request: Request, max_bytes: int) -> Any:
    """The body as JSON, numbers with a fraction parsed as exact Decimals."""
    return parse_json(await read_body(request, max_bytes))


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The body's bytes: 413 past `max_bytes`, 400 when empty."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise ApiError(413, "body_too_large", f"request body is over {max_bytes} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise ApiError(413, "body_too_large", f"request body is over {max_bytes} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body:
        raise ApiError(400, "empty_body", "request body must be JSON")
    return body


def parse_json(body: bytes) -> Any:
    """JSON with numbers that have a fraction as exact Decimals; 400 when it is not JSON (or not text)."""
    try:
        data = json.loads(body, parse_float=Decimal)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: nested too deep
        raise ApiError(400, "malformed_json", f"request body is not valid JSON: {exc}") from exc
    if b"\\" in body:  # only a \uXXXX escape can make an unpaired surrogate, which is not text (no UTF-8)
        try:
            json.dumps(data, ensure_ascii=False, default=str).encode("utf-8")
        except UnicodeEncodeError:
            raise ApiError(
                400, "malformed_json", "request body holds an unpaired surrogate escape (\\ud800-\\udfff)"
            ) from None
    return data


def require_object(data: Any, what: str = "request body") -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ApiError(422, "invalid_type", f"{what} must be a JSON object")
    return data


def query_date(request: Request, name: str) -> date | None:
    value = request.query_params.get(name)
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ApiError(422, "invalid_date", "must be a date YYYY-MM-DD", name) from None


def query_int(request: Request, name: str, default: int, low: int, high: int) -> int:
    value = request.query_params.get(name)
    if value is None:
        return default
    if not (value.isascii() and value.isdigit()) or not low <= int(value) <= high:  # isdigit alone takes "²"
        raise ApiError(422, "invalid_parameter", f"must be an integer {low}-{high}", name)
    return int(value)


def query_flag(request: Request, name: str) -> bool:
    return request.query_params.get(name, "").lower() in {"1", "true", "yes"}


BAD_BODY = errors(
    {400: "Empty body or malformed JSON", 413: "Body too large", 422: "A field is invalid; `error.field` names it"}
)
NOT_FOUND = errors({404: "Unknown tenant, plan, metric or key"})
BAD_PARAMETER = errors({422: "A path or query parameter is invalid; `error.field` names it"})
LOOKUP_ERRORS = {**NOT_FOUND, **BAD_PARAMETER}
TENANT_PARAM = path_param("tenant_id", Identifier, "The tenant", "tenant_acme")


def metering_of(request: Request) -> Metering:
    """The library this app serves."""
    metering: Metering = request.app.state.metering
    return metering


async def in_thread(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """DuckDB queries block; run them off the event loop."""
    return await run_in_threadpool(function, *args, **kwargs)
