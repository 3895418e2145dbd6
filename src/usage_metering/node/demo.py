"""Demo plans, tenants and sample events for the quick start; safe to run twice.

Sample events carry fixed event ids, so a second run only finds duplicates.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from usage_metering.metering import Metering
from usage_metering.schemas import batch_summary, format_timestamp, period_containing

DEMO_METRICS: list[dict[str, Any]] = [
    {"name": "api_calls", "aggregation": "SUM", "unit": "calls", "description": "API requests served"},
    {"name": "storage_gb", "aggregation": "MAX", "unit": "GB", "description": "Peak storage used"},
    {"name": "active_users", "aggregation": "UNIQUE_COUNT", "unit": "users", "description": "Distinct users"},
    {"name": "compute_minutes", "aggregation": "SUM", "unit": "minutes", "description": "Compute time"},
]

DEMO_PLANS: list[dict[str, Any]] = [
    {
        "plan_id": "free",
        "name": "Free",
        "currency": "USD",
        "base_fee": "0",
        "metrics": [
            {"metric": "api_calls", "included": 1000, "policy": "block"},
            {"metric": "storage_gb", "included": 1, "policy": "block"},
            {"metric": "active_users", "included": 5, "policy": "notify"},
        ],
    },
    {
        "plan_id": "pro",
        "name": "Pro",
        "currency": "USD",
        "base_fee": "49.00",
        "metrics": [
            {"metric": "api_calls", "included": 100000, "policy": "charge", "unit_price": "0.001"},
            {"metric": "storage_gb", "included": 100, "policy": "charge", "unit_price": "0.10"},
            {"metric": "active_users", "included": 50, "policy": "notify"},
            {"metric": "compute_minutes", "included": 1000, "policy": "charge", "unit_price": "0.02"},
        ],
    },
    {
        "plan_id": "enterprise",
        "name": "Enterprise",
        "currency": "USD",
        "base_fee": "499.00",
        "metrics": [
            {
                "metric": "api_calls",
                "included": 1000000,
                "policy": "charge",
                "tiers": [
                    {"up_to": 1000000, "unit_price": "0.0008"},
                    {"up_to": 10000000, "unit_price": "0.0005"},
                    {"up_to": None, "unit_price": "0.0002"},
                ],
            },
            {"metric": "storage_gb", "included": None, "policy": "charge"},
            {"metric": "compute_minutes", "included": 20000, "policy": "charge", "unit_price": "0.015"},
        ],
    },
]

DEMO_TENANTS: list[dict[str, Any]] = [
    {"tenant_id": "tenant_acme", "name": "Acme Corp", "plan_id": "pro", "billing_anchor_day": 1},
    {"tenant_id": "tenant_globex", "name": "Globex", "plan_id": "free", "billing_anchor_day": 1},
    {"tenant_id": "tenant_initech", "name": "Initech", "plan_id": "enterprise", "billing_anchor_day": 15},
]


def demo_events(metering: Metering) -> list[dict[str, Any]]:
    """Sample usage spread over the current period (up to now), with stable event ids."""
    events: list[dict[str, Any]] = []
    now = metering.clock()
    for tenant in DEMO_TENANTS:
        start = period_containing(now, tenant["billing_anchor_day"]).start
        span = max(now - start, timedelta(minutes=1))
        tag = f"{tenant['tenant_id']}-{start:%Y%m%d}"
        for i in range(60):
            moment = start + span * (i / 60)
            events.append(
                {
                    "tenant_id": tenant["tenant_id"],
                    "metric": "api_calls",
                    "quantity": 5 + (i * 7) % 11,
                    "user_id": f"user_{i % 4}",
                    "event_id": f"demo-{tag}-api-{i}",
                    "timestamp": format_timestamp(moment),
                }
            )
        events.append(
            {
                "tenant_id": tenant["tenant_id"],
                "metric": "storage_gb",
                "quantity": "0.75",
                "event_id": f"demo-{tag}-storage",
                "timestamp": format_timestamp(start + span / 2),
            }
        )
    return events


def init_demo(metering: Metering) -> dict[str, int]:
    """Create demo metrics, plans and tenants, then record the sample events; returns their `batch_summary`."""
    for metric in DEMO_METRICS:
        metering.define_metric(metric)
    for plan in DEMO_PLANS:
        metering.save_plan(plan)
    for tenant in DEMO_TENANTS:
        metering.save_tenant(tenant)
    return batch_summary(result.status for result in metering.record_events(demo_events(metering)))
