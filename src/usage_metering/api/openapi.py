"""The OpenAPI 3.1 document for the HTTP API (served at /openapi.json).

Hand-written, and kept honest by `tests/test_openapi_fuzz.py`, which fuzzes a
live node with schemathesis: every status an operation can answer is listed
here, and every response body must match its schema (the component schemas
mirror the `to_json_dict()` methods in schemas/, reports/ and store/).
"""

from __future__ import annotations

from typing import Any

from usage_metering import __version__
from usage_metering.schemas import event_json_schema
from usage_metering.schemas.ids import ID_PATTERN
from usage_metering.schemas.money import DECIMAL_TEXT_PATTERN

from .requests import MAX_BATCH_EVENTS

MONTH_PATTERN = "^[0-9]{4}-(0[1-9]|1[0-2])$"  # a billing period: the one starting in that month


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _object(properties: dict[str, Any], required: list[str] | None = None, *, closed: bool = True) -> dict[str, Any]:
    """An object schema; `closed` objects are exactly what a `to_json_dict()` returns (no other keys)."""
    schema: dict[str, Any] = {"type": "object", "properties": properties, "required": list(properties) if required is None else required}
    if closed:
        schema["additionalProperties"] = False
    return schema


def _list_of(key: str, item: str) -> dict[str, Any]:
    return _object({key: {"type": "array", "items": _ref(item)}})


# -- shared pieces --------------------------------------------------------------------

_ID = {"type": "string", "pattern": ID_PATTERN, "maxLength": 128}
_DECIMAL = {"type": "string", "pattern": DECIMAL_TEXT_PATTERN, "description": "An exact decimal number >= 0, as text"}
_AMOUNT_IN = {
    "description": "A finite decimal >= 0 (below 10^20, at most 9 fractional digits): a JSON number or decimal text",
    "oneOf": [
        {"type": "number", "minimum": 0, "exclusiveMaximum": 1e20},
        {"type": "string", "pattern": DECIMAL_TEXT_PATTERN},
    ],
}
_TIMESTAMP = {"type": "string", "format": "date-time", "description": "RFC 3339, UTC (`Z`)"}
_COUNT = {"type": "integer", "minimum": 0}

# Statuses the API answers on (nearly) every route.
_AUTH_ERRORS = {
    "401": _error("Missing, malformed, unknown or revoked API key (with `WWW-Authenticate: Bearer`); only once a key exists"),
    "403": _error("The key's scope does not cover this route or tenant"),
}
_UNAVAILABLE = {"503": _error("Temporarily unable to serve (e.g. the database file is locked); retry")}
_BODY_ERRORS = {
    "400": _error("Empty body or malformed JSON"),
    "413": _error("Body too large"),
    "422": _error("A field is invalid; `error.field` names it"),
}
_NOT_FOUND = {"404": _error("Unknown tenant, plan, metric or key")}
_INVALID_PARAMETER = {"422": _error("A path or query parameter is invalid; `error.field` names it")}


def _path_param(name: str, description: str, example: str | None = None) -> dict[str, Any]:
    param: dict[str, Any] = {"name": name, "in": "path", "required": True, "description": description, "schema": _ID}
    if example is not None:
        param["example"] = example
    return param


def _query(name: str, schema: dict[str, Any], description: str, example: Any = None) -> dict[str, Any]:
    param: dict[str, Any] = {"name": name, "in": "query", "required": False, "description": description, "schema": schema}
    if example is not None:
        param["example"] = example
    return param


_TENANT = _path_param("tenant_id", "The tenant", "tenant_acme")
_METRIC = _path_param("metric", "The metric", "api_calls")
_PERIOD = _query("period", {"type": "string", "pattern": MONTH_PATTERN}, "The billing period starting in this month, YYYY-MM (default: the current one)")
_FROM = _query("from", {"type": "string", "format": "date"}, "First day of a date range (needs `to`)")
_TO = _query("to", {"type": "string", "format": "date"}, "Last day of a date range, inclusive (needs `from`)")


def _limit(default: int, maximum: int) -> dict[str, Any]:
    return _query("limit", {"type": "integer", "minimum": 1, "maximum": maximum, "default": default}, "How many, at most")


# -- component schemas ------------------------------------------------------------------

_PERIOD_SCHEMA = _object({"start": _TIMESTAMP, "end": _TIMESTAMP})  # end is exclusive
_ERROR_DETAIL = _object(
    {
        "code": {"type": "string", "description": "Machine-readable reason, e.g. `invalid_quantity`"},
        "message": {"type": "string"},
        "field": {"type": ["string", "null"], "description": "The offending field or parameter, if one"},
        # quota_exceeded only:
        "metric": {"type": "string"},
        "limit": _DECIMAL,
        "used": _DECIMAL,
        "period": _PERIOD_SCHEMA,
    },
    ["code", "message", "field"],
)

_SCHEMAS: dict[str, Any] = {
    # requests
    "Event": {k: v for k, v in event_json_schema().items() if not k.startswith("$")},
    "EventBatch": {
        "description": "`{\"events\": [...]}` or a bare list of events; each event is validated on its own",
        "anyOf": [
            {
                "type": "object",
                "properties": {"events": {"type": "array", "items": _ref("Event"), "maxItems": MAX_BATCH_EVENTS}},
                "required": ["events"],
            },
            {"type": "array", "items": _ref("Event"), "maxItems": MAX_BATCH_EVENTS},
        ],
    },
    "BillingReportRequest": _object(
        {
            "tenant_id": {**_ID, "description": "One tenant (default: every tenant; a tenant key: its own)"},
            "period": {"type": "string", "pattern": MONTH_PATTERN, "description": "YYYY-MM (default: the current period)"},
            "format": {"enum": ["json", "csv"], "default": "json"},
        },
        [],
    ),
    "PlanInput": _object(
        {
            "plan_id": {**_ID, "description": "Required; a PUT takes it from the URL when absent"},
            "name": {"type": "string", "minLength": 1, "maxLength": 200, "description": "Default: the plan id"},
            "currency": {"type": "string", "pattern": "^[A-Z]{3}$", "default": "USD"},
            "base_fee": _AMOUNT_IN,
            "metrics": {"type": "array", "items": _ref("PlanMetricInput")},
            "version": {"type": "integer", "description": "Ignored: the store assigns versions"},
        },
        [],
    ),
    "PlanMetricInput": _object(
        {
            "metric": _ID,
            "included": {**_nullable(_AMOUNT_IN), "description": "The quota; null or absent = unlimited"},
            "policy": {"enum": ["block", "charge", "notify"], "default": "charge"},
            "unit_price": _AMOUNT_IN,
            "tiers": _nullable({"type": "array", "items": _ref("PriceTierInput")}),
            "alert_thresholds": _nullable(
                {"type": "array", "maxItems": 10, "items": {"type": "number", "exclusiveMinimum": 0, "maximum": 1000}}
            ),
        },
        ["metric"],
    ),
    "PriceTierInput": _object({"up_to": _nullable(_AMOUNT_IN), "unit_price": _AMOUNT_IN}, ["unit_price"]),
    "TenantInput": _object(
        {
            "tenant_id": {**_ID, "description": "Required; a PUT takes it from the URL when absent"},
            "name": _nullable({"type": "string", "maxLength": 200}),
            "plan_id": _nullable(_ID),
            "billing_anchor_day": _nullable({"type": "integer", "minimum": 1, "maximum": 31}),
            "webhook_url": _nullable({"type": "string", "format": "uri", "maxLength": 2000, "description": "http(s)"}),
        },
        [],
    ),
    "MetricInput": _object(
        {
            "name": {**_ID, "description": "Required; a PUT takes it from the URL when absent"},
            "aggregation": {"enum": ["SUM", "COUNT", "MAX", "UNIQUE_COUNT", "LATEST"], "default": "SUM"},
            "unit": _nullable({"type": "string", "maxLength": 32}),
            "description": _nullable({"type": "string", "maxLength": 500}),
        },
        [],
    ),
    "ApiKeyInput": _object(
        {
            "name": {"type": "string", "minLength": 1, "maxLength": 200},
            "scope": {"enum": ["admin", "tenant"]},
            "tenant_id": {**_ID, "description": "Tenant keys only"},
        },
        ["name", "scope"],
    ),
    # responses
    "Error": _object({"error": _ERROR_DETAIL}),
    "QuotaExceeded": _object({"error": _ERROR_DETAIL, "event_id": _ID}),
    "EventAccepted": _object({"event_id": _ID, "status": {"enum": ["recorded", "duplicate", "accepted"]}}),
    "EventResult": _object(
        {
            "index": _COUNT,
            "event_id": {"type": ["string", "null"]},
            "status": {"enum": ["recorded", "duplicate", "blocked", "rejected", "accepted"]},
            "error": _ERROR_DETAIL,
        },
        ["index", "event_id", "status"],
    ),
    "BatchResult": _object(
        {
            "results": {"type": "array", "items": _ref("EventResult")},
            "recorded": _COUNT,
            "duplicates": _COUNT,
            "blocked": _COUNT,
            "rejected": _COUNT,
            "accepted": {**_COUNT, "description": "Kafka mode: acknowledged by the broker, counted once consumed"},
        }
    ),
    "Period": _PERIOD_SCHEMA,
    "DailyUsage": _object({"date": {"type": "string", "format": "date"}, "value": _DECIMAL, "event_count": _COUNT}),
    "Usage": _object(
        {
            "tenant_id": _ID,
            "metric": _ID,
            "aggregation": {"enum": ["SUM", "COUNT", "MAX", "UNIQUE_COUNT", "LATEST"]},
            "period": _PERIOD_SCHEMA,
            "value": _DECIMAL,
            "event_count": _COUNT,
            "daily": {"type": "array", "items": _ref("DailyUsage"), "description": "With `daily=true`"},
            "as_of": {**_TIMESTAMP, "description": "Kafka mode: the last commit the answer includes"},
            "consumer_lag": {**_COUNT, "description": "Kafka mode: messages not yet consumed"},
        },
        ["tenant_id", "metric", "aggregation", "period", "value", "event_count"],
    ),
    "TenantUsage": _object({"tenant_id": _ID, "period": _PERIOD_SCHEMA, "metrics": {"type": "array", "items": _ref("Usage")}}),
    "Quota": _object(
        {
            "tenant_id": _ID,
            "metric": _ID,
            "period": _PERIOD_SCHEMA,
            "used": _DECIMAL,
            "limit": {**_nullable(_DECIMAL), "description": "null: unlimited"},
            "remaining": _nullable(_DECIMAL),
            "policy": {"enum": ["block", "charge", "notify", None], "description": "null: the metric is not in the plan"},
            "allowed": {"type": "boolean", "description": "Would one more unit be accepted?"},
            "as_of": _TIMESTAMP,
            "consumer_lag": {**_COUNT, "description": "Kafka mode: messages not yet consumed"},
        },
        ["tenant_id", "metric", "period", "used", "limit", "remaining", "policy", "allowed", "as_of"],
    ),
    "TopUser": _object({"rank": {"type": "integer", "minimum": 1}, "user_id": _ID, "value": _DECIMAL, "event_count": _COUNT}),
    "TopUsers": _object({"tenant_id": _ID, "metric": _ID, "period": _PERIOD_SCHEMA, "users": {"type": "array", "items": _ref("TopUser")}}),
    "TierCharge": _object({"up_to": _nullable(_DECIMAL), "quantity": _DECIMAL, "unit_price": _DECIMAL, "amount": _DECIMAL}),
    "LineItem": _object(
        {
            "metric": _ID,
            "policy": {"enum": ["block", "charge", "notify"]},
            "used": _DECIMAL,
            "included": _nullable(_DECIMAL),
            "overage_quantity": _DECIMAL,
            "unit_price": _DECIMAL,
            "amount": _DECIMAL,
            "tiers": {"type": "array", "items": _ref("TierCharge")},
        }
    ),
    "Invoice": _object(
        {
            "tenant_id": _ID,
            "plan_id": _nullable(_ID),
            "plan_version": {"type": ["integer", "null"]},
            "period": _object({"start": _TIMESTAMP, "end": _TIMESTAMP, "label": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}$"}}),
            "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
            "base_fee": _DECIMAL,
            "line_items": {"type": "array", "items": _ref("LineItem")},
            "total": _DECIMAL,
        }
    ),
    "InvoiceList": _list_of("invoices", "Invoice"),
    "PriceTier": _object({"up_to": _nullable(_DECIMAL), "unit_price": _DECIMAL}),
    "PlanMetric": _object(
        {
            "metric": _ID,
            "included": _nullable(_DECIMAL),
            "policy": {"enum": ["block", "charge", "notify"]},
            "unit_price": _DECIMAL,
            "tiers": {"type": "array", "items": _ref("PriceTier")},
            "alert_thresholds": {"type": "array", "items": _DECIMAL},
        }
    ),
    "Plan": _object(
        {
            "plan_id": _ID,
            "version": {"type": "integer", "minimum": 0},
            "name": {"type": "string"},
            "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
            "base_fee": _DECIMAL,
            "metrics": {"type": "array", "items": _ref("PlanMetric")},
        }
    ),
    "PlanList": _list_of("plans", "Plan"),
    "Tenant": _object(
        {
            "tenant_id": _ID,
            "name": {"type": "string"},
            "plan_id": _nullable(_ID),
            "billing_anchor_day": {"type": "integer", "minimum": 1, "maximum": 31},
            "webhook_url": {"type": ["string", "null"]},
        }
    ),
    "TenantList": _list_of("tenants", "Tenant"),
    "Metric": _object(
        {
            "name": _ID,
            "aggregation": {"enum": ["SUM", "COUNT", "MAX", "UNIQUE_COUNT", "LATEST"]},
            "unit": {"type": "string"},
            "description": {"type": "string"},
        }
    ),
    "MetricList": _list_of("metrics", "Metric"),
    "DeadLetter": _object(
        {
            "id": {"type": "integer"},
            "received_at": _TIMESTAMP,
            "source": {"type": "string", "description": "kafka, http or import"},
            "topic": {"type": ["string", "null"]},
            "partition": {"type": ["integer", "null"]},
            "offset": {"type": ["integer", "null"]},
            "raw": {"type": "string", "description": "The input as UTF-8 text (undecodable bytes replaced)"},
            "reason": {"type": "string"},
        }
    ),
    "DeadLetterList": _list_of("dead_letters", "DeadLetter"),
    "Alert": _object(
        {
            "type": {"const": "quota.threshold_crossed"},
            "alert_id": {"type": "string", "description": "Stable across retries: receivers deduplicate on it"},
            "tenant_id": _ID,
            "metric": _ID,
            "threshold_percent": _DECIMAL,
            "included": _DECIMAL,
            "used": _DECIMAL,
            "period": _PERIOD_SCHEMA,
            "created_at": _TIMESTAMP,
            "status": {"enum": ["pending", "delivered"]},
            "attempts": _COUNT,
            "last_error": {"type": ["string", "null"]},
            "delivered_at": _nullable(_TIMESTAMP),
            "next_attempt_at": _nullable(_TIMESTAMP),
        }
    ),
    "AlertList": _list_of("alerts", "Alert"),
    "ApiKey": _object(
        {
            "key_id": {"type": "string", "pattern": "^[0-9a-f]{16}$"},
            "name": {"type": "string"},
            "scope": {"enum": ["admin", "tenant"]},
            "tenant_id": _nullable(_ID),
            "created_at": _TIMESTAMP,
            "revoked_at": _nullable(_TIMESTAMP),
        }
    ),
    "ApiKeyList": _list_of("keys", "ApiKey"),
    "NewApiKey": _object(
        {
            "key_id": {"type": "string", "pattern": "^[0-9a-f]{16}$"},
            "name": {"type": "string"},
            "scope": {"enum": ["admin", "tenant"]},
            "tenant_id": _nullable(_ID),
            "created_at": _TIMESTAMP,
            "revoked_at": {"type": "null"},
            "token": {"type": "string", "pattern": "^um_[0-9a-f]{16}_.+$", "description": "Shown only this once"},
        }
    ),
    "Health": _object({"status": {"const": "ok"}}),
    "Readiness": _object(
        {"status": {"enum": ["ready", "waiting"]}, "waiting_for": {"type": "array", "items": {"type": "string"}}},
        ["status"],
    ),
}


# -- operations ---------------------------------------------------------------------------


def _op(
    summary: str,
    responses: dict[str, Any],
    *,
    params: list[Any] | None = None,
    body: Any = None,
    body_required: bool = True,
    errors: dict[str, Any] | None = None,
    auth: dict[str, Any] = _AUTH_ERRORS,
    public: bool = False,
) -> dict[str, Any]:
    """One operation: its own responses, then `errors`, `auth` errors (none if `public`) and 503."""
    operation: dict[str, Any] = {
        "summary": summary,
        "responses": {**responses, **(errors or {}), **({} if public else auth), **_UNAVAILABLE},
    }
    if public:
        operation["security"] = []
    if params:
        operation["parameters"] = params
    if body is not None:
        operation["requestBody"] = {"required": body_required, "content": {"application/json": {"schema": body}}}
    return operation


_PATHS: dict[str, Any] = {
    "/api/events": {
        "post": _op(
            "Record one usage event (2xx = committed)",
            {
                "200": _json(_ref("EventAccepted"), "Recorded, or a duplicate of an event already recorded"),
                "202": _json(_ref("EventAccepted"), "Kafka mode: acknowledged by the broker (acks=all)"),
                "429": _json(_ref("QuotaExceeded"), "Blocked: the tenant's quota for this metric is used up"),
            },
            body=_ref("Event"),
            errors=_BODY_ERRORS,
        )
    },
    "/api/events/batch": {
        "post": _op(
            f"Record up to {MAX_BATCH_EVENTS:,} events; per-event results (invalid or blocked ones do not fail the batch)",
            {"200": _json(_ref("BatchResult"), "Per-event results")},
            body=_ref("EventBatch"),
            errors={**_BODY_ERRORS, "413": _error(f"Body too large, or more than {MAX_BATCH_EVENTS:,} events")},
        )
    },
    "/api/usage/{tenant_id}": {
        "get": _op(
            "Usage of every metric the tenant used",
            {"200": _json(_ref("TenantUsage"), "Usage per metric")},
            params=[_TENANT, _PERIOD, _FROM, _TO],
            errors={**_NOT_FOUND, **_INVALID_PARAMETER},
        )
    },
    "/api/usage/{tenant_id}/{metric}": {
        "get": _op(
            "Usage of one metric",
            {"200": _json(_ref("Usage"), "Usage")},
            params=[_TENANT, _METRIC, _PERIOD, _FROM, _TO, _query("daily", {"type": "boolean", "default": False}, "Add a daily breakdown")],
            errors={**_NOT_FOUND, **_INVALID_PARAMETER},
        )
    },
    "/api/quota/{tenant_id}/{metric}": {
        "get": _op(
            "Quota status in the current period",
            {"200": _json(_ref("Quota"), "Quota")},
            params=[_TENANT, _METRIC],
            errors={**_NOT_FOUND, **_INVALID_PARAMETER},
        )
    },
    "/api/top-users/{tenant_id}/{metric}": {
        "get": _op(
            "Heaviest users of a metric",
            {"200": _json(_ref("TopUsers"), "Users ranked")},
            params=[_TENANT, _METRIC, _PERIOD, _limit(10, 1000)],
            errors={**_NOT_FOUND, **_INVALID_PARAMETER},
        )
    },
    "/api/billing-report": {
        "post": _op(
            "Billing report (invoices) for a tenant or all tenants",
            {
                "200": {
                    "description": "Invoices",
                    "content": {
                        "application/json": {"schema": _ref("InvoiceList")},
                        "text/csv": {"schema": {"type": "string"}},
                    },
                }
            },
            params=[_query("format", {"enum": ["json", "csv"], "default": "json"}, "Output format (a `format` in the body wins)")],
            body=_ref("BillingReportRequest"),
            body_required=False,
            errors={**_BODY_ERRORS, **_NOT_FOUND},
        )
    },
    "/api/plans": {
        "get": _op("List plans (newest versions)", {"200": _json(_ref("PlanList"), "Plans")}),
        "post": _op(
            "Create a plan, or a new version of it when its definition changed",
            {"201": _json(_ref("Plan"), "Saved")},
            body=_ref("PlanInput"),
            errors=_BODY_ERRORS,
        ),
    },
    "/api/plans/{plan_id}": {
        "get": _op(
            "One plan (the newest version, or a stored one)",
            {"200": _json(_ref("Plan"), "Plan")},
            params=[
                _path_param("plan_id", "The plan", "pro"),
                _query("version", {"type": "integer", "minimum": 1}, "A stored version"),
            ],
            errors={**_NOT_FOUND, **_INVALID_PARAMETER},
        ),
        "put": _op(
            "Create a plan, or a new version of it when its definition changed",
            {"200": _json(_ref("Plan"), "Saved")},
            params=[_path_param("plan_id", "The plan")],
            body=_ref("PlanInput"),
            errors=_BODY_ERRORS,
        ),
    },
    "/api/tenants": {
        "get": _op("List tenants", {"200": _json(_ref("TenantList"), "Tenants")}),
        "post": _op(
            "Create or update a tenant",
            {"201": _json(_ref("Tenant"), "Saved")},
            body=_ref("TenantInput"),
            errors={**_BODY_ERRORS, "404": _error("Unknown plan")},
        ),
    },
    "/api/tenants/{tenant_id}": {
        "get": _op("One tenant", {"200": _json(_ref("Tenant"), "Tenant")}, params=[_TENANT], errors=_NOT_FOUND),
        "put": _op(
            "Create or update a tenant",
            {"200": _json(_ref("Tenant"), "Saved")},
            params=[_TENANT],
            body=_ref("TenantInput"),
            errors={**_BODY_ERRORS, "404": _error("Unknown plan")},
        ),
    },
    "/api/metrics": {
        "get": _op("List metric definitions", {"200": _json(_ref("MetricList"), "Metrics")}),
        "post": _op("Define a metric", {"201": _json(_ref("Metric"), "Saved")}, body=_ref("MetricInput"), errors=_BODY_ERRORS),
    },
    "/api/metrics/{name}": {
        "put": _op(
            "Define a metric",
            {"200": _json(_ref("Metric"), "Saved")},
            params=[_path_param("name", "The metric")],
            body=_ref("MetricInput"),
            errors=_BODY_ERRORS,
        ),
    },
    "/api/dead-letters": {
        "get": _op(
            "Input that could not become events, newest first",
            {"200": _json(_ref("DeadLetterList"), "Dead letters")},
            params=[_limit(100, 10_000)],
            errors=_INVALID_PARAMETER,
        )
    },
    "/api/alerts": {  # quota notifications, see webhooks.py
        "get": _op(
            "Quota alerts (crossed thresholds) with their webhook delivery status, newest first",
            {"200": _json(_ref("AlertList"), "Alerts")},
            params=[
                _query("tenant_id", _ID, "One tenant"),
                _query("status", {"enum": ["pending", "delivered"]}, "Only this status"),
                _limit(1000, 10_000),
            ],
            errors=_INVALID_PARAMETER,
        )
    },
    "/api/keys": {  # admin-only, see api/auth.py
        "get": _op("List API keys (never their tokens)", {"200": _json(_ref("ApiKeyList"), "Keys")}),
        "post": _op(
            "Create an API key; the response holds its token, shown only this once (authentication is on from now)",
            {"201": _json(_ref("NewApiKey"), "Created")},
            body=_ref("ApiKeyInput"),
            errors=_BODY_ERRORS,
        ),
    },
    "/api/keys/{key_id}": {
        "delete": _op(
            "Revoke an API key (takes effect at once; again is harmless)",
            {"200": _json(_ref("ApiKey"), "Revoked")},
            params=[_path_param("key_id", "The key")],
            errors={**_NOT_FOUND, **_INVALID_PARAMETER},
        ),
    },
    "/healthz": {"get": _op("Liveness", {"200": _json(_ref("Health"), "Alive")}, public=True)},
    "/readyz": {
        "get": {
            "summary": "Readiness: 503 while a check (the ingestor; in Kafka mode the partitions) does not pass",
            "security": [],
            "responses": {
                "200": _json(_ref("Readiness"), "Ready"),
                "503": _json(_ref("Readiness"), "Not ready; `waiting_for` names what"),
            },
        }
    },
    "/metrics": {
        "get": _op(
            "Prometheus metrics (text exposition format)",
            {"200": {"description": "Metrics", "content": {"text/plain": {"schema": {"type": "string"}}}}},
        )
    },
    "/openapi.json": {
        "get": _op(
            "This document",
            {"200": _json({"type": "object", "required": ["openapi", "info", "paths"]}, "OpenAPI 3.1")},
            auth={"401": _AUTH_ERRORS["401"]},  # any valid key may read it
        )
    },
}


def openapi_document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "Usage Metering", "version": __version__},
        "paths": _PATHS,
        "components": {"schemas": _SCHEMAS, "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearerAuth": []}],  # none needed while no key exists; /healthz and /readyz stay open
    }
