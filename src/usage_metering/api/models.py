"""The HTTP API's own request and response shapes, around the library's result types.

Handlers answer with these (and the library's dataclasses) through
`typed_response`; `api/openapi.py` generates the document from the same types.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import Field
from starlette.responses import Response

from usage_metering.reports.pricing import Invoice
from usage_metering.schemas import ErrorDetail, EventResult, EventStatus, MetricDefinition, Plan, Tenant
from usage_metering.schemas.wire import OMITTED_WHEN_NONE, Identifier, JsonShape, adapter
from usage_metering.store.alerts import Alert
from usage_metering.store.dead_letters import StoredDeadLetter
from usage_metering.store.keys import ApiKey

MONTH_PATTERN = "^[0-9]{4}-(0[1-9]|1[0-2])$"  # a billing period: the one starting in that month


def typed_response(value: Any, status_code: int = 200, shape: Any = None) -> Response:
    """`value` as JSON by its type (or `shape`), the way the OpenAPI document describes it."""
    body = adapter(shape if shape is not None else type(value)).dump_json(value, by_alias=True)
    return Response(body, status_code=status_code, media_type="application/json")


# -- errors -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ErrorBody(JsonShape):
    error: ErrorDetail


@dataclass(frozen=True)
class QuotaExceededBody(JsonShape):
    """A single event blocked by a `block` quota (HTTP 429)."""

    error: ErrorDetail
    event_id: str | None


# -- events --------------------------------------------------------------------------------


@dataclass(frozen=True)
class EventAccepted(JsonShape):
    event_id: str
    status: Literal[EventStatus.RECORDED, EventStatus.DUPLICATE, EventStatus.ACCEPTED]


@dataclass(frozen=True)
class BatchResult(JsonShape):
    """Per-event results, then how many ended in each status (`batch_summary`)."""

    results: list[EventResult]
    recorded: int
    duplicates: int
    blocked: int
    rejected: int
    accepted: Annotated[int, Field(description="Kafka mode: acknowledged by the broker, counted once consumed")]


# -- reports and configuration: lists of the library's types --------------------------------


@dataclass(frozen=True)
class InvoiceList(JsonShape):
    invoices: list[Invoice]


@dataclass(frozen=True)
class PlanList(JsonShape):
    plans: list[Plan]


@dataclass(frozen=True)
class TenantList(JsonShape):
    tenants: list[Tenant]


@dataclass(frozen=True)
class MetricList(JsonShape):
    metrics: list[MetricDefinition]


@dataclass(frozen=True)
class DeadLetterList(JsonShape):
    dead_letters: list[StoredDeadLetter]


@dataclass(frozen=True)
class AlertList(JsonShape):
    alerts: list[Alert]


@dataclass(frozen=True)
class ApiKeyList(JsonShape):
    keys: list[ApiKey]


@dataclass(frozen=True)
class NewApiKey(ApiKey):
    """A key just created, with its token: shown only this once."""

    token: Annotated[str, Field(pattern="^um_[0-9a-f]{16}_.+$")] = ""


# -- probes ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Health(JsonShape):
    status: Literal["ok"] = "ok"


@dataclass(frozen=True)
class Readiness(JsonShape):
    status: Literal["ready", "waiting"]
    waiting_for: Annotated[list[str] | None, OMITTED_WHEN_NONE] = None


# -- request bodies (the configuration types validate their own; this one documents post_billing_report's) --


@dataclass(frozen=True)
class BillingReportRequest:
    tenant_id: Annotated[
        Identifier | None, Field(description="One tenant (default: every tenant; a tenant key: its own)")
    ] = None
    period: Annotated[str | None, Field(pattern=MONTH_PATTERN, description="YYYY-MM (default: the current period)")] = (
        None
    )
    format: Literal["json", "csv"] = "json"
