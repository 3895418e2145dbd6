"""HTTP routes for API keys (admin-only, see auth.py): list, create (token shown once), revoke."""

from __future__ import annotations

from dataclasses import asdict

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from usage_metering.access import ApiKeyRequest
from usage_metering.schemas import validate
from usage_metering.schemas.wire import Identifier
from usage_metering.store.keys import ApiKey

from .models import ApiKeyList, NewApiKey, typed_response
from .openapi import Answer, Operation, errors, path_param
from .requests import BAD_BODY, MAX_ADMIN_BODY_BYTES, metering_of, read_json, require_object


async def list_keys(request: Request) -> Response:
    keys = await run_in_threadpool(metering_of(request).list_api_keys)
    return typed_response(ApiKeyList(keys))


async def create_key(request: Request) -> Response:
    wanted = validate(ApiKeyRequest, require_object(await read_json(request, MAX_ADMIN_BODY_BYTES)))
    key, token = await run_in_threadpool(
        metering_of(request).create_api_key, wanted.name, wanted.scope, wanted.tenant_id
    )
    return typed_response(NewApiKey(**asdict(key), token=token), 201)


async def revoke_key(request: Request) -> Response:
    key = await run_in_threadpool(metering_of(request).revoke_api_key, request.path_params["key_id"])
    return typed_response(key)


KEY_OPERATIONS = [
    Operation("GET", "/api/keys", list_keys, "List API keys (never their tokens)", {200: Answer("Keys", ApiKeyList)}),
    Operation(
        "POST",
        "/api/keys",
        create_key,
        "Create an API key; the response holds its token, shown only this once (authentication is on from now)",
        {201: Answer("Created", NewApiKey), **BAD_BODY},
        body=ApiKeyRequest,
    ),
    Operation(
        "DELETE",
        "/api/keys/{key_id}",
        revoke_key,
        "Revoke an API key (takes effect at once; again is harmless)",
        {200: Answer("Revoked", ApiKey), **errors({404: "Unknown key", 422: "The key id is invalid"})},
        params=(path_param("key_id", Identifier, "The key"),),
    ),
]
