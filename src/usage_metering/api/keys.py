"""HTTP routes for API keys (admin-only, see auth.py): list, create (token shown once), revoke."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from usage_metering.metering import Metering

from .errors import ApiError
from .requests import MAX_ADMIN_BODY_BYTES, read_json, require_object

KEY_FIELDS = frozenset({"name", "scope", "tenant_id"})


def _metering(request: Request) -> Metering:
    return request.app.state.metering


async def list_keys(request: Request) -> Response:
    keys = await run_in_threadpool(_metering(request).list_api_keys)
    return JSONResponse({"keys": [key.to_json_dict() for key in keys]})


async def create_key(request: Request) -> Response:
    body = require_object(await read_json(request, MAX_ADMIN_BODY_BYTES))
    unknown = sorted(set(body) - KEY_FIELDS)
    if unknown:
        raise ApiError(422, "unknown_field", f"{unknown[0]} is not a known field", unknown[0])
    key, token = await run_in_threadpool(
        _metering(request).create_api_key, body.get("name"), body.get("scope"), body.get("tenant_id")
    )
    return JSONResponse({**key.to_json_dict(), "token": token}, status_code=201)


async def revoke_key(request: Request) -> Response:
    key = await run_in_threadpool(_metering(request).revoke_api_key, request.path_params["key_id"])
    return JSONResponse(key.to_json_dict())


KEY_ROUTES = [
    Route("/api/keys", list_keys, methods=["GET"]),
    Route("/api/keys", create_key, methods=["POST"]),
    Route("/api/keys/{key_id}", revoke_key, methods=["DELETE"]),
]
