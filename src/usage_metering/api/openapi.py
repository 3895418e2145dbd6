"""The OpenAPI 3.1 document for the HTTP API (served at /openapi.json)."""

from __future__ import annotations

from typing import Any

from usage_metering import __version__
from usage_metering.schemas import event_json_schema


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERRORS = {
    "400": _json(_ref("Error"), "Malformed JSON"),
    "404": _json(_ref("Error"), "Unknown tenant, plan or metric"),
    "401": _json(_ref("Error"), "Missing, malformed, unknown or revoked API key (with `WWW-Authenticate: Bearer`)"),
    "403": _json(_ref("Error"), "The key's scope does not cover this route or tenant"),
    "413": _json(_ref("Error"), "Body or batch too large"),
    "422": _json(_ref("Error"), "A field is invalid; `error.field` names it"),
}


def _path_param(name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": {"type": "string", "pattern": "^[A-Za-z0-9_.:@-]{1,128}$"},
    }


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


_TENANT = _path_param("tenant_id", "The tenant")
_METRIC = _path_param("metric", "The metric")
_PERIOD = _query("period", {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}$"}, "Billing period starting in YYYY-MM")
_FROM = _query("from", {"type": "string", "format": "date"}, "First day of a date range (with `to`)")
_TO = _query("to", {"type": "string", "format": "date"}, "Last day of a date range (inclusive)")

_DECIMAL = {"type": "string", "description": "An exact decimal number"}
_PERIOD_SCHEMA = {
    "type": "object",
    "properties": {"start": {"type": "string"}, "end": {"type": "string"}, "label": {"type": "string"}},
    "required": ["start", "end"],
}

_SCHEMAS: dict[str, Any] = {
    "Event": {k: v for k, v in event_json_schema().items() if not k.startswith("$")},
    "Error": {
        "type": "object",
        "properties": {
            "error": {
                "type": "object",
                "properties": {
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                    "field": {"type": ["string", "null"]},
                },
                "required": ["code", "message", "field"],
            }
        },
        "required": ["error"],
    },
    "EventAccepted": {
        "type": "object",
        "properties": {"event_id": {"type": "string"}, "status": {"enum": ["recorded", "duplicate", "accepted"]}},
        "required": ["event_id", "status"],
    },
    "BatchResult": {
        "type": "object",
        "properties": {
            "results": {"type": "array", "items": {"type": "object"}},
            "recorded": {"type": "integer"},
            "duplicates": {"type": "integer"},
            "blocked": {"type": "integer"},
            "rejected": {"type": "integer"},
            "accepted": {"type": "integer", "description": "Kafka mode: acknowledged by the broker, counted once consumed"},
        },
        "required": ["results", "recorded", "duplicates", "blocked", "rejected", "accepted"],
    },
    "Usage": {
        "type": "object",
        "properties": {
            "tenant_id": {"type": "string"},
            "metric": {"type": "string"},
            "aggregation": {"enum": ["SUM", "COUNT", "MAX", "UNIQUE_COUNT", "LATEST"]},
            "period": _PERIOD_SCHEMA,
            "value": _DECIMAL,
            "event_count": {"type": "integer"},
            "daily": {"type": "array", "items": {"type": "object"}},
        },
        "required": ["tenant_id", "metric", "aggregation", "period", "value", "event_count"],
    },
    "Quota": {
        "type": "object",
        "properties": {
            "tenant_id": {"type": "string"},
            "metric": {"type": "string"},
            "period": _PERIOD_SCHEMA,
            "used": _DECIMAL,
            "limit": {"type": ["string", "null"]},
            "remaining": {"type": ["string", "null"]},
            "policy": {"enum": ["block", "charge", "notify", None]},
            "allowed": {"type": "boolean"},
            "as_of": {"type": "string"},
        },
        "required": ["tenant_id", "metric", "period", "used", "limit", "remaining", "policy", "allowed", "as_of"],
    },
    "Plan": {"type": "object", "required": ["plan_id"], "properties": {"plan_id": {"type": "string"}}},
    "Tenant": {"type": "object", "properties": {"tenant_id": {"type": "string"}}},
    "Metric": {"type": "object", "properties": {"name": {"type": "string"}}},
}


def _op(summary: str, responses: dict[str, Any], *, params: list[Any] | None = None, body: Any = None) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": summary, "responses": {**responses, **_ERRORS}}
    if params:
        operation["parameters"] = params
    if body is not None:
        operation["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    return operation


def _object(name: str) -> dict[str, Any]:
    return {"type": "object", "description": name}


_PATHS: dict[str, Any] = {
    "/api/events": {
        "post": _op(
            "Record one usage event (2xx = committed)",
            {
                "200": _json(_ref("EventAccepted"), "Recorded, or a duplicate of an event already recorded"),
                "202": _json(_ref("EventAccepted"), "Kafka mode: acknowledged by the broker (acks=all)"),
                "429": _json(_ref("Error"), "Blocked: the tenant's quota for this metric is used up"),
            },
            body=_ref("Event"),
        )
    },
    "/api/events/batch": {
        "post": _op(
            "Record up to 10,000 events; per-event results",
            {"200": _json(_ref("BatchResult"), "Per-event results")},
            body={"type": "object", "properties": {"events": {"type": "array", "items": _ref("Event"), "maxItems": 10000}}, "required": ["events"]},
        )
    },
    "/api/usage/{tenant_id}": {
        "get": _op("Usage of every metric", {"200": _json(_object("usage per metric"), "Usage")}, params=[_TENANT, _PERIOD, _FROM, _TO])
    },
    "/api/usage/{tenant_id}/{metric}": {
        "get": _op(
            "Usage of one metric",
            {"200": _json(_ref("Usage"), "Usage")},
            params=[_TENANT, _METRIC, _PERIOD, _FROM, _TO, _query("daily", {"type": "boolean"}, "Add a daily breakdown")],
        )
    },
    "/api/quota/{tenant_id}/{metric}": {
        "get": _op("Quota status in the current period", {"200": _json(_ref("Quota"), "Quota")}, params=[_TENANT, _METRIC])
    },
    "/api/top-users/{tenant_id}/{metric}": {
        "get": _op(
            "Heaviest users",
            {"200": _json(_object("top users"), "Users ranked")},
            params=[_TENANT, _METRIC, _PERIOD, _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "How many")],
        )
    },
    "/api/billing-report": {
        "post": _op(
            "Billing report (invoices) for a tenant or all tenants",
            {"200": {"description": "Invoices", "content": {"application/json": {"schema": _object("invoices")}, "text/csv": {"schema": {"type": "string"}}}}},
            body={
                "type": "object",
                "properties": {
                    "tenant_id": {"type": "string"},
                    "period": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}$"},
                    "format": {"enum": ["json", "csv"]},
                },
                "additionalProperties": False,
            },
        )
    },
    "/api/plans": {
        "get": _op("List plans (newest versions)", {"200": _json(_object("plans"), "Plans")}),
        "post": _op("Create a plan or a new version", {"201": _json(_ref("Plan"), "Saved")}, body=_ref("Plan")),
    },
    "/api/plans/{plan_id}": {
        "get": _op("One plan", {"200": _json(_ref("Plan"), "Plan")}, params=[_path_param("plan_id", "Plan"), _query("version", {"type": "integer"}, "A stored version")]),
        "put": _op("Create a plan or a new version", {"200": _json(_ref("Plan"), "Saved")}, params=[_path_param("plan_id", "Plan")], body=_ref("Plan")),
    },
    "/api/tenants": {
        "get": _op("List tenants", {"200": _json(_object("tenants"), "Tenants")}),
        "post": _op("Create or update a tenant", {"201": _json(_ref("Tenant"), "Saved")}, body=_ref("Tenant")),
    },
    "/api/tenants/{tenant_id}": {
        "get": _op("One tenant", {"200": _json(_ref("Tenant"), "Tenant")}, params=[_TENANT]),
        "put": _op("Create or update a tenant", {"200": _json(_ref("Tenant"), "Saved")}, params=[_TENANT], body=_ref("Tenant")),
    },
    "/api/metrics": {
        "get": _op("List metric definitions", {"200": _json(_object("metrics"), "Metrics")}),
        "post": _op("Define a metric", {"201": _json(_ref("Metric"), "Saved")}, body=_ref("Metric")),
    },
    "/api/metrics/{name}": {
        "put": _op("Define a metric", {"200": _json(_ref("Metric"), "Saved")}, params=[_path_param("name", "Metric")], body=_ref("Metric")),
    },
    "/api/dead-letters": {
        "get": _op("Input that could not become events", {"200": _json(_object("dead letters"), "Dead letters")}, params=[_query("limit", {"type": "integer"}, "How many")])
    },
    "/api/alerts": {  # quota notifications, see webhooks.py
        "get": _op(
            "Quota alerts (crossed thresholds) with their webhook delivery status, newest first",
            {"200": _json(_object("alerts"), "Alerts")},
            params=[
                _query("tenant_id", {"type": "string"}, "One tenant"),
                _query("status", {"enum": ["pending", "delivered"]}, "Only this status"),
                _query("limit", {"type": "integer"}, "How many"),
            ],
        )
    },
    "/api/keys": {  # admin-only, see api/auth.py
        "get": _op("List API keys (never their tokens)", {"200": _json(_object("keys"), "Keys")}),
        "post": _op(
            "Create an API key; the response holds its token, shown only this once",
            {"201": _json(_object("the key with its token"), "Created")},
            body={
                "type": "object",
                "properties": {"name": {"type": "string"}, "scope": {"enum": ["admin", "tenant"]}, "tenant_id": {"type": "string"}},
                "required": ["name", "scope"],
                "additionalProperties": False,
            },
        ),
    },
    "/api/keys/{key_id}": {
        "delete": _op("Revoke an API key (takes effect at once)", {"200": _json(_object("the revoked key"), "Revoked")}, params=[_path_param("key_id", "Key")]),
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
