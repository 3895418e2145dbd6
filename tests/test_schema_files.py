"""The checked-in JSON Schema files match the code, and agree with parse_event."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from typing import Any

import pytest

from usage_metering.schemas import ValidationError, event_json_schema, parse_event
from usage_metering.schemas import schema_files

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


# A minimal JSON Schema check: only the keywords event.schema.json uses. Any other
# keyword fails the test, so a schema change cannot silently go unchecked here.
_ANNOTATIONS = {"$schema", "$id", "title", "description", "format"}
_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "string": lambda v: isinstance(v, str),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
}


def schema_errors(value: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    errors: list[str] = []
    for keyword, rule in schema.items():
        if keyword in _ANNOTATIONS or keyword == "properties":
            continue
        if keyword == "type":
            if not _TYPES[rule](value):
                errors.append(f"{path}: not {rule}")
        elif keyword == "required":
            errors += [f"{path}.{name}: required" for name in rule if isinstance(value, dict) and name not in value]
        elif keyword == "additionalProperties":
            assert rule is False
            if isinstance(value, dict):
                errors += [f"{path}.{k}: not allowed" for k in value if k not in schema.get("properties", {})]
        elif keyword == "pattern":
            if isinstance(value, str) and not re.search(rule, value):
                errors.append(f"{path}: does not match {rule}")
        elif keyword == "maxLength":
            if isinstance(value, str) and len(value) > rule:
                errors.append(f"{path}: longer than {rule}")
        elif keyword == "minimum":
            if _TYPES["number"](value) and value < rule:
                errors.append(f"{path}: below {rule}")
        elif keyword == "oneOf":
            matches = [sub for sub in rule if not schema_errors(value, sub, path)]
            if len(matches) != 1:
                errors.append(f"{path}: matches {len(matches)} of oneOf")
        else:
            raise AssertionError(f"minimal checker does not know keyword {keyword!r}")
    if isinstance(value, dict):
        for name, sub in schema.get("properties", {}).items():
            if name in value:
                errors += schema_errors(value[name], sub, f"{path}.{name}")
    return errors


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
    assert schema_errors(data, SCHEMA) == []
    parse_event(data, now=NOW)


@pytest.mark.parametrize(("data", "field"), INVALID)
def test_invalid_events_fail_schema_and_parser(data: dict[str, Any], field: str) -> None:
    errors = schema_errors(data, SCHEMA)
    assert any(error.startswith(f".{field}:") for error in errors), errors
    with pytest.raises(ValidationError) as info:
        parse_event(data, now=NOW)
    assert info.value.field == field


def test_minimal_checker_rejects_unknown_keywords() -> None:
    with pytest.raises(AssertionError):
        schema_errors(1, {"multipleOf": 2})
