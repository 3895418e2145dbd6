"""The OpenAPI 3.1 document, generated from the routes' declared types (served at /openapi.json).

Each route is an `Operation`: its handler, what it answers per status (a
type, whose JSON Schema pydantic derives from the same dataclass the handler
serialises), its request body type and its parameters. `tests/test_openapi_fuzz.py`
fuzzes a live node against the document with schemathesis.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter
from pydantic.json_schema import JsonSchemaMode
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from usage_metering import __version__

from .models import ErrorBody

Endpoint = Callable[[Request], Awaitable[Response]]
REF_TEMPLATE = "#/components/schemas/{model}"
AUTH_ERRORS: dict[int, str] = {
    401: "Missing, malformed, unknown or revoked API key (with `WWW-Authenticate: Bearer`); only once a key exists",
    403: "The key's scope does not cover this route or tenant",
}
UNAVAILABLE = {503: "Temporarily unable to serve (e.g. the database file is locked); retry"}


@dataclass(frozen=True)
class Param:
    """A path or query parameter: its name, type (for the schema) and meaning."""

    name: str
    shape: Any
    description: str
    location: str = "query"
    example: Any = None


@dataclass(frozen=True)
class Answer:
    """One status of an operation: its body type (None: an error body), or a raw schema per media type."""

    description: str
    shape: Any = ErrorBody
    media: Mapping[str, Any] | None = None  # e.g. {"text/csv": {"type": "string"}}: raw schemas


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    endpoint: Endpoint
    summary: str
    answers: Mapping[int, Answer]
    params: tuple[Param, ...] = ()
    body: Any = None  # a type, or a raw JSON Schema (dict) for bodies the library validates itself
    body_required: bool = True
    body_id_in_path: str | None = None  # a field of `body` the path gives: optional in the body, if given the same
    public: bool = False  # no key needed: no 401/403
    auth_errors: tuple[int, ...] = (401, 403)

    def route(self) -> Route:
        return Route(self.path, self.endpoint, methods=[self.method])


def path_param(name: str, shape: Any, description: str, example: str | None = None) -> Param:
    return Param(name, shape, description, "path", example)


def errors(descriptions: Mapping[int, str]) -> dict[int, Answer]:
    return {status: Answer(text) for status, text in descriptions.items()}


def _is_type(value: Any) -> bool:
    return value is not None and not isinstance(value, dict)


class _Components:
    """Every named type the operations use, as one `components.schemas` with `$ref`s between them."""

    def __init__(self, operations: list[Operation], raw: Mapping[str, Any]) -> None:
        shapes: dict[tuple[Any, JsonSchemaMode], Any] = {}
        for op in operations:
            for answer in op.answers.values():
                if _is_type(answer.shape):
                    shapes[(answer.shape, "serialization")] = answer.shape
            if _is_type(op.body):
                shapes[(op.body, "validation")] = op.body
            for param in op.params:
                shapes[(param.shape, "validation")] = param.shape
        inputs = [(key, key[1], TypeAdapter(shape)) for key, shape in shapes.items()]
        self.refs, definitions = TypeAdapter.json_schemas(inputs, ref_template=REF_TEMPLATE, by_alias=True)
        self.schemas: dict[str, Any] = {**definitions.get("$defs", {}), **raw}

    def schema(self, shape: Any, mode: JsonSchemaMode) -> dict[str, Any]:
        return shape if isinstance(shape, dict) else self.refs[((shape, mode), mode)]

    def body_schema(self, op: Operation) -> dict[str, Any]:
        """The request body's schema; with `body_id_in_path`, the type's own without that field required."""
        schema = self.schema(op.body, "validation")
        if op.body_id_in_path is None:
            return schema
        named = {**self.schemas[schema["$ref"].rsplit("/", 1)[1]]}
        named["required"] = [name for name in named.pop("required", []) if name != op.body_id_in_path]
        if not named["required"]:
            del named["required"]
        named["description"] = f"`{op.body_id_in_path}` defaults to the URL's; if given, it must be the same"
        return named


def _parameter(param: Param, components: _Components) -> dict[str, Any]:
    schema = {k: v for k, v in components.schema(param.shape, "validation").items() if k != "title"}
    data = {
        "name": param.name,
        "in": param.location,
        "required": param.location == "path",
        "description": param.description,
        "schema": schema,
    }
    if param.example is not None:
        data["example"] = param.example
    return data


def _response(answer: Answer, components: _Components) -> dict[str, Any]:
    if answer.media is not None:
        content = {
            media: {"schema": components.schema(schema, "serialization")} for media, schema in answer.media.items()
        }
    else:
        content = {"application/json": {"schema": components.schema(answer.shape, "serialization")}}
    return {"description": answer.description, "content": content}


def _operation(op: Operation, components: _Components) -> dict[str, Any]:
    answers = dict(op.answers)
    if not op.public:
        answers.update(errors({status: AUTH_ERRORS[status] for status in op.auth_errors}))
    answers.update(errors(UNAVAILABLE))
    data: dict[str, Any] = {
        "summary": op.summary,
        "responses": {str(status): _response(answer, components) for status, answer in sorted(answers.items())},
    }
    if op.public:
        data["security"] = []
    if op.params:
        data["parameters"] = [_parameter(param, components) for param in op.params]
    if op.body is not None:
        data["requestBody"] = {
            "required": op.body_required,
            "content": {"application/json": {"schema": components.body_schema(op)}},
        }
    return data


def build_document(operations: list[Operation], raw_schemas: Mapping[str, Any]) -> dict[str, Any]:
    """The document for `operations`; `raw_schemas` are named schemas not made from a type (the event)."""
    components = _Components(operations, raw_schemas)
    paths: dict[str, dict[str, Any]] = {}
    for op in operations:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op, components)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Usage Metering", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": components.schemas,
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearerAuth": []}],  # none needed while no key exists; /healthz and /readyz stay open
    }
