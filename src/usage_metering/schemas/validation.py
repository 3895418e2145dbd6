"""Input validated by its own type: the dataclass whose JSON Schema the OpenAPI document shows.

pydantic checks data against a type's annotations (lengths, patterns, ranges,
enums, no unknown fields) and the validators attached to it (rules across
fields); `validate` turns the first thing it finds broken into our
`ValidationError`, named by its path (``metrics[0].tiers[1].up_to``) with a
short code and a plain message. A type states its own message with
`reported_as`; validators raise `ValidationError` themselves, its `field`
relative to where they sit.
"""

from __future__ import annotations

from collections.abc import Hashable
from functools import cache
from typing import Any, TypeVar, cast, overload

from pydantic import ConfigDict, TypeAdapter, ValidatorFunctionWrapHandler, WrapValidator
from pydantic import ValidationError as PydanticValidationError
from pydantic.config import JsonDict
from pydantic_core import ErrorDetails

from .errors import ValidationError

T = TypeVar("T")

UNKNOWN_FIELD = ("unknown_field", "is not a known field")

# pydantic's error types that no type of ours words for itself: (code, message).
_REPORTS: dict[str, tuple[str, str]] = {
    "missing": ("missing_field", "is required"),
    "missing_keyword_only_argument": ("missing_field", "is required"),
    "extra_forbidden": UNKNOWN_FIELD,
    "unexpected_keyword_argument": UNKNOWN_FIELD,
    "dataclass_type": ("invalid_type", "must be a JSON object"),
    "dataclass_args_type": ("invalid_type", "must be a JSON object"),
    "dict_type": ("invalid_type", "must be a JSON object"),
    "tuple_type": ("invalid_type", "must be a list"),
    "list_type": ("invalid_type", "must be a list"),
    "string_type": ("invalid_type", "must be a string"),
    "int_type": ("invalid_type", "must be an integer"),
    "int_parsing": ("invalid_type", "must be an integer"),
    "int_from_float": ("invalid_type", "must be an integer"),
}


def adapter(shape: Any) -> TypeAdapter[Any]:
    """The (cached) pydantic adapter of a type: building one takes milliseconds, using it microseconds."""
    return _adapter(shape)


@cache
def _adapter(shape: Hashable) -> TypeAdapter[Any]:
    return TypeAdapter(cast(Any, shape))


def closed(json_schema_extra: JsonDict | None = None) -> ConfigDict:
    """A configuration type's `__pydantic_config__`: unknown fields refused (`additionalProperties: false`).

    `json_schema_extra` adds to its schema, e.g. an `anyOf` stating a rule across fields.
    """
    return ConfigDict(extra="forbid", json_schema_extra=json_schema_extra)


def reported_as(code: str, message: str, **by_error: tuple[str, str]) -> WrapValidator:
    """`Annotated[...]` metadata: the type's own constraints, when broken, reported as `(code, message)`.

    `by_error` words some of pydantic's error types differently, e.g.
    ``string_type=("invalid_type", "must be a string")``. Errors inside the
    value (a list's items) keep their own report.
    """

    def report(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(value)
        except PydanticValidationError as exc:
            own = [error["type"] for error in exc.errors() if not error["loc"]]
            if not own:
                raise
            chosen_code, chosen_message = by_error.get(own[0], (code, message))
            raise ValidationError(None, chosen_message, chosen_code) from None

    return WrapValidator(report)


def field_path(*parts: str | int | None) -> str | None:
    """``metrics``, ``0``, ``tiers`` -> ``metrics[0].tiers``; a part already a path (``[1].up_to``) is appended."""
    path = ""
    for part in parts:
        if part is None or part == "":
            continue
        if isinstance(part, int):
            path += f"[{part}]"
        elif part.startswith("[") or not path:
            path += part
        else:
            path += f".{part}"
    return path or None


def _error(details: ErrorDetails, field: str | None) -> ValidationError:
    where = field_path(field, *details["loc"])
    cause = details.get("ctx", {}).get("error")
    if isinstance(cause, ValidationError):  # raised by a validator (or `reported_as`) of the type
        return ValidationError(field_path(where, cause.field), cause.message, cause.code)
    code, message = _REPORTS.get(details["type"], ("invalid_field", details["msg"]))
    return ValidationError(where, message, code)


def translate(exc: PydanticValidationError, field: str | None = None) -> ValidationError:
    """The error to report of those pydantic found: an unknown field first (it explains the rest), else the first."""
    errors = exc.errors(include_url=False)
    unknown = [e for e in errors if _REPORTS.get(e["type"]) == UNKNOWN_FIELD]
    return _error((unknown or errors)[0], field)


@overload
def validate(shape: type[T], data: Any, field: str | None = None) -> T: ...
@overload
def validate(shape: Any, data: Any, field: str | None = None) -> Any: ...
def validate(shape: Any, data: Any, field: str | None = None) -> Any:
    """`data` (parsed JSON, or Python values) as `shape`, checked by the type; else our ValidationError.

    `field` names where `data` sits, for a value validated on its own (e.g. ``webhook_url``).
    """
    try:
        return adapter(shape).validate_python(data)
    except PydanticValidationError as exc:
        raise translate(exc, field) from None
