"""Property-based fuzzing of the live HTTP API against its own OpenAPI document.

A real metering node (`ServerProcess`, demo data, authentication off: no keys)
serves `/openapi.json`; schemathesis loads the document from that URL and, for
every documented operation, sends generated requests (valid and invalid ones)
and checks each answer:

- `not_a_server_error`: never a 5xx;
- `status_code_conformance`: the status is one the document lists;
- `content_type_conformance`: the Content-Type is one the document lists;
- `response_schema_conformance`: the body matches the documented schema.

The configuration routes (plans, tenants, metrics, keys: validated by the very
types their request schemas come from) are checked both ways as well:

- `negative_data_rejection`: a body the document forbids is refused (4xx);
- `config_input_accepted`: a body the document allows is saved, or refused
  only for a rule JSON Schema cannot state and the document gives in words
  (`RULES_IN_WORDS`).

So the document has to be honest: every status the API really answers, the
real shapes of its bodies, and what it accepts. Bounded for CI (2 cores, < ~90 s): a fixed number of
examples per operation, no Hypothesis deadline, derandomized (the same cases
on every run).
"""

from __future__ import annotations

import os
from typing import Any, Iterator

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from support.nodes import ServerProcess, serving

pytestmark = pytest.mark.integration

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
# Per operation, in the fuzzing phase (schemathesis adds its examples and coverage cases).
# FUZZ_MAX_EXAMPLES=500 for a deeper local run; CI keeps the default.
MAX_EXAMPLES = int(os.environ.get("FUZZ_MAX_EXAMPLES", "50"))
REQUEST_TIMEOUT = 30  # seconds per request; DuckDB on a busy CI box can be slow, never this slow

FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,  # a real server over a socket: timing is not the property under test
    derandomize=True,  # the same cases on every run: a CI failure reproduces locally
    database=None,  # derandomized runs need no example database
    suppress_health_check=list(HealthCheck),  # slow data generation / filtering on a 2-core box is fine
    print_blob=False,
)


# The configuration routes: their bodies are read by the types the document shows.
CONFIG_ROUTES = {
    ("POST", "/api/plans"),
    ("PUT", "/api/plans/{plan_id}"),
    ("POST", "/api/tenants"),
    ("PUT", "/api/tenants/{tenant_id}"),
    ("POST", "/api/metrics"),
    ("PUT", "/api/metrics/{name}"),
    ("POST", "/api/keys"),
}

# (code, message or None for any) of the 422s a body the schema allows may still get: rules across
# values that JSON Schema cannot state, each given in words in the document (a description).
RULES_IN_WORDS = {
    ("id_mismatch", None),  # PUT: the body's id, if given, is the URL's
    ("duplicate_metric", None),  # a plan lists each metric once (uniqueItems compares whole objects)
    ("invalid_tiers", None),  # tier bounds increase; only the last tier is unbounded
    ("invalid_amount", "at most 9 fractional digits"),  # of a JSON number (multipleOf fails on binary floats)
    ("invalid_thresholds", "each threshold may appear once"),  # by value: 80 and "80" are one
    ("invalid_url", None),  # webhook_url: an absolute http(s) URL with a host
    ("invalid_name", None),  # a key name: printable, not only blanks
}


def is_config_route(context: Any) -> bool:
    return (context.operation.method.upper(), context.operation.path) in CONFIG_ROUTES


@schemathesis.check
def config_input_accepted(ctx: Any, response: Any, case: schemathesis.Case) -> bool | None:
    """A generated body the document allows is not refused, but for one of RULES_IN_WORDS."""
    if case.meta is None or not case.meta.generation.mode.is_positive or response.status_code != 422:
        return None
    error = response.json()["error"]
    if (error["code"], None) in RULES_IN_WORDS or (error["code"], error["message"]) in RULES_IN_WORDS:
        return None
    raise AssertionError(f"the document allows this body, the API refused it: {error}")


CONFIG_CHECKS = [*CHECKS, negative_data_rejection, config_input_accepted]


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The node under test for every operation but key creation; auth stays off all along."""
    process = ServerProcess(tmp_path_factory.mktemp("fuzz-server") / "metering.duckdb", demo=True)
    try:
        process.start()
        yield process
        process.stop()  # SIGTERM after the fuzzing must still exit cleanly
    finally:
        process.close()


@pytest.fixture(scope="module")
def keys_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A node of its own for `POST /api/keys`: the first key created turns authentication on."""
    yield from serving(ServerProcess(tmp_path_factory.mktemp("keys-server") / "metering.duckdb", demo=True))


def load_schema(server: ServerProcess) -> schemathesis.BaseSchema:
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json", timeout=REQUEST_TIMEOUT)
    # No generated Authorization headers: a node needs no key until one exists (the document says so in
    # words), so leaving one out is not invalid input `negative_data_rejection` should see refused.
    schema.config.generation.update(with_security_parameters=False)
    return schema


@pytest.fixture(scope="module")
def api_schema(fuzz_server: ServerProcess) -> schemathesis.BaseSchema:
    return load_schema(fuzz_server)


@pytest.fixture(scope="module")
def keys_schema(keys_server: ServerProcess) -> schemathesis.BaseSchema:
    return load_schema(keys_server)


# `POST /api/keys` is fuzzed on its own node below: once a key exists every
# request needs one, so on the shared node the rest of the run would only see 401s
# (on its own node, the cases after the first key created get the documented 401).
# schemathesis leaves out `GET /openapi.json` itself when it loads the document from
# that URL; tests/test_http_e2e.py::test_openapi_document covers it.
operations = schemathesis.pytest.from_fixture("api_schema").exclude(func=is_config_route)
config_operations = (
    schemathesis.pytest.from_fixture("api_schema")
    .include(func=is_config_route)
    .exclude(method="POST", path="/api/keys")
)
key_creation = schemathesis.pytest.from_fixture("keys_schema").include(method="POST", path="/api/keys")


@FUZZ_SETTINGS
@operations.parametrize()
def test_every_operation_conforms(case: schemathesis.Case) -> None:
    case.call_and_validate(checks=CHECKS, timeout=REQUEST_TIMEOUT)


@FUZZ_SETTINGS
@config_operations.parametrize()
def test_config_operation_conforms(case: schemathesis.Case) -> None:
    case.call_and_validate(checks=CONFIG_CHECKS, timeout=REQUEST_TIMEOUT)


@FUZZ_SETTINGS
@key_creation.parametrize()
def test_key_creation_conforms(case: schemathesis.Case) -> None:
    case.call_and_validate(checks=CONFIG_CHECKS, timeout=REQUEST_TIMEOUT)


# -- inputs random generation does not reach ---------------------------------------------
#
# Each of these answered 503 (or hung the node) before its fix, but for the
# Arabic-Indic digits, which int() took as 10 (now 422 like "²"). Hypothesis never
# generates them (no unpaired surrogates in its text, no JSON numbers with huge
# exponents, no 100k-deep nesting; Unicode digits, date.max and broken IPv6 URLs
# are needles in a haystack), so they are sent explicitly and checked the same way.

_ACME = {"tenant_id": "tenant_acme"}
_USAGE = {"tenant_id": "tenant_acme", "metric": "api_calls"}
_EVENT = {"tenant_id": "tenant_acme", "metric": "api_calls", "quantity": 1}

EDGE_CASES = {
    # str.isdigit() is true for "²" (int() refuses it: 503) and for "١٠" (int() reads 10)
    "version-superscript-digit": ("GET", "/api/plans/{plan_id}", {"path_parameters": {"plan_id": "pro"}, "query": {"version": "\u00b2"}}),
    "limit-superscript-digit": ("GET", "/api/dead-letters", {"query": {"limit": "\u00b2"}}),
    "limit-arabic-indic-digits": ("GET", "/api/top-users/{tenant_id}/{metric}", {"path_parameters": _USAGE, "query": {"limit": "\u0661\u0660"}}),
    # the day after 9999-12-31 (the exclusive end of the range) is not a date
    "usage-to-date-max": ("GET", "/api/usage/{tenant_id}/{metric}", {"path_parameters": _USAGE, "query": {"from": "2024-01-01", "to": "9999-12-31"}}),
    "tenant-usage-to-date-max": ("GET", "/api/usage/{tenant_id}", {"path_parameters": _ACME, "query": {"from": "9999-12-31", "to": "9999-12-31"}}),
    # urlsplit raises ValueError on an unclosed IPv6 bracket
    "webhook-url-bad-ipv6": ("POST", "/api/tenants", {"body": {"tenant_id": "fuzz_ipv6", "webhook_url": "http://[::1"}}),
    # JSON escapes of unpaired surrogates: valid JSON syntax, not Unicode text (no UTF-8 for DuckDB)
    "plan-name-lone-surrogate": ("PUT", "/api/plans/{plan_id}", {"path_parameters": {"plan_id": "fuzz_plan"}, "body": {"name": "\ud800"}}),
    "tenant-name-lone-surrogate": ("POST", "/api/tenants", {"body": {"tenant_id": "fuzz_surrogate", "name": "\udc00"}}),
    "metric-description-lone-surrogate": ("PUT", "/api/metrics/{name}", {"path_parameters": {"name": "fuzz_metric"}, "body": {"description": "\ud800x"}}),
    "event-property-lone-surrogate": ("POST", "/api/events", {"body": {**_EVENT, "properties": {"\ud800": 1}}}),
    "batch-event-lone-surrogate": ("POST", "/api/events/batch", {"body": {"events": [{**_EVENT, "properties": {"a": "\udfff"}}]}}),
}

# Raw JSON text a Python value cannot express: sent as is, the answer validated by schemathesis.
RAW_EDGE_CASES = {
    # int(Decimal("1e999999999")) builds a billion-digit integer: the node stopped answering
    "event-timestamp-huge-exponent": ("/api/events", '{"tenant_id": "tenant_acme", "metric": "api_calls", "quantity": 1, "timestamp": 1e999999999}'),
    "event-property-huge-exponent": ("/api/events", '{"tenant_id": "tenant_acme", "metric": "api_calls", "quantity": 1, "properties": {"n": 1e999999999}}'),
    # json.loads raises RecursionError (not ValueError) on deep nesting
    "deeply-nested-event": ("/api/events", "[" * 20_000 + "]" * 20_000),  # under the 64 KiB event limit
    "deeply-nested-batch": ("/api/events/batch", '{"events": ' + "[" * 100_000 + "]" * 100_000 + "}"),
}


@pytest.mark.parametrize("name", sorted(EDGE_CASES))
def test_edge_case_conforms(api_schema: schemathesis.BaseSchema, name: str) -> None:
    method, path, parts = EDGE_CASES[name]
    case = api_schema[path][method].Case(**parts)
    response = case.call_and_validate(checks=CHECKS, timeout=REQUEST_TIMEOUT)
    assert 400 <= response.status_code < 500, response.text  # each is invalid input


@pytest.mark.parametrize("name", sorted(RAW_EDGE_CASES))
def test_raw_edge_case_conforms(api_schema: schemathesis.BaseSchema, fuzz_server: ServerProcess, name: str) -> None:
    path, raw = RAW_EDGE_CASES[name]
    response = requests.post(
        f"{fuzz_server.url}{path}", data=raw.encode(), headers={"Content-Type": "application/json"}, timeout=REQUEST_TIMEOUT
    )
    api_schema[path]["POST"].Case(body={}).validate_response(response, checks=CHECKS)
    assert response.status_code in (400, 422), response.text


@pytest.fixture(autouse=True)
def _nodeid_shim(request: pytest.FixtureRequest) -> None:
    """schemathesis 4.32's `from_fixture` reads `item._nodeid`, gone in pytest 9.2 (now `item.nodeid`)."""
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid
