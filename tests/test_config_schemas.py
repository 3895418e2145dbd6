"""One definition per configuration type: the library, the HTTP API and the OpenAPI document agree.

Plans, tenants, metric definitions and API key requests are validated by the
very dataclasses `/openapi.json` shows as request bodies. The same bad input
gets the same error (field, code, message) from the library and over HTTP,
and the limits behind those errors are in the document's request schemas.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from jsonschema.validators import Draft202012Validator
from support.nodes import InProcessNode

from usage_metering.access import ApiKeyRequest
from usage_metering.api.app import openapi_document
from usage_metering.schemas import ValidationError, parse_metric_definition, parse_plan, parse_tenant, validate

pytestmark = pytest.mark.unit  # the library and an in-process app

PLAN = {"plan_id": "msg_plan", "name": "Messages", "metrics": [{"metric": "api_calls", "included": 100}]}
TENANT = {"tenant_id": "msg_tenant"}
METRIC = {"name": "msg_metric"}


def with_metric(**changes: Any) -> dict[str, Any]:
    return {**PLAN, "metrics": [{**PLAN["metrics"][0], **changes}]}


# (what, library parser, route, body) -> the error (field, code, message) both answer.
ERRORS: dict[str, tuple[Callable[[Any], Any], str, dict[str, Any], tuple[str, str, str]]] = {
    "plan name too long": (
        parse_plan,
        "/api/plans",
        {**PLAN, "name": "x" * 201},
        ("name", "invalid_type", "must be a string of 1-200 characters"),
    ),
    "threshold out of range": (
        parse_plan,
        "/api/plans",
        with_metric(alert_thresholds=[80, 1001]),
        (
            "metrics[0].alert_thresholds[1]",
            "invalid_thresholds",
            "must be a percentage above 0 and at most 1000",
        ),
    ),
    "too many thresholds": (
        parse_plan,
        "/api/plans",
        with_metric(alert_thresholds=list(range(1, 12))),
        ("metrics[0].alert_thresholds", "invalid_type", "must be a list of at most 10 percentages"),
    ),
    "tiers out of order": (
        parse_plan,
        "/api/plans",
        with_metric(tiers=[{"up_to": 100, "unit_price": 1}, {"up_to": 50, "unit_price": "0.5"}]),
        ("metrics[0].tiers[1].up_to", "invalid_tiers", "tiers must increase"),
    ),
    "webhook_url too long": (
        parse_tenant,
        "/api/tenants",
        {**TENANT, "webhook_url": "https://hooks.example.com/" + "q" * 2000},
        ("webhook_url", "invalid_type", "must be a URL of at most 2000 characters"),
    ),
    "webhook_url not http": (
        parse_tenant,
        "/api/tenants",
        {**TENANT, "webhook_url": "ftp://hooks.example.com"},
        ("webhook_url", "invalid_url", "must be an absolute http:// or https:// URL"),
    ),
    "unknown field": (
        parse_tenant,
        "/api/tenants",
        {**TENANT, "plan": "pro"},
        ("plan", "unknown_field", "is not a known field"),
    ),
    "unknown nested field": (
        parse_plan,
        "/api/plans",
        with_metric(price=1),
        ("metrics[0].price", "unknown_field", "is not a known field"),
    ),
    "wrong type": (
        parse_tenant,
        "/api/tenants",
        {**TENANT, "billing_anchor_day": "15"},
        ("billing_anchor_day", "invalid_anchor_day", "must be an integer day of month 1-31"),
    ),
    "wrong type of amount": (
        parse_plan,
        "/api/plans",
        {**PLAN, "base_fee": [49]},
        ("base_fee", "invalid_type", "must be a number or a decimal string"),
    ),
    "missing field": (
        parse_metric_definition,
        "/api/metrics",
        {"unit": "calls"},
        ("name", "missing_field", "is required"),
    ),
    "unit too long": (
        parse_metric_definition,
        "/api/metrics",
        {**METRIC, "unit": "u" * 33},
        ("unit", "invalid_type", "must be a string of at most 32 characters"),
    ),
}


@pytest.mark.parametrize("what", sorted(ERRORS))
def test_library_and_http_say_the_same(app_node: InProcessNode, what: str) -> None:
    parse, route, body, expected = ERRORS[what]
    with pytest.raises(ValidationError) as error:
        parse(body)
    assert (error.value.field, error.value.code, error.value.message) == expected
    status, _headers, answer = app_node.request("POST", route, json_body=body)
    assert status == 422, answer
    assert (answer["error"]["field"], answer["error"]["code"], answer["error"]["message"]) == expected


def test_api_key_requests_are_checked_by_their_type(app_node: InProcessNode) -> None:
    status, _headers, answer = app_node.request(
        "POST", "/api/keys", json_body={"name": "ops", "scope": "admin", "x": 1}
    )
    assert status == 422 and answer["error"] == {
        "code": "unknown_field",
        "message": "is not a known field",
        "field": "x",
    }
    for (name, scope, tenant_id), expected in (
        (("x" * 201, "admin", None), ("name", "invalid_name", "must be 1-200 printable characters")),
        (("ops", "root", None), ("scope", "invalid_scope", "must be admin or tenant")),
        (("ops", "tenant", None), ("tenant_id", "missing_field", "is required")),
        (("ops", "admin", "msg_tenant"), ("tenant_id", "unexpected_field", "only tenant keys have a tenant")),
    ):
        with pytest.raises(ValidationError) as error:
            app_node.metering.create_api_key(name, scope, tenant_id)
        assert (error.value.field, error.value.code, error.value.message) == expected
        body = {"name": name, "scope": scope, **({"tenant_id": tenant_id} if tenant_id else {})}
        status, _headers, answer = app_node.request("POST", "/api/keys", json_body=body)
        assert status == 422, answer
        assert (answer["error"]["field"], answer["error"]["code"], answer["error"]["message"]) == expected
    assert app_node.metering.list_api_keys() == []  # none created: authentication stays off


# -- the document ----------------------------------------------------------------------


def request_schema(path: str, method: str = "post") -> dict[str, Any]:
    """The request body schema of an operation, with `$ref`s resolvable (for jsonschema)."""
    document = openapi_document()
    schema = document["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]
    return {**schema, "components": document["components"]}


def component(schema: dict[str, Any]) -> dict[str, Any]:
    """The named schema a `$ref` points to (or the schema itself)."""
    if "$ref" not in schema:
        return schema
    return openapi_document()["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]


def test_request_schemas_carry_the_limits() -> None:
    plan = component(request_schema("/api/plans"))
    assert plan["additionalProperties"] is False
    assert plan["required"] == ["plan_id"]  # name defaults to the plan_id
    assert (plan["properties"]["name"]["minLength"], plan["properties"]["name"]["maxLength"]) == (1, 200)
    assert plan["properties"]["currency"]["pattern"] == "^[A-Z]{3}$"
    metric = component(plan["properties"]["metrics"]["items"])
    assert metric["additionalProperties"] is False
    thresholds = metric["properties"]["alert_thresholds"]
    assert (thresholds["maxItems"], thresholds["uniqueItems"]) == (10, True)
    number, text = thresholds["items"]["anyOf"]
    assert (number["exclusiveMinimum"], number["maximum"]) == (0, 1000)
    assert "pattern" in text
    assert component(metric["properties"]["tiers"]["items"])["additionalProperties"] is False

    tenant = component(request_schema("/api/tenants"))
    assert tenant["additionalProperties"] is False
    url = tenant["properties"]["webhook_url"]["anyOf"][0]
    assert url["maxLength"] == 2000
    assert tenant["properties"]["name"]["maxLength"] == 200
    day = tenant["properties"]["billing_anchor_day"]
    assert (day["minimum"], day["maximum"]) == (1, 31)

    definition = component(request_schema("/api/metrics"))
    assert definition["additionalProperties"] is False
    assert definition["properties"]["unit"]["maxLength"] == 32
    assert definition["properties"]["description"]["maxLength"] == 500

    key = component(request_schema("/api/keys"))
    assert key["additionalProperties"] is False
    assert (key["properties"]["name"]["minLength"], key["properties"]["name"]["maxLength"]) == (1, 200)


def test_put_bodies_may_leave_out_the_id_of_the_url() -> None:
    assert "plan_id" not in request_schema("/api/plans/{plan_id}", "put").get("required", [])
    assert "tenant_id" not in request_schema("/api/tenants/{tenant_id}", "put").get("required", [])
    assert "name" not in request_schema("/api/metrics/{name}", "put").get("required", [])


# Rules JSON Schema cannot state: the document gives them in words (descriptions).
IN_WORDS = {"tiers out of order", "webhook_url not http"}


@pytest.mark.parametrize("what", sorted(ERRORS))
def test_the_document_refuses_what_the_types_refuse(what: str) -> None:
    _parse, route, body, _expected = ERRORS[what]
    errors = list(Draft202012Validator(request_schema(route)).iter_errors(body))
    assert (errors == []) == (what in IN_WORDS), (body, [e.message for e in errors])


@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("/api/plans", {**PLAN, "metrics": [{"metric": "m", "policy": "NOTIFY", "alert_thresholds": [50]}]}),
        ("/api/keys", {"name": "ops", "scope": "admin", "tenant_id": "msg_tenant"}),
        ("/api/keys", {"name": "ops", "scope": "tenant"}),
    ],
)
def test_rules_across_fields_are_in_the_schema(route: str, body: dict[str, Any]) -> None:
    """Thresholds need `included`; only tenant keys (all of them) name a tenant: in the schema (anyOf) too."""
    assert list(Draft202012Validator(request_schema(route)).iter_errors(body))
    with pytest.raises(ValidationError):
        if route == "/api/plans":
            parse_plan(body)
        else:
            validate(ApiKeyRequest, body)
