"""HTTP routes for the configuration (admin-only, see auth.py): plans, tenants and metric definitions.

Bodies are validated by the same types their request schemas are generated from (schemas/validation.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from pydantic import Field
from starlette.requests import Request
from starlette.responses import Response

from usage_metering.schemas import MetricDefinition, Plan, Tenant
from usage_metering.schemas.wire import Identifier

from .errors import ApiError
from .models import MetricList, PlanList, TenantList, typed_response
from .openapi import Answer, Operation, Param, errors, path_param
from .requests import (
    BAD_BODY,
    LOOKUP_ERRORS,
    MAX_ADMIN_BODY_BYTES,
    NOT_FOUND,
    TENANT_PARAM,
    in_thread,
    metering_of,
    read_json,
    require_object,
)


async def list_plans(request: Request) -> Response:
    return typed_response(PlanList(metering_of(request).plans()))


async def get_plan(request: Request) -> Response:
    version = request.query_params.get("version")
    if version is not None and not (version.isascii() and version.isdigit()):  # isdigit alone takes "²"
        raise ApiError(422, "invalid_parameter", "version must be a positive integer", "version")
    plan = await in_thread(metering_of(request).plan, request.path_params["plan_id"], int(version) if version else None)
    return typed_response(plan)


async def _save_from_body(
    request: Request, save: Callable[[dict[str, Any]], Any], id_field: str | None, status_code: int
) -> Response:
    """Create-or-update from a JSON body; with `id_field`, the URL's id wins over a missing one in the body."""
    body = require_object(await read_json(request, MAX_ADMIN_BODY_BYTES))
    if id_field is not None:
        path_value = request.path_params[id_field]
        if body.get(id_field, path_value) != path_value:
            raise ApiError(422, "id_mismatch", f"{id_field} in the body differs from the URL", id_field)
        body = {**body, id_field: path_value}
    saved = await in_thread(save, body)
    return typed_response(saved, status_code)


async def put_plan(request: Request) -> Response:
    return await _save_from_body(request, metering_of(request).save_plan, "plan_id", 200)


async def post_plan(request: Request) -> Response:
    return await _save_from_body(request, metering_of(request).save_plan, None, 201)


async def list_tenants(request: Request) -> Response:
    return typed_response(TenantList(metering_of(request).tenants()))


async def get_tenant(request: Request) -> Response:
    return typed_response(metering_of(request).tenant(request.path_params["tenant_id"]))


async def put_tenant(request: Request) -> Response:
    return await _save_from_body(request, metering_of(request).save_tenant, "tenant_id", 200)


async def post_tenant(request: Request) -> Response:
    return await _save_from_body(request, metering_of(request).save_tenant, None, 201)


async def list_metrics(request: Request) -> Response:
    return typed_response(MetricList(metering_of(request).metrics()))


async def put_metric(request: Request) -> Response:
    return await _save_from_body(request, metering_of(request).define_metric, "name", 200)


async def post_metric(request: Request) -> Response:
    return await _save_from_body(request, metering_of(request).define_metric, None, 201)


CONFIG_OPERATIONS = [
    Operation("GET", "/api/plans", list_plans, "List plans (newest versions)", {200: Answer("Plans", PlanList)}),
    Operation(
        "POST",
        "/api/plans",
        post_plan,
        "Create a plan, or a new version of it when its definition changed",
        {201: Answer("Saved", Plan), **BAD_BODY},
        body=Plan,
    ),
    Operation(
        "GET",
        "/api/plans/{plan_id}",
        get_plan,
        "One plan (the newest version, or a stored one)",
        {200: Answer("Plan", Plan), **LOOKUP_ERRORS},
        params=(
            path_param("plan_id", Identifier, "The plan", "pro"),
            Param("version", Annotated[int, Field(ge=1)], "A stored version"),
        ),
    ),
    Operation(
        "PUT",
        "/api/plans/{plan_id}",
        put_plan,
        "Create a plan, or a new version of it when its definition changed",
        {200: Answer("Saved", Plan), **BAD_BODY},
        params=(path_param("plan_id", Identifier, "The plan"),),
        body=Plan,
        body_id_in_path="plan_id",
    ),
    Operation("GET", "/api/tenants", list_tenants, "List tenants", {200: Answer("Tenants", TenantList)}),
    Operation(
        "POST",
        "/api/tenants",
        post_tenant,
        "Create or update a tenant",
        {201: Answer("Saved", Tenant), **BAD_BODY, **errors({404: "Unknown plan"})},
        body=Tenant,
    ),
    Operation(
        "GET",
        "/api/tenants/{tenant_id}",
        get_tenant,
        "One tenant",
        {200: Answer("Tenant", Tenant), **NOT_FOUND},
        params=(TENANT_PARAM,),
    ),
    Operation(
        "PUT",
        "/api/tenants/{tenant_id}",
        put_tenant,
        "Create or update a tenant",
        {200: Answer("Saved", Tenant), **BAD_BODY, **errors({404: "Unknown plan"})},
        params=(TENANT_PARAM,),
        body=Tenant,
        body_id_in_path="tenant_id",
    ),
    Operation("GET", "/api/metrics", list_metrics, "List metric definitions", {200: Answer("Metrics", MetricList)}),
    Operation(
        "POST",
        "/api/metrics",
        post_metric,
        "Define a metric",
        {201: Answer("Saved", MetricDefinition), **BAD_BODY},
        body=MetricDefinition,
    ),
    Operation(
        "PUT",
        "/api/metrics/{name}",
        put_metric,
        "Define a metric",
        {200: Answer("Saved", MetricDefinition), **BAD_BODY},
        params=(path_param("name", Identifier, "The metric"),),
        body=MetricDefinition,
        body_id_in_path="name",
    ),
]
