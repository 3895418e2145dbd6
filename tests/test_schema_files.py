"""The checked-in JSON Schema files match the code, and agree (checked by jsonschema) with parse_event."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import pytest
from jsonschema.validators import validator_for

from usage_metering.schemas import ValidationError, event_json_schema, parse_event
from usage_metering.schemas import schema_files

pytestmark = pytest.mark.unit

NOW = datetime(2024, 6, 15, 12, 0, tzinfo=timezone.utc)


def test_checked_in_event_schema_is_up_to_date() -> None:
    checked_in = schema_files.EVENT_SCHEMA_PATH.read_text()
    assert checked_in == schema_files.render_event_schema(), (
        f"{schema_files.EVENT_SCHEMA_PATH.name} is stale; regenerate it with "
        "`python -m usage_metering.schemas.schema_files`"
    )


def test_rendered_schema_is_the_code_definition() -> None:
    schema = json.loads(schema_files.render_event_schema())
    assert schema == event_json_schema()
    assert schema["additionalProperties"] is False
    assert schema["required"] == ["tenant_id", "metric", "quantity"]


def offending_fields(value: Any, schema: dict[str, Any]) -> set[str]:
    """The top-level fields `value` breaks `schema` on, by jsonschema (a missing or unexpected one included)."""
    fields: set[str] = set()
    for error in validator_for(schema)(schema).iter_errors(value):
        if error.absolute_path:
            fields.add(str(error.absolute_path[0]))
        elif error.validator == "required":
            fields.update(name for name in error.validator_value if name not in error.instance)
        elif error.validator == "additionalProperties":
            fields.update(name for name in error.instance if name not in error.schema.get("properties", {}))
        else:
            fields.add("")
    return fields


SCHEMA = json.loads(schema_files.EVENT_SCHEMA_PATH.read_text())

VALID = [
    {"tenant_id": "acme", "metric": "api_calls", "quantity": 1},
    {"tenant_id": "acme", "metric": "storage_gb", "quantity": "1.5", "user_id": "u@x.com"},
    {
        "tenant_id": "acme",
        "metric": "api_calls",
        "quantity": 0.25,
        "event_id": "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
        "timestamp": "2024-06-15T11:00:00Z",
        "properties": {"region": "eu"},
    },
    {"tenant_id": "acme", "metric": "api_calls", "quantity": 3, "timestamp": 1718449200},
]

INVALID = [
    ({"metric": "api_calls", "quantity": 1}, "tenant_id"),
    ({"tenant_id": "acme", "quantity": 1}, "metric"),
    ({"tenant_id": "acme", "metric": "api_calls"}, "quantity"),
    ({"tenant_id": "acme", "metric": "api_calls", "quantity": 1, "colour": "red"}, "colour"),
    ({"tenant_id": "a b", "metric": "api_calls", "quantity": 1}, "tenant_id"),
    ({"tenant_id": "t" * 129, "metric": "api_calls", "quantity": 1}, "tenant_id"),
    ({"tenant_id": "acme", "metric": "api_calls", "quantity": -1}, "quantity"),
    ({"tenant_id": "acme", "metric": "api_calls", "quantity": "abc"}, "quantity"),
    ({"tenant_id": "acme", "metric": "api_calls", "quantity": True}, "quantity"),
    ({"tenant_id": "acme", "metric": "api_calls", "quantity": 1, "properties": [1]}, "properties"),
    ({"tenant_id": "acme", "metric": "api_calls", "quantity": 1, "user_id": ""}, "user_id"),
]


@pytest.mark.parametrize("data", VALID)
def test_valid_events_pass_schema_and_parser(data: dict[str, Any]) -> None:
    assert offending_fields(data, SCHEMA) == set()
    parse_event(data, now=NOW)


@pytest.mark.parametrize(("data", "field"), INVALID)
def test_invalid_events_fail_schema_and_parser(data: dict[str, Any], field: str) -> None:
    assert field in offending_fields(data, SCHEMA)
    with pytest.raises(ValidationError) as info:
        parse_event(data, now=NOW)
    assert info.value.field == field
