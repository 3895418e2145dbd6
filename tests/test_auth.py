"""Access control end to end: API keys against a real server process and a real DuckDB file.

Keys are created with the library / CLI on the file BEFORE the server starts
(the running server holds the file). Every denied case must answer 401/403 with
a JSON error and record nothing; the admin key checks the totals afterwards.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import duckdb
import pytest

from support.nodes import SRC_DIR, InProcessNode, Node, ServerProcess, request, serving
from usage_metering import Metering
from usage_metering.access import Principal, hash_token, key_id_of, new_token
from usage_metering.api.auth import bearer_token
from usage_metering.client import MeteringHttpError
from usage_metering.schemas import EventStatus

TENANT_A = "auth_tenant_a"
TENANT_B = "auth_tenant_b"
METRIC = "auth_probe"
SEEDED = {TENANT_A: 5, TENANT_B: 7}  # what the admin records for each tenant at the start

Response = tuple[int, dict[str, str], Any]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def event(tenant: str, quantity: int = 1, **extra: Any) -> dict[str, Any]:
    return {"tenant_id": tenant, "metric": METRIC, "quantity": quantity, **extra}


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(SRC_DIR)}
    return subprocess.run(
        [sys.executable, "-m", "usage_metering", *args], capture_output=True, text=True, env=env, timeout=60
    )


def assert_error(response: Response, status: int, code: str | None = None) -> dict[str, Any]:
    got, headers, body = response
    assert got == status, f"expected {status}, got {got}: {body!r}"
    assert headers.get("content-type", "").startswith("application/json")
    error = body["error"]
    assert set(error) >= {"code", "message", "field"} and error["message"]
    if code is not None:
        assert error["code"] == code, error
    if status == 401:
        assert headers.get("www-authenticate", "").startswith("Bearer"), headers
    return error


# -- a server with keys -------------------------------------------------------------------


class Keyed:
    """A node (in-process, or a real server process) plus the tokens made for it before it started."""

    def __init__(self, node: Node, tokens: dict[str, str], key_ids: dict[str, str]) -> None:
        self.node = node
        self.tokens = tokens
        self.key_ids = key_ids

    def call(self, method: str, path: str, key: str | None = None, **kwargs: Any) -> Response:
        headers = bearer(self.tokens[key]) if key else {}
        return self.node.request(method, path, headers=headers, **kwargs)

    def admin(self, method: str, path: str, **kwargs: Any) -> Any:
        status, _headers, body = self.call(method, path, "admin", **kwargs)
        assert status in (200, 201), f"{method} {path}: {status} {body!r}"
        return body

    def usage_value(self, tenant: str) -> str:
        return self.admin("GET", f"/api/usage/{tenant}/{METRIC}")["value"]

    def seed(self) -> Keyed:
        for tenant in (TENANT_A, TENANT_B):
            self.admin("PUT", f"/api/tenants/{tenant}", json_body={"name": tenant})
            self.admin("POST", "/api/events", json_body=event(tenant, SEEDED[tenant], user_id="seed"))
        return self


def make_keys(db_path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """(tokens, key ids) by label: three made with the library, one with the CLI."""
    tokens: dict[str, str] = {}
    key_ids: dict[str, str] = {}
    with Metering.open(db_path) as metering:
        for label, scope, tenant in (
            ("admin", "admin", None),
            ("a", "tenant", TENANT_A),
            ("b", "tenant", TENANT_B),
            ("a_revocable", "tenant", TENANT_A),
        ):
            key, tokens[label] = metering.create_api_key(f"test {label}", scope, tenant)
            key_ids[label] = key.key_id
    made = cli("--db", str(db_path), "--format", "json", "keys", "create", "cli admin", "--scope", "admin")
    assert made.returncode == 0, made.stderr
    assert "shown only once" in made.stderr
    tokens["cli_admin"] = json.loads(made.stdout)["token"]
    key_ids["cli_admin"] = json.loads(made.stdout)["key_id"]
    return tokens, key_ids


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keyed]:
    """The auth matrices: the app in-process."""
    db_path = tmp_path_factory.mktemp("auth") / "metering.duckdb"
    tokens, key_ids = make_keys(db_path)
    with InProcessNode(db_path, demo=False) as node:
        yield Keyed(node, tokens, key_ids).seed()


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keyed]:
    """The same keys on a real server process: for the CLI and MeteringClient over a socket."""
    db_path = tmp_path_factory.mktemp("auth-server") / "metering.duckdb"
    tokens, key_ids = make_keys(db_path)
    for server in serving(ServerProcess(db_path, demo=False)):
        yield Keyed(server, tokens, key_ids).seed()


@pytest.mark.integration
def test_the_server_logs_that_authentication_is_on(keyed_server: Keyed) -> None:
    assert isinstance(keyed_server.node, ServerProcess)
    assert "authentication is on" in keyed_server.node.output()


@pytest.mark.integration
def test_probes_stay_open(keyed: Keyed) -> None:
    for path in ("/healthz", "/readyz"):
        status, _headers, _body = keyed.call("GET", path)
        assert status == 200, path


@pytest.mark.integration
@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "missing_key"),
        ({"Authorization": "Bearer um_0123456789abcdef_not-a-real-secret"}, "invalid_key"),
        ({"Authorization": "Bearer hello"}, "invalid_key"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "malformed_authorization"),
        ({"Authorization": "Bearer"}, "malformed_authorization"),
        ({"Authorization": "Bearer two tokens"}, "malformed_authorization"),
    ],
    ids=["no-key", "unknown-key", "garbage-key", "basic-scheme", "empty-bearer", "two-tokens"],
)
def test_requests_without_a_valid_key_get_401_and_record_nothing(
    keyed: Keyed, headers: dict[str, str], code: str
) -> None:
    srv = keyed.node
    assert_error(srv.request("POST", "/api/events", json_body=event(TENANT_A, 100), headers=headers), 401, code)
    batch = {"events": [event(TENANT_A, 100), event(TENANT_B, 100)]}
    assert_error(srv.request("POST", "/api/events/batch", json_body=batch, headers=headers), 401, code)
    for path in (f"/api/usage/{TENANT_A}/{METRIC}", f"/api/quota/{TENANT_A}/{METRIC}", "/api/plans", "/api/keys",
                 "/openapi.json", "/metrics"):
        assert_error(srv.request("GET", path, headers=headers), 401, code)
    assert_error(srv.request("PUT", "/api/plans/auth_evil", json_body={"name": "x"}, headers=headers), 401, code)
    assert keyed.usage_value(TENANT_A) == str(SEEDED[TENANT_A])
    assert keyed.usage_value(TENANT_B) == str(SEEDED[TENANT_B])


@pytest.mark.integration
def test_a_real_key_id_with_a_wrong_secret_is_refused(keyed: Keyed) -> None:
    forged = f"um_{keyed.key_ids['a']}_{'x' * 43}"
    assert_error(keyed.node.request("POST", "/api/events", json_body=event(TENANT_A, 100), headers=bearer(forged)),
                 401, "invalid_key")
    assert keyed.usage_value(TENANT_A) == str(SEEDED[TENANT_A])


@pytest.mark.integration
def test_tenant_key_cannot_touch_another_tenant(keyed: Keyed) -> None:
    reads = [
        ("GET", f"/api/usage/{TENANT_B}", None),
        ("GET", f"/api/usage/{TENANT_B}/{METRIC}", None),
        ("GET", f"/api/quota/{TENANT_B}/{METRIC}", None),
        ("GET", f"/api/top-users/{TENANT_B}/{METRIC}", None),
        ("POST", "/api/billing-report", {"tenant_id": TENANT_B}),
        ("POST", "/api/events", event(TENANT_B, 100)),
        ("POST", "/api/events", {"metric": METRIC, "quantity": 100}),  # no tenant is not "my tenant"
        ("POST", "/api/events/batch", {"events": [event(TENANT_A, 100), event(TENANT_B, 100)]}),
        ("POST", "/api/events/batch", [event(TENANT_A, 100, event_id="mixed-1"), event(TENANT_B, 100)]),
    ]
    for method, path, body in reads:
        error = assert_error(keyed.call(method, path, "a", json_body=body), 403, "forbidden")
        assert "tenant_id" in (error["field"] or ""), (path, error)
    # Nothing was recorded, not even tenant A's half of the mixed batches.
    assert keyed.usage_value(TENANT_A) == str(SEEDED[TENANT_A])
    assert keyed.usage_value(TENANT_B) == str(SEEDED[TENANT_B])


@pytest.mark.integration
def test_tenant_key_cannot_call_admin_routes(keyed: Keyed) -> None:
    plan = {"name": "Evil", "currency": "EUR", "base_fee": "0", "metrics": []}
    admin_only = [
        ("GET", "/api/plans", None),
        ("POST", "/api/plans", {**plan, "plan_id": "auth_evil"}),
        ("PUT", "/api/plans/auth_evil", plan),
        ("GET", "/api/tenants", None),
        ("GET", f"/api/tenants/{TENANT_A}", None),
        ("PUT", f"/api/tenants/{TENANT_A}", {"name": "renamed by tenant"}),
        ("POST", "/api/tenants", {"tenant_id": "auth_evil_tenant", "name": "x"}),
        ("GET", "/api/metrics", None),
        ("PUT", f"/api/metrics/{METRIC}", {"aggregation": "MAX"}),
        ("POST", "/api/metrics", {"name": "auth_evil_metric"}),
        ("GET", "/api/dead-letters", None),
        ("GET", "/metrics", None),
        ("GET", "/api/keys", None),
        ("POST", "/api/keys", {"name": "escalate", "scope": "admin"}),
        ("DELETE", f"/api/keys/{keyed.key_ids['b']}", None),
    ]
    for method, path, body in admin_only:
        assert_error(keyed.call(method, path, "a", json_body=body), 403, "forbidden")
    # Nothing changed: no plan, tenant or metric definition, no new key, key b still works.
    assert keyed.call("GET", "/api/plans/auth_evil", "admin")[0] == 404
    assert keyed.call("GET", "/api/tenants/auth_evil_tenant", "admin")[0] == 404
    assert keyed.admin("GET", f"/api/tenants/{TENANT_A}")["name"] == TENANT_A
    assert all(m["name"] not in (METRIC, "auth_evil_metric") for m in keyed.admin("GET", "/api/metrics")["metrics"])
    assert len(keyed.admin("GET", "/api/keys")["keys"]) == len(keyed.key_ids)
    assert keyed.call("GET", f"/api/quota/{TENANT_B}/{METRIC}", "b")[0] == 200


@pytest.mark.integration
def test_tenant_key_works_on_its_own_tenant(keyed: Keyed) -> None:
    status, _h, body = keyed.call("POST", "/api/events", "b", json_body=event(TENANT_B, 2, user_id="bob"))
    assert (status, body["status"]) == (200, "recorded"), body
    batch = {"events": [event(TENANT_B, 1, user_id="bob"), event(TENANT_B, 1, user_id="eve")]}
    status, _h, body = keyed.call("POST", "/api/events/batch", "b", json_body=batch)
    assert (status, body["recorded"]) == (200, 2), body
    expected = SEEDED[TENANT_B] + 4
    assert keyed.call("GET", f"/api/usage/{TENANT_B}/{METRIC}", "b")[2]["value"] == str(expected)
    assert keyed.call("GET", f"/api/quota/{TENANT_B}/{METRIC}", "b")[2]["used"] == str(expected)
    metrics = keyed.call("GET", f"/api/usage/{TENANT_B}", "b")[2]["metrics"]
    assert [m["metric"] for m in metrics] == [METRIC]
    users = keyed.call("GET", f"/api/top-users/{TENANT_B}/{METRIC}", "b")[2]["users"]
    assert users[0]["user_id"] == "seed" and {u["user_id"] for u in users} == {"seed", "bob", "eve"}
    # A billing report without a tenant is scoped to the key's tenant, not every tenant.
    invoices = keyed.call("POST", "/api/billing-report", "b", json_body={})[2]["invoices"]
    assert [i["tenant_id"] for i in invoices] == [TENANT_B]
    invoices = keyed.call("POST", "/api/billing-report", "b", json_body={"tenant_id": TENANT_B})[2]["invoices"]
    assert [i["tenant_id"] for i in invoices] == [TENANT_B]
    assert keyed.call("GET", "/openapi.json", "b")[0] == 200
    # An unknown route is still a plain 404 for a tenant key.
    assert_error(keyed.call("GET", "/api/nowhere", "b"), 404)


@pytest.mark.integration
def test_admin_key_can_do_everything(keyed: Keyed) -> None:
    plan = {"name": "Auth plan", "currency": "EUR", "base_fee": "1", "metrics": []}
    keyed.admin("PUT", "/api/plans/auth_plan", json_body=plan)
    keyed.admin("PUT", "/api/metrics/auth_other", json_body={"aggregation": "SUM"})
    keyed.admin("PUT", "/api/tenants/auth_tenant_c", json_body={"name": "C", "plan_id": "auth_plan"})
    for path in ("/api/plans", "/api/tenants", "/api/metrics", "/api/dead-letters", "/api/keys", "/metrics",
                 f"/api/usage/{TENANT_A}", f"/api/top-users/{TENANT_B}/{METRIC}"):
        assert keyed.call("GET", path, "admin")[0] == 200, path
    invoices = keyed.admin("POST", "/api/billing-report", json_body={})["invoices"]
    assert {TENANT_A, TENANT_B, "auth_tenant_c"} <= {i["tenant_id"] for i in invoices}
    batch = {"events": [event(TENANT_A, 1, event_id="admin-1"), event("auth_tenant_c", 1, event_id="admin-2")]}
    assert keyed.admin("POST", "/api/events/batch", json_body=batch)["recorded"] == 2
    # The key made with the CLI works too.
    assert keyed.call("GET", "/api/keys", "cli_admin")[0] == 200


@pytest.mark.integration
def test_cli_over_http_with_keys(keyed_server: Keyed) -> None:
    url = keyed_server.node.url
    listed = cli("--url", url, "--api-key", keyed_server.tokens["cli_admin"], "--format", "json", "keys", "list")
    assert listed.returncode == 0, listed.stderr
    assert {k["key_id"] for k in json.loads(listed.stdout)} == set(keyed_server.key_ids.values())
    assert all("token" not in k and "key_hash" not in k for k in json.loads(listed.stdout))
    refused = cli("--url", url, "--api-key", keyed_server.tokens["a"], "keys", "list")
    assert refused.returncode == 1 and "admin key" in refused.stderr, refused.stderr
    anonymous = cli("--url", url, "usage", TENANT_A, METRIC)
    assert anonymous.returncode == 1 and "API key is required" in anonymous.stderr, anonymous.stderr
    own = cli("--url", url, "--api-key", keyed_server.tokens["a"], "--format", "json", "usage", TENANT_A, METRIC)
    assert own.returncode == 0 and json.loads(own.stdout)["tenant_id"] == TENANT_A, own.stderr


@pytest.mark.integration
def test_metering_client_over_a_socket_with_keys(keyed_server: Keyed) -> None:
    assert isinstance(keyed_server.node, ServerProcess)
    with keyed_server.node.client(keyed_server.tokens["a"]) as own:
        result = own.record(event(TENANT_A, 2, user_id="client"))
        assert result.status == EventStatus.RECORDED and result.event_id
        assert own.usage(TENANT_A, METRIC).value == SEEDED[TENANT_A] + 2
        with pytest.raises(MeteringHttpError) as refused:
            own.usage(TENANT_B, METRIC)
        assert (refused.value.status, refused.value.code) == (403, "forbidden")
    with keyed_server.node.client() as anonymous, pytest.raises(MeteringHttpError) as missing:
        anonymous.quota(TENANT_A, METRIC)
    assert (missing.value.status, missing.value.code) == (401, "missing_key")


@pytest.mark.integration
def test_revoked_key_fails_at_once(keyed: Keyed) -> None:
    path = f"/api/quota/{TENANT_A}/{METRIC}"
    assert keyed.call("GET", path, "a_revocable")[0] == 200
    revoked = keyed.admin("DELETE", f"/api/keys/{keyed.key_ids['a_revocable']}")
    assert revoked["key_id"] == keyed.key_ids["a_revocable"] and revoked["revoked_at"]
    assert_error(keyed.call("GET", path, "a_revocable"), 401, "invalid_key")
    before = keyed.usage_value(TENANT_A)
    assert_error(keyed.call("POST", "/api/events", "a_revocable", json_body=event(TENANT_A, 100)), 401)
    assert keyed.usage_value(TENANT_A) == before
    assert keyed.call("GET", path, "a")[0] == 200  # the tenant's other key is untouched
    listed = {k["key_id"]: k for k in keyed.admin("GET", "/api/keys")["keys"]}
    assert listed[keyed.key_ids["a_revocable"]]["revoked_at"] == revoked["revoked_at"]
    assert_error(keyed.call("DELETE", "/api/keys/0000000000000000", "admin"), 404, "unknown_key")


@pytest.mark.integration
def test_keys_created_over_http_work_and_bad_ones_are_refused(keyed: Keyed) -> None:
    status, _h, created = keyed.call("POST", "/api/keys", "admin", json_body={"name": "http c", "scope": "tenant",
                                                                                "tenant_id": "auth_tenant_c"})
    assert status == 201 and created["token"].startswith(f"um_{created['key_id']}_")
    assert keyed.node.request("GET", "/api/usage/auth_tenant_c", headers=bearer(created["token"]))[0] == 200
    keyed.key_ids["http_c"] = created["key_id"]
    for body, field in (
        ({"name": "x", "scope": "root"}, "scope"),
        ({"name": "x", "scope": "tenant"}, "tenant_id"),
        ({"name": "x", "scope": "admin", "tenant_id": TENANT_A}, "tenant_id"),
        ({"name": "", "scope": "admin"}, "name"),
        ({"name": "x", "scope": "admin", "secret": "mine"}, "secret"),
    ):
        assert assert_error(keyed.call("POST", "/api/keys", "admin", json_body=body), 422)["field"] == field


BODY_ROUTES = [
    ("POST", "/api/events", 64 * 1024),
    ("POST", "/api/events/batch", 32 * 1024 * 1024),
    ("POST", "/api/billing-report", 1024 * 1024),
    ("POST", "/api/plans", 1024 * 1024),
    ("PUT", "/api/plans/auth_big", 1024 * 1024),
    ("POST", "/api/tenants", 1024 * 1024),
    ("PUT", "/api/tenants/auth_big", 1024 * 1024),
    ("POST", "/api/metrics", 1024 * 1024),
    ("PUT", "/api/metrics/auth_big", 1024 * 1024),
    ("POST", "/api/keys", 1024 * 1024),
]


@pytest.mark.integration
def test_every_route_with_a_body_has_a_size_limit(keyed: Keyed) -> None:
    for method, path, limit in BODY_ROUTES:
        body = b'{"name": "' + b"x" * limit + b'"}'
        assert_error(keyed.call(method, path, "admin", raw_body=body), 413, "body_too_large")
    too_many = {"events": [event(TENANT_A, 0)] * 10_001}
    assert_error(keyed.call("POST", "/api/events/batch", "admin", json_body=too_many), 413, "batch_too_large")


@pytest.mark.integration
def test_only_the_hash_of_a_token_is_stored(keyed_server: Keyed) -> None:
    keyed = keyed_server
    assert isinstance(keyed.node, ServerProcess)
    keyed.node.stop()
    db_path = keyed.node.db_path
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        rows = con.execute("SELECT key_id, key_hash, * FROM api_keys").fetchall()
    finally:
        con.close()
    stored = {row[0]: row[1] for row in rows}
    for label, token in keyed.tokens.items():
        assert stored[keyed.key_ids[label]] == hashlib.sha256(token.encode()).hexdigest()
        secret = token.split("_", 2)[2]
        assert not any(secret in str(cell) for row in rows for cell in row), label
        for path in db_path.parent.glob(db_path.name + "*"):  # the file, any WAL and the event key index
            for file in path.rglob("*") if path.is_dir() else [path]:
                assert secret.encode() not in file.read_bytes(), (label, file)


# -- no keys: the quick start, on loopback only ---------------------------------------------


def _listening_addresses(port: int) -> set[str]:
    """Local addresses (hex, as in /proc/net/tcp) with a socket LISTENing on `port`."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            address, port_hex = fields[1].split(":")
            if int(port_hex, 16) == port and fields[3] == "0A":  # 0A = LISTEN
                found.add(address)
    return found


@pytest.mark.integration
def test_without_keys_the_server_is_open_but_binds_to_loopback_only(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "metering.duckdb", demo=False, options={"host": "0.0.0.0"})
    try:
        server.start()
        log = server.output()
        assert "authentication is off" in log
        assert "binding to 127.0.0.1 instead of 0.0.0.0" in log
        assert _listening_addresses(server.port) == {"0100007F"}  # 127.0.0.1 only, not 0.0.0.0
        # The quick start works without a key.
        status, _h, body = request("POST", f"{server.url}/api/events", json_body=event(TENANT_A, 3))
        assert (status, body["status"]) == (200, "recorded")
        assert request("GET", f"{server.url}/api/usage/{TENANT_A}/{METRIC}")[2]["value"] == "3"
        # The first key can be made over HTTP; from then on every request needs one.
        status, _h, created = request("POST", f"{server.url}/api/keys", json_body={"name": "first", "scope": "admin"})
        assert status == 201
        assert_error(request("GET", f"{server.url}/api/usage/{TENANT_A}/{METRIC}"), 401, "missing_key")
        assert_error(request("POST", f"{server.url}/api/events", json_body=event(TENANT_A, 3)), 401, "missing_key")
        status, _h, body = request("GET", f"{server.url}/api/usage/{TENANT_A}/{METRIC}", headers=bearer(created["token"]))
        assert (status, body["value"]) == (200, "3")
        server.stop()
    finally:
        server.close()


@pytest.mark.integration
def test_with_keys_the_requested_host_is_kept(tmp_path: Path) -> None:
    db_path = tmp_path / "metering.duckdb"
    with Metering.open(db_path) as metering:
        metering.create_api_key("ops", "admin")
    server = ServerProcess(db_path, demo=False, options={"host": "0.0.0.0"})
    try:
        server.start()
        assert "authentication is on" in server.output()
        assert _listening_addresses(server.port) == {"00000000"}
        server.stop()
    finally:
        server.close()


# -- units ------------------------------------------------------------------------------------


@pytest.mark.unit
def test_tokens_carry_their_key_id_and_hash_with_sha256() -> None:
    key_id, token = new_token()
    assert token.startswith(f"um_{key_id}_") and len(token) > 50
    assert key_id_of(token) == key_id
    assert hash_token(token) == hashlib.sha256(token.encode()).hexdigest()
    for bad in ("", "um_", "um_short_secret", f"xx_{key_id}_secret", f"um_{key_id}_", f"um_{key_id}"):
        assert key_id_of(bad) is None, bad
    assert new_token()[1] != token


@pytest.mark.unit
def test_bearer_header_parsing() -> None:
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer   abc ") == "abc"
    for bad in (None, "", "Bearer", "Bearer ", "Basic abc", "Bearer a b", "abc"):
        assert bearer_token(bad) is None, bad


@pytest.mark.unit
def test_library_keys_and_authenticate(tmp_path: Path) -> None:
    with Metering.open(tmp_path / "m.duckdb") as metering:
        assert not metering.access.enabled and metering.list_api_keys() == []
        key, token = metering.create_api_key("  svc  ", "tenant", "t1")
        assert key.name == "svc" and metering.access.enabled
        assert metering.authenticate(token) == Principal(key.key_id, "svc", "tenant", "t1")
        assert metering.authenticate(token + "x") is None
        metering.revoke_api_key(key.key_id)
        assert metering.authenticate(token) is None
        assert metering.access.enabled  # revoking the last key does not switch authentication off
        again = metering.revoke_api_key(key.key_id)
        assert again.revoked_at == metering.list_api_keys()[0].revoked_at
