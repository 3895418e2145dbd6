"""The HTTP front end: routes over the `Metering` library, JSON in and out."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import date
from functools import cache
from typing import Annotated, Any, Literal, TypeVar, cast

from pydantic import Field
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from usage_metering.forwarding import FORWARDED_HEADER, PASSED_ON_HEADERS, QuotaForwarding
from usage_metering.metering import Metering
from usage_metering.reports.pricing import CSV_COLUMNS, invoice_csv_rows
from usage_metering.reports.quota import QuotaStatus
from usage_metering.reports.top_users import TopUsers
from usage_metering.reports.usage import TenantUsage, UsageSummary
from usage_metering.schemas import (
    EventResult,
    EventStatus,
    batch_summary,
    event_json_schema,
)
from usage_metering.schemas.event_json import MAX_EVENT_JSON_BYTES
from usage_metering.schemas.wire import Identifier

from .auth import AuthMiddleware, check_event_tenants, report_tenant
from .configuration import CONFIG_OPERATIONS
from .dashboard import DASHBOARD_ROUTES
from .errors import EXCEPTION_HANDLERS, ApiError, error_response
from .keys import KEY_OPERATIONS
from .models import (
    MONTH_PATTERN,
    AlertList,
    BatchResult,
    BillingReportRequest,
    DeadLetterList,
    EventAccepted,
    Health,
    InvoiceList,
    QuotaExceededBody,
    Readiness,
    typed_response,
)
from .observability import install_observability, metrics_endpoint, readyz
from .openapi import Answer, Operation, Param, build_document, path_param
from .requests import (
    BAD_BODY,
    BAD_PARAMETER,
    LOOKUP_ERRORS,
    MAX_ADMIN_BODY_BYTES,
    MAX_BATCH_BODY_BYTES,
    MAX_BATCH_EVENTS,
    NOT_FOUND,
    TENANT_PARAM,
    in_thread,
    metering_of,
    parse_json,
    query_date,
    query_flag,
    query_int,
    read_body,
    read_json,
    require_object,
)

T = TypeVar("T")


# -- events ----------------------------------------------------------------------


async def post_event(request: Request) -> Response:
    data = require_object(await read_json(request, MAX_EVENT_JSON_BYTES), "an event")
    check_event_tenants(request, [data])
    result: EventResult = (await asyncio.wrap_future(metering_of(request).node.submit_events([data])))[0]
    if result.status == EventStatus.REJECTED and result.error is not None:
        return error_response(422, result.error)
    if result.status == EventStatus.BLOCKED and result.error is not None:
        return typed_response(QuotaExceededBody(result.error, result.event_id), 429)
    status_code = 202 if result.status == EventStatus.ACCEPTED else 200  # Kafka mode: on the broker, not yet counted
    assert result.event_id is not None
    accepted = cast(Literal[EventStatus.RECORDED, EventStatus.DUPLICATE, EventStatus.ACCEPTED], result.status)
    return typed_response(EventAccepted(result.event_id, accepted), status_code)


async def post_event_batch(request: Request) -> Response:
    body = await read_body(request, MAX_BATCH_BODY_BYTES)
    events: list[Any] | None = metering_of(request).node.validate_events_json(body)  # all valid: one msgspec pass
    if events is None:  # the reference path, for each event's own error
        data = parse_json(body)
        events = require_object(data).get("events") if isinstance(data, dict) else data
        if not isinstance(events, list):
            raise ApiError(422, "invalid_type", "events must be a list of event objects", "events")
    if len(events) > MAX_BATCH_EVENTS:
        raise ApiError(413, "batch_too_large", f"at most {MAX_BATCH_EVENTS} events per batch", "events")
    check_event_tenants(request, events)  # one foreign event refuses the whole batch
    results = await asyncio.wrap_future(metering_of(request).node.submit_events(events))
    summary = batch_summary(result.status for result in results)
    return typed_response(BatchResult(results, **summary))


# -- reports -----------------------------------------------------------------------


async def get_tenant_usage(request: Request) -> Response:
    tenant_id = request.path_params["tenant_id"]
    usage = await in_thread(
        metering_of(request).usage_all,
        tenant_id,
        period=request.query_params.get("period"),
        start=query_date(request, "from"),
        end=query_date(request, "to"),
    )
    return typed_response(usage)


async def get_usage(request: Request) -> Response:
    summary = await in_thread(
        metering_of(request).usage,
        request.path_params["tenant_id"],
        request.path_params["metric"],
        period=request.query_params.get("period"),
        start=query_date(request, "from"),
        end=query_date(request, "to"),
        daily=query_flag(request, "daily"),
    )
    return typed_response(_with_freshness(request, summary))


def _with_freshness(request: Request, answer: T) -> T:
    """Kafka mode adds how fresh the answer is: `as_of` (last commit) and `consumer_lag`."""
    freshness = getattr(request.app.state, "freshness", None)
    return replace(answer, **freshness()) if freshness is not None else answer  # type: ignore[type-var]


SOURCE_HEADER = "x-quota-source"


async def get_quota(request: Request) -> Response:
    """From this node's counters (no I/O, on the loop), else asked of the owner node or read from the lake."""
    tenant_id, metric = request.path_params["tenant_id"], request.path_params["metric"]
    quotas: QuotaForwarding = request.app.state.quotas
    answer = quotas.local_answer(tenant_id, metric)
    if answer is None:
        passed_on = {name: request.headers[name] for name in PASSED_ON_HEADERS if name in request.headers}
        forwarded = FORWARDED_HEADER in request.headers
        answer = await in_thread(quotas.remote_answer, tenant_id, metric, passed_on=passed_on, forwarded=forwarded)
    response = typed_response(_with_freshness(request, answer.status) if answer.from_local_counters else answer.status)
    if answer.source is not None:
        response.headers[SOURCE_HEADER] = answer.source
    return response


async def get_top_users(request: Request) -> Response:
    tenant_id, metric = request.path_params["tenant_id"], request.path_params["metric"]
    period = request.query_params.get("period")
    limit = query_int(request, "limit", 10, 1, 1000)
    ranking = await in_thread(metering_of(request).top_users, tenant_id, metric, limit=limit, period=period)
    return typed_response(ranking)


def _csv_text(rows: list[dict[str, str]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(CSV_COLUMNS))
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


async def post_billing_report(request: Request) -> Response:
    has_body = request.headers.get("content-length", "0") != "0"
    body = require_object(await read_json(request, MAX_ADMIN_BODY_BYTES)) if has_body else {}
    unknown = set(body) - {"tenant_id", "period", "format"}
    if unknown:
        field = sorted(unknown)[0]
        raise ApiError(422, "unknown_field", f"{field} is not a known field", field)
    output = body.get("format") or request.query_params.get("format", "json")
    if output not in ("json", "csv"):
        raise ApiError(422, "invalid_format", "format must be json or csv", "format")
    tenant_id, period = body.get("tenant_id"), body.get("period")
    for name, value in (("tenant_id", tenant_id), ("period", period)):
        if value is not None and not isinstance(value, str):
            raise ApiError(422, "invalid_type", f"{name} must be a string", name)
    tenant_id = report_tenant(request, tenant_id)  # a tenant key: its own tenant only
    invoices = await in_thread(metering_of(request).billing_report, tenant_id, period)
    if output == "csv":
        return Response(_csv_text(invoice_csv_rows(invoices)), media_type="text/csv")
    return typed_response(InvoiceList(invoices))


async def list_dead_letters(request: Request) -> Response:
    limit = query_int(request, "limit", 100, 1, 10_000)
    letters = await in_thread(metering_of(request).dead_letters, limit)
    return typed_response(DeadLetterList(letters))


async def list_alerts(request: Request) -> Response:
    """Quota alerts, newest first; `?tenant_id=&status=pending|delivered&limit=`."""
    params = request.query_params
    limit = query_int(request, "limit", 1000, 1, 10_000)
    alerts = await in_thread(metering_of(request).alerts, params.get("tenant_id"), params.get("status"), limit)
    return typed_response(AlertList(alerts))


async def healthz(_request: Request) -> Response:
    return typed_response(Health())


async def openapi(_request: Request) -> Response:
    return JSONResponse(openapi_document())


_METRIC = path_param("metric", Identifier, "The metric", "api_calls")
_PERIOD = Param(
    "period",
    Annotated[str, Field(pattern=MONTH_PATTERN)],
    "The billing period starting in this month, YYYY-MM (default: the current one)",
)
_FROM = Param("from", date, "First day of a date range (needs `to`)")
_TO = Param("to", date, "Last day of a date range, inclusive (needs `from`)")


def _limit(maximum: int) -> Param:
    return Param("limit", Annotated[int, Field(ge=1, le=maximum)], "How many, at most")


_EVENT_BATCH_SCHEMA = {
    "description": '`{"events": [...]}` or a bare list of events; each event is validated on its own',
    "anyOf": [
        {
            "type": "object",
            "required": ["events"],
            "properties": {
                "events": {
                    "type": "array",
                    "items": {"$ref": "#/components/schemas/Event"},
                    "maxItems": MAX_BATCH_EVENTS,
                }
            },
        },
        {"type": "array", "items": {"$ref": "#/components/schemas/Event"}, "maxItems": MAX_BATCH_EVENTS},
    ],
}
_EVENT_REF = {"$ref": "#/components/schemas/Event"}

OPERATIONS = [
    Operation(
        "POST",
        "/api/events",
        post_event,
        "Record one usage event (2xx = committed)",
        {
            200: Answer("Recorded, or a duplicate of an event already recorded", EventAccepted),
            202: Answer("Kafka mode: acknowledged by the broker (acks=all)", EventAccepted),
            429: Answer("Blocked: the tenant's quota for this metric is used up", QuotaExceededBody),
            **BAD_BODY,
        },
        body=_EVENT_REF,
    ),
    Operation(
        "POST",
        "/api/events/batch",
        post_event_batch,
        f"Record up to {MAX_BATCH_EVENTS:,} events; per-event results (invalid or blocked ones do not fail the batch)",
        {200: Answer("Per-event results", BatchResult), **BAD_BODY},
        body=_EVENT_BATCH_SCHEMA,
    ),
    Operation(
        "GET",
        "/api/usage/{tenant_id}",
        get_tenant_usage,
        "Usage of every metric the tenant used",
        {200: Answer("Usage per metric", TenantUsage), **LOOKUP_ERRORS},
        params=(TENANT_PARAM, _PERIOD, _FROM, _TO),
    ),
    Operation(
        "GET",
        "/api/usage/{tenant_id}/{metric}",
        get_usage,
        "Usage of one metric",
        {200: Answer("Usage", UsageSummary), **LOOKUP_ERRORS},
        params=(TENANT_PARAM, _METRIC, _PERIOD, _FROM, _TO, Param("daily", bool, "Add a daily breakdown")),
    ),
    Operation(
        "GET",
        "/api/quota/{tenant_id}/{metric}",
        get_quota,
        "Quota status in the current period",
        {200: Answer("Quota", QuotaStatus), **LOOKUP_ERRORS},
        params=(TENANT_PARAM, _METRIC),
    ),
    Operation(
        "GET",
        "/api/top-users/{tenant_id}/{metric}",
        get_top_users,
        "Heaviest users of a metric",
        {200: Answer("Users ranked", TopUsers), **LOOKUP_ERRORS},
        params=(TENANT_PARAM, _METRIC, _PERIOD, _limit(1000)),
    ),
    Operation(
        "POST",
        "/api/billing-report",
        post_billing_report,
        "Billing report (invoices) for a tenant or all tenants",
        {
            200: Answer(
                "Invoices", InvoiceList, media={"application/json": InvoiceList, "text/csv": {"type": "string"}}
            ),
            **BAD_BODY,
            **NOT_FOUND,
        },
        params=(Param("format", Literal["json", "csv"], "Output format (a `format` in the body wins)"),),
        body=BillingReportRequest,
        body_required=False,
    ),
    *CONFIG_OPERATIONS,
    Operation(
        "GET",
        "/api/dead-letters",
        list_dead_letters,
        "Input that could not become events, newest first",
        {200: Answer("Dead letters", DeadLetterList), **BAD_PARAMETER},
        params=(_limit(10_000),),
    ),
    Operation(
        "GET",
        "/api/alerts",
        list_alerts,
        "Quota alerts (crossed thresholds) with their webhook delivery status, newest first",
        {200: Answer("Alerts", AlertList), **BAD_PARAMETER},
        params=(
            Param("tenant_id", Identifier, "One tenant"),
            Param("status", Literal["pending", "delivered"], "Only this status"),
            _limit(10_000),
        ),
    ),
    *KEY_OPERATIONS,  # admin-only, see auth.py
    Operation("GET", "/healthz", healthz, "Liveness", {200: Answer("Alive", Health)}, public=True),
    Operation(
        "GET",
        "/readyz",
        readyz,
        "Readiness: 503 while a check (the ingestor; in Kafka mode the partitions) does not pass",
        {200: Answer("Ready", Readiness), 503: Answer("Not ready; `waiting_for` names what", Readiness)},
        public=True,
    ),
    Operation(
        "GET",
        "/metrics",
        metrics_endpoint,
        "Prometheus metrics (text exposition format)",
        {200: Answer("Metrics", media={"text/plain": {"type": "string"}})},
    ),
    Operation(
        "GET",
        "/openapi.json",
        openapi,
        "This document",
        {
            200: Answer(
                "OpenAPI 3.1", media={"application/json": {"type": "object", "required": ["openapi", "info", "paths"]}}
            )
        },
        auth_errors=(401,),
    ),  # any valid key may read it
]


def create_app(metering: Metering, *, close_on_shutdown: bool = True) -> Starlette:
    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        app.state.quotas.close()
        if close_on_shutdown:
            metering.close()  # commits whatever the ingestor still holds

    routes = [op.route() for op in OPERATIONS] + DASHBOARD_ROUTES  # the dashboard's static page is not in the API
    app = Starlette(routes=routes, exception_handlers=EXCEPTION_HANDLERS, lifespan=lifespan)
    app.state.metering = metering
    app.state.quotas = QuotaForwarding(metering)  # cluster mode: quota checks asked of the tenant's owner
    app.add_middleware(AuthMiddleware, metering=metering)  # API keys; see auth.py
    install_observability(app, metering)  # metrics observer, readiness checks, X-Request-ID
    return app


@cache
def openapi_document() -> dict[str, Any]:
    """The OpenAPI document of these routes (the event schema comes from the event definition)."""
    event = {k: v for k, v in event_json_schema().items() if not k.startswith("$")}
    return build_document(OPERATIONS, {"Event": event})
