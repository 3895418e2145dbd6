"""One entitlement decision: ingest's `block`, `GET /api/quota` and billing's overage never disagree.

The pure part is checked against a brute-force reference; then both real paths (the library's quota
status and an event through the ingestor) are fed the same states and must give the same answer.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from usage_metering import Metering
from usage_metering.schemas import AggregateState, Aggregation, EventStatus, OveragePolicy
from usage_metering.schemas.entitlement import SMALLEST_QUANTITY, Entitlement

pytestmark = pytest.mark.unit

NOW = datetime.now(timezone.utc).replace(microsecond=0)
quantities = st.decimals(min_value=0, max_value=10_000, places=3, allow_nan=False, allow_infinity=False)
limits = st.decimals(min_value=0, max_value=10_000, places=2, allow_nan=False, allow_infinity=False)
policies = st.sampled_from(list(OveragePolicy))
_tenants = itertools.count()


def reference_value_after(aggregation: Aggregation, prior: list[tuple[Decimal, str]], quantity: Decimal) -> Decimal:
    """The aggregate over the prior events plus one more, at a later time, from a new user: by definition."""
    values = [q for q, _user in prior] + [quantity]
    if aggregation is Aggregation.SUM:
        return sum(values, Decimal(0))
    if aggregation is Aggregation.COUNT:
        return Decimal(len(values))
    if aggregation is Aggregation.MAX:
        return max(values)
    if aggregation is Aggregation.UNIQUE_COUNT:
        return Decimal(len({user for _q, user in prior}) + 1)
    return quantity  # LATEST: the new event is the latest


def state_of(prior: list[tuple[Decimal, str]]) -> AggregateState:
    state = AggregateState()
    for index, (quantity, user) in enumerate(prior):
        state.add(quantity, NOW - timedelta(minutes=len(prior) - index), user)
    return state


@given(
    aggregation=st.sampled_from(list(Aggregation)),
    prior=st.lists(st.tuples(quantities, st.sampled_from(["a", "b", "c"])), max_size=6),
    quantity=quantities,
    limit=st.none() | limits,
    policy=policies,
)
def test_the_decision_matches_a_brute_force_reference(
    aggregation: Aggregation,
    prior: list[tuple[Decimal, str]],
    quantity: Decimal,
    limit: Decimal | None,
    policy: OveragePolicy,
) -> None:
    entitlement = Entitlement(limit, policy)
    after = reference_value_after(aggregation, prior, quantity)
    refuses = policy is OveragePolicy.BLOCK and limit is not None and after > limit
    assert entitlement.admits_more(state_of(prior), aggregation, NOW, quantity) is not refuses
    used = state_of(prior).value(aggregation)
    if limit is None:
        assert entitlement.remaining(used) is None and entitlement.overage(used) == 0
    else:
        assert entitlement.remaining(used) == max(Decimal(0), limit - used)
        assert entitlement.overage(used) == max(Decimal(0), used - limit)
        assert entitlement.remaining(used) + used - entitlement.overage(used) == limit


def test_only_block_with_a_limit_refuses() -> None:
    state = state_of([(Decimal(10), "a")])
    assert not Entitlement(Decimal(5), OveragePolicy.BLOCK).admits_more(state, Aggregation.SUM, NOW)
    for entitlement in (Entitlement(Decimal(5), OveragePolicy.CHARGE), Entitlement(None, OveragePolicy.BLOCK)):
        assert entitlement.admits_more(state, Aggregation.SUM, NOW, Decimal(1000))
    assert Entitlement().admits_more(state, Aggregation.SUM, NOW)  # not in the plan: unlimited


@pytest.fixture(scope="module")
def metering(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Metering]:
    with Metering.open(tmp_path_factory.mktemp("entitlement") / "metering.duckdb") as library:
        for aggregation in Aggregation:
            library.define_metric({"name": f"m_{aggregation.value.lower()}", "aggregation": aggregation.value})
        yield library


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    aggregation=st.sampled_from(list(Aggregation)),
    prior=st.lists(st.tuples(quantities, st.sampled_from(["a", "b", "c"])), max_size=4),
    limit=limits,
)
def test_quota_status_and_ingest_decide_alike(
    metering: Metering, aggregation: Aggregation, prior: list[tuple[Decimal, str]], limit: Decimal
) -> None:
    """Same state, both paths: `allowed` says whether the least event from a new user would be recorded,
    and `remaining` whether an event of exactly that much more is (SUM)."""
    tenant, metric = f"ent_{next(_tenants)}", f"m_{aggregation.value.lower()}"
    plan = {
        "plan_id": f"plan_{tenant}",
        "name": "block",
        "metrics": [{"metric": metric, "included": format(limit, "f"), "policy": "block"}],
    }
    metering.save_plan(plan)
    metering.save_tenant({"tenant_id": tenant, "name": tenant, "plan_id": plan["plan_id"]})
    for index, (quantity, user) in enumerate(prior):
        metering.record(
            {
                "tenant_id": tenant,
                "metric": metric,
                "quantity": format(quantity, "f"),
                "user_id": user,
                "event_id": f"prior-{index}",
                "timestamp": (NOW - timedelta(minutes=10 - index)).isoformat(),
            }
        )
    status = metering.quota(tenant, metric)
    probe = metering.record(
        {
            "tenant_id": tenant,
            "metric": metric,
            "quantity": format(SMALLEST_QUANTITY, "f"),
            "user_id": "new-user",
            "event_id": "probe",
        }
    )
    assert (probe.status == EventStatus.RECORDED) is status.allowed, (status, probe)
    if aggregation is Aggregation.SUM and status.allowed:
        after_probe = metering.quota(tenant, metric)
        assert after_probe.remaining is not None
        exact = metering.record(
            {
                "tenant_id": tenant,
                "metric": metric,
                "quantity": format(after_probe.remaining, "f"),
                "event_id": "exactly-the-rest",
            }
        )
        assert exact.status == EventStatus.RECORDED
        assert metering.quota(tenant, metric).allowed is False
        over = metering.record(
            {"tenant_id": tenant, "metric": metric, "quantity": format(SMALLEST_QUANTITY, "f"), "event_id": "one-too-many"}
        )
        assert over.status == EventStatus.BLOCKED


def test_billing_overage_is_the_entitlements(metering: Metering, tmp_path: Path) -> None:
    plan = {
        "plan_id": "ent_charge",
        "name": "charge",
        "metrics": [{"metric": "m_sum", "included": "10.5", "policy": "charge", "unit_price": "2"}],
    }
    metering.save_plan(plan)
    metering.save_tenant({"tenant_id": "ent_billed", "name": "billed", "plan_id": "ent_charge"})
    metering.record({"tenant_id": "ent_billed", "metric": "m_sum", "quantity": "12.25"})
    line = metering.billing_report("ent_billed")[0].line_items[0]
    status = metering.quota("ent_billed", "m_sum")
    entitlement = Entitlement(Decimal("10.5"), OveragePolicy.CHARGE)
    assert line.overage_quantity == entitlement.overage(status.used) == Decimal("1.75")
    assert status.remaining == entitlement.remaining(status.used) == 0
    assert status.allowed  # charge accepts past the limit
