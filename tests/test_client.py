"""MeteringClient: the library's methods and return types over HTTP, equal to what Metering answers in-process.

The app runs in-process (Starlette's TestClient); the same client over a real
socket, with API keys, is tested in test_auth.py and through the CLI's --url.
"""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from support.nodes import InProcessNode, free_port
from usage_metering import Metering, MeteringClient, NotFoundError, ValidationError
from usage_metering.client import MeteringUnreachable
from usage_metering.schemas import EventStatus

TENANT = "tenant_acme"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessNode]:
    with InProcessNode(tmp_path_factory.mktemp("client") / "metering.duckdb", demo=True) as in_process:
        yield in_process


@pytest.fixture()
def client(node: InProcessNode) -> Iterator[MeteringClient]:
    with node.client() as http_client:
        yield http_client


READS: dict[str, Callable[[Any], Any]] = {
    "usage": lambda m: m.usage(TENANT, "api_calls"),
    "usage daily": lambda m: m.usage(TENANT, "api_calls", daily=True),
    "usage previous period": lambda m: m.usage(TENANT, "storage_gb", period="2026-11"),
    "usage_all": lambda m: m.usage_all(TENANT),
    "top_users": lambda m: m.top_users(TENANT, "api_calls", limit=3),
    "billing_report one": lambda m: m.billing_report(TENANT),
    "billing_report all": lambda m: m.billing_report(),
    "plans": lambda m: m.plans(),
    "plan": lambda m: m.plan("pro"),
    "tenants": lambda m: m.tenants(),
    "tenant": lambda m: m.tenant(TENANT),
    "metrics": lambda m: m.metrics(),
    "dead_letters": lambda m: m.dead_letters(10),
    "alerts": lambda m: m.alerts(TENANT),
}


@pytest.mark.unit
@pytest.mark.parametrize("name", list(READS))
def test_reads_equal_the_library(node: InProcessNode, client: MeteringClient, name: str) -> None:
    over_http = READS[name](client)
    assert over_http == READS[name](node.metering)
    assert type(over_http) is type(READS[name](node.metering))


@pytest.mark.unit
def test_quota_equals_the_library_but_for_its_clock(node: InProcessNode, client: MeteringClient) -> None:
    over_http, local = client.quota(TENANT, "api_calls"), node.metering.quota(TENANT, "api_calls")
    assert replace(over_http, as_of=local.as_of) == local


@pytest.mark.unit
def test_record_and_batch_give_the_library_results(node: InProcessNode, client: MeteringClient) -> None:
    before = node.metering.usage(TENANT, "api_calls").value
    first = client.record({"tenant_id": TENANT, "metric": "api_calls", "quantity": "1.25", "event_id": "client-1"})
    assert (first.index, first.event_id, first.status) == (0, "client-1", EventStatus.RECORDED)
    again = client.record({"tenant_id": TENANT, "metric": "api_calls", "quantity": "1.25", "event_id": "client-1"})
    assert again.status == EventStatus.DUPLICATE
    results = client.record_events([
        {"tenant_id": TENANT, "metric": "api_calls", "quantity": 2},
        {"tenant_id": TENANT, "metric": "api_calls"},
    ])
    assert [r.status for r in results] == [EventStatus.RECORDED, EventStatus.REJECTED]
    assert results[1].error is not None and results[1].error.field == "quantity"
    assert node.metering.usage(TENANT, "api_calls").value == before + Decimal("3.25")
    assert client.record_events([]) == []


@pytest.mark.unit
def test_a_blocked_event_is_a_result_with_the_quota_detail(client: MeteringClient) -> None:
    result = client.record({"tenant_id": "tenant_globex", "metric": "api_calls", "quantity": 10**9})
    assert result.status == EventStatus.BLOCKED and result.error is not None
    assert result.error.code == "quota_exceeded" and result.error.limit == Decimal(1000)


@pytest.mark.unit
def test_errors_are_the_library_exceptions(node: InProcessNode, client: MeteringClient) -> None:
    with pytest.raises(NotFoundError, match="unknown tenant 'nobody'"):
        client.tenant("nobody")
    with pytest.raises(NotFoundError):
        node.metering.tenant("nobody")
    with pytest.raises(ValidationError) as over_http:
        client.record({"tenant_id": TENANT, "metric": "api_calls", "quantity": -1})
    with pytest.raises(ValidationError) as local:
        node.metering.record({"tenant_id": TENANT, "metric": "api_calls", "quantity": -1})
    assert (over_http.value.field, over_http.value.code) == (local.value.field, local.value.code)
    with pytest.raises(ValidationError) as bad_limit:
        client.top_users(TENANT, "api_calls", limit=0)
    assert bad_limit.value.field == "limit"


@pytest.mark.unit
def test_configuration_round_trips(node: InProcessNode, client: MeteringClient) -> None:
    plan = client.save_plan({"plan_id": "client_plan", "name": "Client", "currency": "EUR", "base_fee": "12.50",
                             "metrics": [{"metric": "api_calls", "included": 100, "policy": "charge", "unit_price": "0.001"}]})
    assert plan == node.metering.plan("client_plan")
    tenant = client.save_tenant({"tenant_id": "client_tenant", "name": "C", "plan_id": "client_plan"})
    assert tenant == node.metering.tenant("client_tenant")
    metric = client.define_metric({"name": "client_metric", "aggregation": "MAX", "unit": "GB"})
    assert metric in node.metering.metrics()


@pytest.mark.unit
def test_api_keys_over_http(node: InProcessNode, tmp_path: Path) -> None:
    with InProcessNode(tmp_path / "keys.duckdb", demo=False) as keyed:
        with keyed.client() as anonymous:  # no key exists yet: the first one may be made openly
            admin, token = anonymous.create_api_key("first admin", "admin")
        with keyed.client(token) as client:
            assert [key.key_id for key in client.list_api_keys()] == [admin.key_id]
            revoked = client.revoke_api_key(admin.key_id)
            assert revoked.revoked_at is not None


@pytest.mark.integration
def test_an_unreachable_node_raises_unreachable() -> None:
    with MeteringClient(f"http://127.0.0.1:{free_port()}", timeout=2) as client:
        with pytest.raises(MeteringUnreachable, match="cannot reach"):
            client.plans()


@pytest.mark.unit
def test_library_and_client_offer_the_same_public_methods() -> None:
    shared = {"record", "record_events", "usage", "usage_all", "quota", "top_users", "billing_report",
              "dead_letters", "alerts", "plans", "plan", "save_plan", "tenants", "tenant", "save_tenant",
              "metrics", "define_metric", "create_api_key", "list_api_keys", "revoke_api_key"}
    assert shared <= {name for name in dir(Metering) if not name.startswith("_")}
    assert shared <= {name for name in dir(MeteringClient) if not name.startswith("_")}
