"""The lake tests' shared workload: the demo plus resends, quotas and users, and every read answer it gives.

tests/test_lake.py and tests/test_lake_s3.py record the same events on a file and on a lake and compare
`answers()` on both.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from usage_metering import Metering
from usage_metering.node.demo import DEMO_TENANTS, init_demo
from usage_metering.schemas import EventStatus

METRICS = ("api_calls", "storage_gb", "active_users", "compute_minutes")


def workload() -> list[dict[str, Any]]:
    """Beyond the demo: resends, a free tenant pushed past its blocking quota, users, a new tenant."""
    events: list[dict[str, Any]] = []
    for i in range(120):
        events.append({"tenant_id": "tenant_globex", "metric": "api_calls", "quantity": 9, "user_id": f"u{i % 7}",
                       "event_id": f"globex-{i}"})
    for i in range(40):
        events.append({"tenant_id": "tenant_acme", "metric": "active_users", "quantity": 1, "user_id": f"u{i % 13}",
                       "event_id": f"acme-users-{i}"})
        events.append({"tenant_id": "tenant_newco", "metric": "compute_minutes", "quantity": "0.25",
                       "event_id": f"newco-{i}"})
    return events + events[::5]  # every fifth one resent


def answers(metering: Metering) -> dict[str, Any]:
    """Every read answer the API gives, as JSON shapes (`as_of` left out: it is the time of asking)."""
    tenants = [tenant["tenant_id"] for tenant in DEMO_TENANTS] + ["tenant_newco"]
    found: dict[str, Any] = {}
    for tenant in tenants:
        for metric in METRICS:
            found[f"usage {tenant} {metric}"] = metering.usage(tenant, metric).to_json_dict()
            quota = metering.quota(tenant, metric).to_json_dict()
            quota.pop("as_of")
            found[f"quota {tenant} {metric}"] = quota
            found[f"top {tenant} {metric}"] = metering.top_users(tenant, metric).to_json_dict()
    found["billing"] = [invoice.to_json_dict() for invoice in metering.billing_report()]
    found["tenants"] = [tenant.to_json_dict() for tenant in metering.tenants()]
    found["plans"] = [plan.to_json_dict() for plan in metering.plans()]
    found["alerts"] = sorted((a.tenant_id, a.metric, str(a.threshold_percent)) for a in metering.alerts())
    return found


def record_all(metering: Metering) -> Counter[EventStatus]:
    init_demo(metering)
    return Counter(result.status for result in metering.record_events(workload()))
