"""The HTTP front end: routes over the `Metering` library, JSON in and out."""

from __future__ import annotations

import asyncio
import csv
import io
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from usage_metering.metering import EventResult, Metering
from usage_metering.schemas import EventStatus, batch_summary
from usage_metering.reports.pricing import CSV_COLUMNS, invoice_csv_rows

from .auth import AuthMiddleware, check_event_tenants, report_tenant
from .dashboard import DASHBOARD_ROUTES
from .errors import EXCEPTION_HANDLERS, ApiError, error_response
from .observability import install_observability
from .keys import KEY_ROUTES
from .openapi import openapi_document
from .requests import (
    MAX_ADMIN_BODY_BYTES,
    MAX_BATCH_BODY_BYTES,
    MAX_BATCH_EVENTS,
    MAX_EVENT_BODY_BYTES,
    query_date,
    query_flag,
    query_int,
    read_json,
    require_object,
)


def _metering(request: Request) -> Metering:
    return request.app.state.metering


async def _in_thread(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """DuckDB queries block; run them off the event loop."""
    return await run_in_threadpool(function, *args, **kwargs)


# -- events ----------------------------------------------------------------------

async def post_event(request: Request) -> Response:
    data = require_object(await read_json(request, MAX_EVENT_BODY_BYTES), "an event")
    check_event_tenants(request, [data])
    result: EventResult = (await asyncio.wrap_future(_metering(request).submit_events([data])))[0]
    if result.status == EventStatus.REJECTED:
        assert result.error is not None
        return error_response(422, result.error.as_dict())
    if result.status == EventStatus.BLOCKED:
        return error_response(429, result.to_json_dict()["error"], event_id=result.event_id)
    status_code = 202 if result.status == EventStatus.ACCEPTED else 200  # Kafka mode: on the broker, not yet counted
    return JSONResponse({"event_id": result.event_id, "status": result.status}, status_code=status_code)


async def post_event_batch(request: Request) -> Response:
    body = await read_json(request, MAX_BATCH_BODY_BYTES)
    events = require_object(body).get("events") if isinstance(body, dict) else body
    if not isinstance(events, list):
        raise ApiError(422, "invalid_type", "events must be a list of event objects", "events")
    if len(events) > MAX_BATCH_EVENTS:
        raise ApiError(413, "batch_too_large", f"at most {MAX_BATCH_EVENTS} events per batch", "events")
    check_event_tenants(request, events)  # one foreign event refuses the whole batch
    results = await asyncio.wrap_future(_metering(request).submit_events(events))
    summary = batch_summary(result.status for result in results)
    return JSONResponse({"results": [r.to_json_dict() for r in results], **summary})


# -- reports -----------------------------------------------------------------------

async def get_tenant_usage(request: Request) -> Response:
    tenant_id = request.path_params["tenant_id"]
    usage = await _in_thread(
        _metering(request).usage_all,
        tenant_id,
        period=request.query_params.get("period"),
        start=query_date(request, "from"),
        end=query_date(request, "to"),
    )
    return JSONResponse(usage.to_json_dict())


async def get_usage(request: Request) -> Response:
    summary = await _in_thread(
        _metering(request).usage,
        request.path_params["tenant_id"],
        request.path_params["metric"],
        period=request.query_params.get("period"),
        start=query_date(request, "from"),
        end=query_date(request, "to"),
        daily=query_flag(request, "daily"),
    )
    return JSONResponse(_with_freshness(request, summary.to_json_dict()))


def _with_freshness(request: Request, body: dict[str, Any]) -> dict[str, Any]:
    """Kafka mode adds how fresh the answer is: `as_of` (last commit) and `consumer_lag`."""
    freshness = getattr(request.app.state, "freshness", None)
    return {**body, **freshness()} if freshness is not None else body


async def get_quota(request: Request) -> Response:
    status = _metering(request).quota(request.path_params["tenant_id"], request.path_params["metric"])
    return JSONResponse(_with_freshness(request, status.to_json_dict()))


async def get_top_users(request: Request) -> Response:
    tenant_id, metric = request.path_params["tenant_id"], request.path_params["metric"]
    period = request.query_params.get("period")
    limit = query_int(request, "limit", 10, 1, 1000)
    ranking = await _in_thread(_metering(request).top_users, tenant_id, metric, limit=limit, period=period)
    return JSONResponse(ranking.to_json_dict())


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
    invoices = await _in_thread(_metering(request).billing_report, tenant_id, period)
    if output == "csv":
        return Response(_csv_text(invoice_csv_rows(invoices)), media_type="text/csv")
    return JSONResponse({"invoices": [invoice.to_json_dict() for invoice in invoices]})


# -- configuration ---------------------------------------------------------------------

async def list_plans(request: Request) -> Response:
    return JSONResponse({"plans": [p.to_json_dict() for p in _metering(request).plans()]})


async def get_plan(request: Request) -> Response:
    version = request.query_params.get("version")
    if version is not None and not (version.isascii() and version.isdigit()):  # isdigit alone takes "²"
        raise ApiError(422, "invalid_parameter", "version must be a positive integer", "version")
    plan = await _in_thread(
        _metering(request).plan, request.path_params["plan_id"], int(version) if version else None
    )
    return JSONResponse(plan.to_json_dict())


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
    saved = await _in_thread(save, body)
    return JSONResponse(saved.to_json_dict(), status_code=status_code)


async def put_plan(request: Request) -> Response:
    return await _save_from_body(request, _metering(request).save_plan, "plan_id", 200)


async def post_plan(request: Request) -> Response:
    return await _save_from_body(request, _metering(request).save_plan, None, 201)


async def list_tenants(request: Request) -> Response:
    return JSONResponse({"tenants": [t.to_json_dict() for t in _metering(request).tenants()]})


async def get_tenant(request: Request) -> Response:
    return JSONResponse(_metering(request).tenant(request.path_params["tenant_id"]).to_json_dict())


async def put_tenant(request: Request) -> Response:
    return await _save_from_body(request, _metering(request).save_tenant, "tenant_id", 200)


async def post_tenant(request: Request) -> Response:
    return await _save_from_body(request, _metering(request).save_tenant, None, 201)


async def list_metrics(request: Request) -> Response:
    return JSONResponse({"metrics": [m.to_json_dict() for m in _metering(request).metrics()]})


async def put_metric(request: Request) -> Response:
    return await _save_from_body(request, _metering(request).define_metric, "name", 200)


async def post_metric(request: Request) -> Response:
    return await _save_from_body(request, _metering(request).define_metric, None, 201)


async def list_dead_letters(request: Request) -> Response:
    limit = query_int(request, "limit", 100, 1, 10_000)
    letters = await _in_thread(_metering(request).dead_letters, limit)
    return JSONResponse({"dead_letters": letters})


async def list_alerts(request: Request) -> Response:
    """Quota alerts, newest first; `?tenant_id=&status=pending|delivered&limit=`."""
    params = request.query_params
    limit = query_int(request, "limit", 1000, 1, 10_000)
    alerts = await _in_thread(_metering(request).alerts, params.get("tenant_id"), params.get("status"), limit)
    return JSONResponse({"alerts": [alert.to_json_dict() for alert in alerts]})


async def healthz(_request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def openapi(_request: Request) -> Response:
    return JSONResponse(openapi_document())


ROUTES = [
    Route("/api/events", post_event, methods=["POST"]),
    Route("/api/events/batch", post_event_batch, methods=["POST"]),
    Route("/api/usage/{tenant_id}", get_tenant_usage, methods=["GET"]),
    Route("/api/usage/{tenant_id}/{metric}", get_usage, methods=["GET"]),
    Route("/api/quota/{tenant_id}/{metric}", get_quota, methods=["GET"]),
    Route("/api/top-users/{tenant_id}/{metric}", get_top_users, methods=["GET"]),
    Route("/api/billing-report", post_billing_report, methods=["POST"]),
    Route("/api/plans", list_plans, methods=["GET"]),
    Route("/api/plans", post_plan, methods=["POST"]),
    Route("/api/plans/{plan_id}", get_plan, methods=["GET"]),
    Route("/api/plans/{plan_id}", put_plan, methods=["PUT"]),
    Route("/api/tenants", list_tenants, methods=["GET"]),
    Route("/api/tenants", post_tenant, methods=["POST"]),
    Route("/api/tenants/{tenant_id}", get_tenant, methods=["GET"]),
    Route("/api/tenants/{tenant_id}", put_tenant, methods=["PUT"]),
    Route("/api/metrics", list_metrics, methods=["GET"]),
    Route("/api/metrics", post_metric, methods=["POST"]),
    Route("/api/metrics/{name}", put_metric, methods=["PUT"]),
    Route("/api/dead-letters", list_dead_letters, methods=["GET"]),
    Route("/api/alerts", list_alerts, methods=["GET"]),
    Route("/healthz", healthz, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
    *KEY_ROUTES,  # GET/POST /api/keys, DELETE /api/keys/{key_id} (admin)
    *DASHBOARD_ROUTES,  # GET /dashboard and its static assets
]


def create_app(metering: Metering, *, close_on_shutdown: bool = True) -> Starlette:
    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        if close_on_shutdown:
            metering.close()  # commits whatever the ingestor still holds

    app = Starlette(routes=ROUTES, exception_handlers=EXCEPTION_HANDLERS, lifespan=lifespan)
    app.state.metering = metering
    app.add_middleware(AuthMiddleware, metering=metering)  # API keys; see auth.py
    install_observability(app, metering)  # GET /metrics, GET /readyz, X-Request-ID
    return app
