"""The HTTP API on a real DuckDB file: in-process for the answers, a real server process for the rest.

The report, pricing and 4xx matrices share one in-process app (`app_node`,
Starlette's TestClient); the quick-start routes, concurrent posts and streamed
bodies go over a socket to one module-scoped server process (`shared_server`);
the restart tests get their own (`server`) because they stop and restart it.
All keep out of each other's way with unique tenant and plan ids.
"""

from __future__ import annotations

import csv
import io
import json
import random
import threading
import uuid
from datetime import datetime, timedelta, timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from support.nodes import InProcessNode, Node, ServerProcess
from usage_metering.client import exact_json

Response = tuple[int, dict[str, str], Any]


# -- helpers -------------------------------------------------------------------------

def uid(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def ok(response: Response) -> Any:
    status, _headers, body = response
    assert status == 200, f"expected 200, got {status}: {body!r}"
    return body


def dec(value: Any) -> Decimal:
    assert isinstance(value, str), f"decimal values are sent as strings, got {value!r}"
    return Decimal(value)


def post_event(srv: Node, **event: Any) -> Response:
    return srv.request("POST", "/api/events", json_body=event)


def record(srv: Node, **event: Any) -> dict[str, Any]:
    body = ok(post_event(srv, **event))
    assert body["status"] == "recorded", body
    return body


def usage(srv: Node, tenant: str, metric: str, query: str = "") -> dict[str, Any]:
    return ok(srv.request("GET", f"/api/usage/{tenant}/{metric}{query}"))


def quota(srv: Node, tenant: str, metric: str) -> dict[str, Any]:
    return ok(srv.request("GET", f"/api/quota/{tenant}/{metric}"))


def invoice(srv: Node, tenant: str, **extra: Any) -> dict[str, Any]:
    body = ok(srv.request("POST", "/api/billing-report", json_body={"tenant_id": tenant, **extra}))
    assert len(body["invoices"]) == 1, body
    result: dict[str, Any] = body["invoices"][0]
    assert result["tenant_id"] == tenant
    return result


def line(invoice_json: dict[str, Any], metric: str) -> dict[str, Any]:
    matches = [item for item in invoice_json["line_items"] if item["metric"] == metric]
    assert len(matches) == 1, invoice_json
    return matches[0]


def money(amount: Decimal) -> Decimal:
    return amount.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def assert_error(response: Response, status: int, field: str | None = None, *, check_field: bool = True) -> dict:
    got_status, headers, body = response
    assert got_status == status, f"expected {status}, got {got_status}: {body!r}"
    assert headers.get("content-type", "").startswith("application/json"), headers
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), body
    error = body["error"]
    assert {"code", "message", "field"} <= error.keys(), error
    assert isinstance(error["code"], str) and error["code"], error
    assert isinstance(error["message"], str) and error["message"], error
    if check_field:
        assert error["field"] == field, f"expected field {field!r}, got {error!r}"
    return error


def put_plan(srv: Node, plan_id: str, plan: dict[str, Any]) -> dict[str, Any]:
    return ok(srv.request("PUT", f"/api/plans/{plan_id}", json_body=plan))


def put_tenant(srv: Node, tenant_id: str, plan_id: str, anchor: int = 1) -> dict[str, Any]:
    body = ok(
        srv.request(
            "PUT",
            f"/api/tenants/{tenant_id}",
            json_body={"name": tenant_id, "plan_id": plan_id, "billing_anchor_day": anchor},
        )
    )
    assert body["tenant_id"] == tenant_id and body["plan_id"] == plan_id
    return body


def without(data: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k not in keys}


# -- quick start (compatibility routes) ------------------------------------------------

@pytest.mark.integration
def test_quick_start_compat_routes(shared_server: ServerProcess) -> None:
    srv = shared_server
    tenants = {t["tenant_id"] for t in ok(srv.request("GET", "/api/tenants"))["tenants"]}
    assert {"tenant_acme", "tenant_globex", "tenant_initech"} <= tenants
    plans = {p["plan_id"] for p in ok(srv.request("GET", "/api/plans"))["plans"]}
    assert {"free", "pro", "enterprise"} <= plans

    tenant, metric = "tenant_acme", "api_calls"
    before = usage(srv, tenant, metric)
    assert {"tenant_id", "metric", "aggregation", "period", "value", "event_count"} <= before.keys()
    assert before["tenant_id"] == tenant and before["metric"] == metric
    assert {"start", "end"} <= before["period"].keys()
    quota_before = quota(srv, tenant, metric)
    assert {"tenant_id", "metric", "period", "used", "limit", "remaining", "policy", "allowed", "as_of"} <= (
        quota_before.keys()
    )
    bill_before = invoice(srv, tenant)
    assert {"tenant_id", "plan_id", "period", "currency", "base_fee", "line_items", "total"} <= bill_before.keys()
    assert bill_before["plan_id"] == "pro"

    ids = set()
    for i in range(10):
        body = record(srv, tenant_id=tenant, metric=metric, quantity="0.1", user_id=f"qs_user_{i % 3}")
        assert isinstance(body["event_id"], str) and body["event_id"]
        ids.add(body["event_id"])
    assert len(ids) == 10, "generated event ids must be unique"

    after = usage(srv, tenant, metric)
    assert dec(after["value"]) - dec(before["value"]) == Decimal("1")
    assert "e" not in after["value"].lower(), "values are plain decimal text"
    assert after["event_count"] == before["event_count"] + 10
    quota_after = quota(srv, tenant, metric)
    assert dec(quota_after["used"]) - dec(quota_before["used"]) == Decimal("1")
    assert dec(quota_after["remaining"]) == dec(quota_after["limit"]) - dec(quota_after["used"])
    assert quota_after["policy"] == "charge" and quota_after["allowed"] is True
    bill_after = invoice(srv, tenant)
    assert dec(line(bill_after, metric)["used"]) - dec(line(bill_before, metric)["used"]) == Decimal("1")

    # An explicit event_id is idempotent: the second post is a duplicate and adds nothing.
    event_id = uid("req")
    first = ok(post_event(srv, tenant_id=tenant, metric=metric, quantity=3, user_id="alice", event_id=event_id))
    second = ok(post_event(srv, tenant_id=tenant, metric=metric, quantity=3, user_id="alice", event_id=event_id))
    assert first == {"event_id": event_id, "status": "recorded"}
    assert second == {"event_id": event_id, "status": "duplicate"}
    assert dec(usage(srv, tenant, metric)["value"]) == dec(after["value"]) + 3


# -- batch ---------------------------------------------------------------------------------

@pytest.mark.unit
def test_batch_mixed_valid_and_invalid(app_node: InProcessNode) -> None:
    srv = app_node
    tenant = uid("batch")
    now = datetime.now(timezone.utc)
    events: list[Any] = [
        {"tenant_id": tenant, "metric": "calls", "quantity": "2.5", "event_id": "b-0"},
        {"tenant_id": tenant, "quantity": 1, "event_id": "b-1"},  # no metric
        {"tenant_id": tenant, "metric": "calls", "quantity": "-1", "event_id": "b-2"},
        {"tenant_id": tenant, "metric": "calls", "quantity": 4, "event_id": "b-3", "user_id": "u1"},
        {"tenant_id": tenant, "metric": "calls", "quantity": 1, "colour": "red"},
        {"tenant_id": tenant, "metric": "calls", "quantity": 1, "timestamp": rfc3339(now + timedelta(hours=1))},
        {"tenant_id": tenant, "metric": "calls", "quantity": "0.5", "event_id": "b-6", "timestamp": rfc3339(now)},
        {"tenant_id": tenant, "metric": "calls", "quantity": 1, "event_id": "b 7"},
        {"tenant_id": tenant, "metric": "calls", "quantity": "9", "event_id": "b-0"},  # repeat of b-0
    ]
    expected = {
        0: ("recorded", None),
        1: ("rejected", "metric"),
        2: ("rejected", "quantity"),
        3: ("recorded", None),
        4: ("rejected", "colour"),
        5: ("rejected", "timestamp"),
        6: ("recorded", None),
        7: ("rejected", "event_id"),
        8: ("duplicate", None),
    }
    body = ok(srv.request("POST", "/api/events/batch", json_body={"events": events}))
    results = body["results"]
    assert len(results) == len(events)
    for result in results:
        status, field = expected[result["index"]]
        assert result["status"] == status, result
        if status == "rejected":
            assert result["error"]["field"] == field, result
            assert result["error"]["code"] and result["error"]["message"], result
        else:
            assert "error" not in result, result
    assert sorted(r["index"] for r in results) == list(range(len(events)))
    assert body["recorded"] == 3 and body["rejected"] == 5 and body["duplicates"] == 1 and body["blocked"] == 0

    summary = usage(srv, tenant, "calls")
    assert dec(summary["value"]) == Decimal("2.5") + 4 + Decimal("0.5")
    assert summary["event_count"] == 3

    # Too many events: 413, nothing recorded.
    too_many = [{"tenant_id": tenant, "metric": "calls", "quantity": 1} for _ in range(10_001)]
    assert_error(srv.request("POST", "/api/events/batch", json_body={"events": too_many}), 413, "events")
    # Exactly the limit is fine (10,000 events).
    at_limit = [{"tenant_id": tenant, "metric": "bulk", "quantity": 1, "event_id": f"bulk-{i}"} for i in range(10_000)]
    body = ok(srv.request("POST", "/api/events/batch", json_body={"events": at_limit}))
    assert body["recorded"] == 10_000
    # A body declared over the 32 MiB batch limit: 413 before anything is read.
    too_big = srv.request(
        "POST",
        "/api/events/batch",
        raw_body=b'{"events": []}',
        headers={"Content-Type": "application/json", "Content-Length": str(33 * 1024 * 1024)},
    )
    assert_error(too_big, 413, check_field=False)

    summary = usage(srv, tenant, "calls")
    assert dec(summary["value"]) == Decimal("7") and summary["event_count"] == 3
    assert dec(usage(srv, tenant, "bulk")["value"]) == 10_000


@pytest.mark.integration
def test_event_body_over_limit_streamed(shared_server: ServerProcess) -> None:
    """A real oversized body (no lying Content-Length) is refused with 413 and not recorded."""
    srv = shared_server
    tenant = uid("big")
    record(srv, tenant_id=tenant, metric="m", quantity=1)
    body = json.dumps(
        {"tenant_id": tenant, "metric": "m", "quantity": 1, "properties": {"pad": "x" * 80_000}}
    ).encode()
    assert_error(srv.request("POST", "/api/events", raw_body=body), 413, check_field=False)
    assert dec(usage(srv, tenant, "m")["value"]) == 1


# -- idempotency under concurrency -----------------------------------------------------------

@pytest.mark.integration
def test_concurrent_duplicates_counted_once(shared_server: ServerProcess) -> None:
    srv = shared_server
    tenant = uid("conc")
    events = [
        {
            "tenant_id": tenant,
            "metric": "calls",
            "quantity": f"{i % 13}.{i % 7}5",
            "event_id": f"evt-{i:03d}",
            "user_id": f"u{i % 5}",
        }
        for i in range(200)
    ]
    expected_total = sum(Decimal(e["quantity"]) for e in events)
    threads_count = 20
    barrier = threading.Barrier(threads_count)
    lock = threading.Lock()
    outcomes: list[tuple[str, str]] = []  # (event_id, status)
    statuses: list[int] = []
    failures: list[BaseException] = []

    def worker(seed: int) -> None:
        try:
            rng = random.Random(seed)
            mine = events[:]
            rng.shuffle(mine)
            singles, rest = mine[: 15 + seed], mine[15 + seed :]
            batches = []
            while rest:
                size = rng.randint(1, 60)
                batches.append(rest[:size])
                rest = rest[size:]
            work: list[Any] = [("single", e) for e in singles] + [("batch", b) for b in batches]
            rng.shuffle(work)
            barrier.wait(timeout=30)
            local: list[tuple[str, str]] = []
            local_status: list[int] = []
            for kind, item in work:
                if kind == "single":
                    status, _h, body = srv.request("POST", "/api/events", json_body=item)
                    local_status.append(status)
                    assert status == 200, body
                    local.append((body["event_id"], body["status"]))
                else:
                    status, _h, body = srv.request("POST", "/api/events/batch", json_body={"events": item})
                    local_status.append(status)
                    assert status == 200, body
                    assert len(body["results"]) == len(item)
                    for sent, result in zip(item, body["results"]):
                        assert result["event_id"] == sent["event_id"], (sent, result)
                        local.append((result["event_id"], result["status"]))
            with lock:
                outcomes.extend(local)
                statuses.extend(local_status)
        except BaseException as exc:  # noqa: BLE001 - reported below
            with lock:
                failures.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "workers hung"
    assert not failures, failures
    assert all(s < 500 for s in statuses)

    assert len(outcomes) == threads_count * 200
    recorded = [event_id for event_id, status in outcomes if status == "recorded"]
    duplicates = [event_id for event_id, status in outcomes if status == "duplicate"]
    assert len(recorded) == 200, f"{len(recorded)} recorded, expected exactly 200"
    assert sorted(recorded) == sorted(e["event_id"] for e in events), "each event id recorded exactly once"
    assert len(duplicates) == threads_count * 200 - 200
    summary = usage(srv, tenant, "calls")
    assert dec(summary["value"]) == expected_total
    assert summary["event_count"] == 200
    assert dec(quota(srv, tenant, "calls")["used"]) == expected_total


# -- overage policies --------------------------------------------------------------------------

@pytest.mark.unit
def test_overage_policies_block_charge_notify(app_node: InProcessNode) -> None:
    srv = app_node
    plan_id, tenant = uid("plan_pol"), uid("pol")
    plan = put_plan(
        srv,
        plan_id,
        {
            "name": "Policies",
            "currency": "USD",
            "base_fee": "5.00",
            "metrics": [
                {"metric": "blocked_calls", "included": 10, "policy": "block"},
                {"metric": "charged_calls", "included": 10, "policy": "charge", "unit_price": "0.50"},
                {"metric": "notified_calls", "included": 10, "policy": "notify"},
            ],
        },
    )
    assert plan["plan_id"] == plan_id and plan["version"] == 1
    put_tenant(srv, tenant, plan_id)

    # block: 7 fits, 4 more would exceed 10 -> 429, not counted.
    record(srv, tenant_id=tenant, metric="blocked_calls", quantity=7, event_id="blk-1")
    over = post_event(srv, tenant_id=tenant, metric="blocked_calls", quantity=4, event_id="blk-over")
    error = assert_error(over, 429, "quantity")
    assert over[2]["event_id"] == "blk-over"
    assert dec(error["limit"]) == 10 and dec(error["used"]) == 7
    assert {"start", "end"} <= error["period"].keys()
    assert dec(usage(srv, tenant, "blocked_calls")["value"]) == 7
    status_mid = quota(srv, tenant, "blocked_calls")
    assert status_mid["allowed"] is True and dec(status_mid["remaining"]) == 3 and status_mid["policy"] == "block"

    record(srv, tenant_id=tenant, metric="blocked_calls", quantity=3, event_id="blk-2")  # exactly at the limit
    full = quota(srv, tenant, "blocked_calls")
    assert full["allowed"] is False
    assert full["remaining"] == "0" and dec(full["used"]) == 10 and dec(full["limit"]) == 10
    assert full["period"] == error["period"]

    # The blocked event was not stored: a retry is blocked again, not a "duplicate".
    retry = post_event(srv, tenant_id=tenant, metric="blocked_calls", quantity=4, event_id="blk-over")
    retry_error = assert_error(retry, 429, "quantity")
    assert dec(retry_error["used"]) == 10 and dec(retry_error["limit"]) == 10
    batch = ok(
        srv.request(
            "POST",
            "/api/events/batch",
            json_body={"events": [{"tenant_id": tenant, "metric": "blocked_calls", "quantity": 1, "event_id": "blk-over"}]},
        )
    )
    assert batch["results"][0]["status"] == "blocked" and batch["blocked"] == 1
    assert batch["results"][0]["error"]["code"] == "quota_exceeded"
    blocked_usage = usage(srv, tenant, "blocked_calls")
    assert dec(blocked_usage["value"]) == 10 and blocked_usage["event_count"] == 2

    # charge: accepted past the limit, overage billed at 0.50.
    record(srv, tenant_id=tenant, metric="charged_calls", quantity=10)
    record(srv, tenant_id=tenant, metric="charged_calls", quantity="7.3")
    charged_quota = quota(srv, tenant, "charged_calls")
    assert charged_quota["allowed"] is True and charged_quota["remaining"] == "0"

    # notify: accepted past the limit, not billed.
    record(srv, tenant_id=tenant, metric="notified_calls", quantity=15)
    assert quota(srv, tenant, "notified_calls")["allowed"] is True

    bill = invoice(srv, tenant)
    assert bill["plan_id"] == plan_id and bill["plan_version"] == 1
    charged = line(bill, "charged_calls")
    charged_used = Decimal(10) + Decimal("7.3")
    charged_overage = charged_used - 10
    assert dec(charged["used"]) == charged_used
    assert dec(charged["overage_quantity"]) == charged_overage
    assert dec(charged["amount"]) == money(charged_overage * Decimal("0.50"))
    notified = line(bill, "notified_calls")
    assert dec(notified["overage_quantity"]) == 5 and dec(notified["amount"]) == 0
    blocked_line = line(bill, "blocked_calls")
    assert dec(blocked_line["used"]) == 10 and dec(blocked_line["amount"]) == 0
    assert dec(bill["total"]) == Decimal("5.00") + sum(dec(item["amount"]) for item in bill["line_items"])
    assert dec(bill["total"]) == Decimal("5.00") + money(charged_overage * Decimal("0.50"))


# -- graduated tiers and CSV -------------------------------------------------------------------------

def graduated(overage: Decimal, tiers: list[tuple[Decimal | None, Decimal]]) -> Decimal:
    """Reference graduated pricing: each tier bills the overage between its bounds."""
    amount, lower = Decimal(0), Decimal(0)
    for up_to, price in tiers:
        upper = overage if up_to is None else min(overage, up_to)
        if upper > lower:
            amount += (upper - lower) * price
        if up_to is None or overage <= up_to:
            break
        lower = up_to
    return amount


@pytest.mark.unit
def test_graduated_tiers_and_csv(app_node: InProcessNode) -> None:
    srv = app_node
    plan_id, tenant = uid("plan_tier"), uid("tier")
    tiers = [(Decimal(50), Decimal("0.10")), (Decimal(150), Decimal("0.05")), (None, Decimal("0.01"))]
    put_plan(
        srv,
        plan_id,
        {
            "name": "Tiered",
            "currency": "USD",
            "base_fee": "20",
            "metrics": [
                {
                    "metric": "requests",
                    "included": 100,
                    "policy": "charge",
                    "tiers": [
                        {"up_to": None if up is None else str(up), "unit_price": str(price)} for up, price in tiers
                    ],
                },
                {"metric": "storage", "included": 1, "policy": "charge", "unit_price": "0.25"},
            ],
        },
    )
    put_tenant(srv, tenant, plan_id)
    quantities = [Decimal("120"), Decimal("95.5"), Decimal("144.5")]  # 360 used -> 260 over: crosses two tiers
    events = [{"tenant_id": tenant, "metric": "requests", "quantity": str(q)} for q in quantities]
    events.append({"tenant_id": tenant, "metric": "storage", "quantity": "3"})
    assert ok(srv.request("POST", "/api/events/batch", json_body={"events": events}))["recorded"] == 4

    used = sum(quantities)
    overage = used - 100
    assert overage > 150, "usage must reach the third tier"
    expected_requests = money(graduated(overage, tiers))
    expected_storage = money((Decimal(3) - 1) * Decimal("0.25"))

    bill = invoice(srv, tenant)
    requests_line = line(bill, "requests")
    assert dec(requests_line["used"]) == used
    assert dec(requests_line["overage_quantity"]) == overage
    assert dec(requests_line["amount"]) == expected_requests
    assert len(requests_line["tiers"]) == 3
    assert sum(dec(t["quantity"]) for t in requests_line["tiers"]) == overage
    assert dec(line(bill, "storage")["amount"]) == expected_storage
    assert dec(bill["total"]) == Decimal(20) + expected_requests + expected_storage

    status, headers, text = srv.request("POST", "/api/billing-report?format=csv", json_body={"tenant_id": tenant})
    assert status == 200, text
    assert headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    header = next(csv.reader(io.StringIO(text)))
    assert {"tenant_id", "metric", "used", "overage_quantity", "amount"} <= set(header)
    item_rows = [r for r in rows if r.get("row_type", "line_item") == "line_item" and r["metric"]]
    assert len(item_rows) == len(bill["line_items"]) == 2
    by_metric = {r["metric"]: r for r in item_rows}
    assert Decimal(by_metric["requests"]["amount"]) == expected_requests
    assert Decimal(by_metric["storage"]["amount"]) == expected_storage
    assert Decimal(by_metric["requests"]["used"]) == used
    assert all(r["tenant_id"] == tenant for r in rows)
    # format in the body works the same as ?format=csv
    status, _h, text_body = srv.request(
        "POST", "/api/billing-report", json_body={"tenant_id": tenant, "format": "csv"}
    )
    assert status == 200 and text_body == text


# -- periods -------------------------------------------------------------------------------------

@pytest.mark.unit
def test_period_range_and_daily(app_node: InProcessNode) -> None:
    srv = app_node
    tenant = uid("period")
    now = datetime.now(timezone.utc)
    month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    # The last two days of the previous month: at most ~33 days ago, inside the 35-day late window.
    prev_last = month_start - timedelta(days=1) + timedelta(hours=6)
    prev_second_last = month_start - timedelta(days=2) + timedelta(hours=6)
    prev_label = f"{prev_last.year:04d}-{prev_last.month:02d}"
    prev_events = [
        (prev_second_last, Decimal("1.25")),
        (prev_second_last + timedelta(hours=1), Decimal("2")),
        (prev_last, Decimal("4.5")),
    ]
    current_events = [(max(now - timedelta(seconds=30), month_start), Decimal("10")), (now, Decimal("0.01"))]
    batch = [
        {"tenant_id": tenant, "metric": "calls", "quantity": str(q), "timestamp": rfc3339(ts)}
        for ts, q in prev_events + current_events
    ]
    assert ok(srv.request("POST", "/api/events/batch", json_body={"events": batch}))["recorded"] == 5
    prev_total = sum(q for _ts, q in prev_events)
    current_total = sum(q for _ts, q in current_events)

    current = usage(srv, tenant, "calls")
    assert dec(current["value"]) == current_total and current["event_count"] == 2
    assert current["period"]["start"] == rfc3339(month_start)

    previous = usage(srv, tenant, "calls", f"?period={prev_label}")
    assert dec(previous["value"]) == prev_total and previous["event_count"] == 3
    assert previous["period"]["end"] == rfc3339(month_start)

    day1, day2 = prev_second_last.date(), prev_last.date()
    ranged = usage(srv, tenant, "calls", f"?from={day1.isoformat()}&to={day2.isoformat()}")
    assert dec(ranged["value"]) == prev_total
    one_day = usage(srv, tenant, "calls", f"?from={day2.isoformat()}&to={day2.isoformat()}")
    assert dec(one_day["value"]) == Decimal("4.5") and one_day["event_count"] == 1
    everything = usage(srv, tenant, "calls", f"?from={day1.isoformat()}&to={now.date().isoformat()}")
    assert dec(everything["value"]) == prev_total + current_total

    daily = usage(srv, tenant, "calls", f"?period={prev_label}&daily=true")
    assert dec(daily["value"]) == prev_total
    days = {d["date"]: d for d in daily["daily"]}
    assert sum(dec(d["value"]) for d in daily["daily"]) == dec(daily["value"])
    assert sum(d["event_count"] for d in daily["daily"]) == daily["event_count"]
    assert dec(days[day1.isoformat()]["value"]) == Decimal("3.25")
    assert dec(days[day2.isoformat()]["value"]) == Decimal("4.5")

    range_daily = usage(srv, tenant, "calls", f"?from={day1.isoformat()}&to={now.date().isoformat()}&daily=true")
    assert sum(dec(d["value"]) for d in range_daily["daily"]) == dec(range_daily["value"]) == prev_total + current_total

    all_prev = ok(srv.request("GET", f"/api/usage/{tenant}?period={prev_label}"))
    assert [(m["metric"], dec(m["value"])) for m in all_prev["metrics"]] == [("calls", prev_total)]

    # from without to is refused, naming the missing one
    assert_error(srv.request("GET", f"/api/usage/{tenant}/calls?from={day1.isoformat()}"), 422, "to")
    assert_error(srv.request("GET", f"/api/usage/{tenant}/calls?from=2026-02-30&to=2026-03-01"), 422, "from")


# -- top users and tenant usage ----------------------------------------------------------------------

@pytest.mark.unit
def test_top_users_ordering_and_limit(app_node: InProcessNode) -> None:
    srv = app_node
    tenant = uid("top")
    per_user = {"ann": [5, 5], "bob": [30], "cid": [1, 1, 1], "dee": [12, "0.5"], "eve": ["7.25"]}
    events = [
        {"tenant_id": tenant, "metric": "calls", "quantity": str(q), "user_id": user}
        for user, quantities in per_user.items()
        for q in quantities
    ]
    assert ok(srv.request("POST", "/api/events/batch", json_body={"events": events}))["recorded"] == len(events)
    totals = {user: sum(Decimal(str(q)) for q in qs) for user, qs in per_user.items()}
    ranking = sorted(totals, key=lambda u: totals[u], reverse=True)

    body = ok(srv.request("GET", f"/api/top-users/{tenant}/calls?limit=3"))
    assert body["tenant_id"] == tenant and body["metric"] == "calls"
    assert [u["user_id"] for u in body["users"]] == ranking[:3]
    assert [u["rank"] for u in body["users"]] == [1, 2, 3]
    for entry in body["users"]:
        assert dec(entry["value"]) == totals[entry["user_id"]]
        assert entry["event_count"] == len(per_user[entry["user_id"]])

    everyone = ok(srv.request("GET", f"/api/top-users/{tenant}/calls"))
    assert [u["user_id"] for u in everyone["users"]] == ranking
    assert_error(srv.request("GET", f"/api/top-users/{tenant}/calls?limit=0"), 422, "limit")


@pytest.mark.unit
def test_tenant_usage_lists_all_metrics(app_node: InProcessNode) -> None:
    srv = app_node
    tenant = uid("all")
    sent = {"alpha": [Decimal("1.5"), Decimal("2")], "beta": [Decimal(7)], "gamma": [Decimal("0.001")] * 3}
    for metric, quantities in sent.items():
        for q in quantities:
            record(srv, tenant_id=tenant, metric=metric, quantity=str(q))
    body = ok(srv.request("GET", f"/api/usage/{tenant}"))
    assert body["tenant_id"] == tenant
    got = {m["metric"]: m for m in body["metrics"]}
    assert set(got) == set(sent)
    for metric, quantities in sent.items():
        assert dec(got[metric]["value"]) == sum(quantities)
        assert got[metric]["event_count"] == len(quantities)


# -- restart and crash ----------------------------------------------------------------------------------

def _snapshot(srv: Node, tenant: str) -> dict[str, Any]:
    return {
        "usage": usage(srv, tenant, "calls"),
        "usage_all": ok(srv.request("GET", f"/api/usage/{tenant}")),
        "quota": without(quota(srv, tenant, "calls"), "as_of"),
        "bill": invoice(srv, tenant),
        "top": ok(srv.request("GET", f"/api/top-users/{tenant}/calls")),
        "demo": usage(srv, "tenant_acme", "api_calls"),
    }


@pytest.mark.integration
def test_restart_after_sigterm_keeps_everything(server: ServerProcess) -> None:
    plan_id, tenant = uid("plan_rs"), uid("rs")
    put_plan(
        server,
        plan_id,
        {"name": "R", "base_fee": "3", "metrics": [{"metric": "calls", "included": 5, "policy": "charge", "unit_price": "0.2"}]},
    )
    put_tenant(server, tenant, plan_id, anchor=1)
    quantities = [Decimal("2.5"), Decimal(4), Decimal("1.125")]
    for i, q in enumerate(quantities):
        record(server, tenant_id=tenant, metric="calls", quantity=str(q), user_id=f"u{i}")
    before = _snapshot(server, tenant)
    assert dec(before["usage"]["value"]) == sum(quantities)
    assert dec(line(before["bill"], "calls")["amount"]) == money((sum(quantities) - 5) * Decimal("0.2"))

    server.stop()  # SIGTERM; asserts exit code 0
    restarted = ServerProcess(server.db_path, demo=False)
    try:
        restarted.start()
        after = _snapshot(restarted, tenant)
        assert after == before
        # Dedup state survived too.
        again = ok(
            restarted.request(
                "POST",
                "/api/events",
                json_body={"tenant_id": tenant, "metric": "calls", "quantity": 1, "event_id": "fixed-1"},
            )
        )
        assert again["status"] == "recorded"
        restarted.stop()
    finally:
        restarted.close()
    third = ServerProcess(server.db_path, demo=False)
    try:
        third.start()
        dup = ok(
            third.request(
                "POST",
                "/api/events",
                json_body={"tenant_id": tenant, "metric": "calls", "quantity": 1, "event_id": "fixed-1"},
            )
        )
        assert dup["status"] == "duplicate"
        assert dec(usage(third, tenant, "calls")["value"]) == sum(quantities) + 1
    finally:
        third.close()


@pytest.mark.integration
def test_sigkill_after_ack_loses_nothing(server: ServerProcess) -> None:
    tenant = uid("crash")
    events = [
        {"tenant_id": tenant, "metric": "calls", "quantity": f"{i}.5", "event_id": f"crash-{i}"} for i in range(200)
    ]
    body = ok(server.request("POST", "/api/events/batch", json_body={"events": events}))
    assert body["recorded"] == 200
    server.kill()  # kill -9 right after the ack
    assert server.process is not None and server.process.returncode != 0

    restarted = ServerProcess(server.db_path, demo=False)
    try:
        restarted.start()
        summary = usage(restarted, tenant, "calls")
        assert summary["event_count"] == 200
        assert dec(summary["value"]) == sum(Decimal(e["quantity"]) for e in events)
        assert dec(quota(restarted, tenant, "calls")["used"]) == dec(summary["value"])
        replay = ok(restarted.request("POST", "/api/events/batch", json_body={"events": events}))
        assert replay["duplicates"] == 200 and replay["recorded"] == 0
        restarted.stop()
    finally:
        restarted.close()


# -- bad input -------------------------------------------------------------------------------------------

@pytest.mark.unit
def test_bad_inputs_answer_4xx_and_lose_nothing(app_node: InProcessNode) -> None:
    srv = app_node
    tenant, metric = uid("bad"), "calls"
    record(srv, tenant_id=tenant, metric=metric, quantity="3.5", event_id="good-1")
    record(srv, tenant_id=tenant, metric=metric, quantity=4, event_id="good-2")
    before_usage = usage(srv, tenant, metric)
    before_quota = without(quota(srv, tenant, metric), "as_of")
    assert dec(before_usage["value"]) == Decimal("7.5")

    now = datetime.now(timezone.utc)
    base = {"tenant_id": tenant, "metric": metric, "quantity": 1}
    seen: list[int] = []

    def check(response: Response, status: int, field: str | None = None, *, check_field: bool = True) -> dict:
        seen.append(response[0])
        return assert_error(response, status, field, check_field=check_field)

    def event(**changes: Any) -> Response:
        data = {**base, **changes}
        return srv.request("POST", "/api/events", json_body={k: v for k, v in data.items() if v is not ...})

    check(srv.request("POST", "/api/events", raw_body='{"tenant_id": "x", '), 400, None)
    check(srv.request("POST", "/api/events", raw_body=""), 400, None)
    check(srv.request("POST", "/api/events", raw_body=b"\xff\xfe{}"), 400, None)
    check(srv.request("POST", "/api/events", json_body=[base]), 422, check_field=False)
    check(event(colour="red"), 422, "colour")
    check(event(tenant_id=...), 422, "tenant_id")
    check(event(tenant_id=None), 422, "tenant_id")
    check(event(metric=...), 422, "metric")
    check(event(quantity=...), 422, "quantity")
    check(event(quantity="-1"), 422, "quantity")
    check(event(quantity=-1), 422, "quantity")
    check(event(quantity="abc"), 422, "quantity")
    check(event(quantity="NaN"), 422, "quantity")
    check(event(quantity=True), 422, "quantity")
    nan_body = json.dumps(base).replace('"quantity": 1', '"quantity": NaN')
    assert "NaN" in nan_body
    check(srv.request("POST", "/api/events", raw_body=nan_body), 422, "quantity")
    inf_body = json.dumps(base).replace('"quantity": 1', '"quantity": Infinity')
    check(srv.request("POST", "/api/events", raw_body=inf_body), 422, "quantity")
    check(event(quantity="0.0000000001"), 422, "quantity")  # 10 fractional digits
    check(event(timestamp=rfc3339(now + timedelta(minutes=10))), 422, "timestamp")
    check(event(timestamp=rfc3339(now - timedelta(days=40))), 422, "timestamp")
    check(event(timestamp="yesterday"), 422, "timestamp")
    check(event(timestamp="2026-01-01T00:00:00"), 422, "timestamp")  # no offset
    check(event(event_id="has space"), 422, "event_id")
    check(event(user_id="a b"), 422, "user_id")
    check(event(metric="x" * 129), 422, "metric")
    check(event(properties={"blob": "x" * 9000}), 422, "properties")
    check(event(properties="not an object"), 422, "properties")
    check(event(properties={"pad": "x" * 70_000}), 413, check_field=False)
    check(
        srv.request("POST", "/api/events/batch", json_body={"events": "nope"}), 422, "events"
    )
    check(srv.request("POST", "/api/events/batch", raw_body="{"), 400, None)

    unknown_tenant = uid("nobody")
    check(srv.request("GET", f"/api/usage/{unknown_tenant}/{metric}"), 404, "tenant_id")
    check(srv.request("GET", f"/api/usage/{unknown_tenant}"), 404, "tenant_id")
    check(srv.request("GET", f"/api/quota/{unknown_tenant}/{metric}"), 404, "tenant_id")
    check(srv.request("GET", f"/api/top-users/{unknown_tenant}/{metric}"), 404, "tenant_id")
    check(srv.request("POST", "/api/billing-report", json_body={"tenant_id": unknown_tenant}), 404, "tenant_id")
    check(srv.request("GET", f"/api/plans/{uid('noplan')}"), 404, "plan_id")
    check(srv.request("GET", "/api/plans/free?version=999"), 404, "plan_id")
    check(srv.request("GET", "/api/plans/free?version=abc"), 422, "version")
    orphan = uid("orphan")
    check(srv.request("PUT", f"/api/tenants/{orphan}", json_body={"plan_id": uid("noplan")}), 404, "plan_id")
    check(srv.request("GET", f"/api/tenants/{orphan}"), 404, "tenant_id")  # not created half-way
    check(srv.request("PUT", f"/api/tenants/{orphan}", json_body={"tenant_id": "other"}), 422, "tenant_id")
    check(srv.request("PUT", f"/api/tenants/{orphan}", json_body={"billing_anchor_day": 32}), 422, "billing_anchor_day")
    check(
        srv.request("PUT", f"/api/plans/{uid('p')}", json_body={"metrics": [{"metric": "m", "policy": "maybe"}]}),
        422,
        "metrics[0].policy",
    )
    check(srv.request("GET", f"/api/usage/{tenant}/{metric}?period=2026-13"), 422, "period")
    check(srv.request("GET", f"/api/usage/{tenant}?period=26-01"), 422, "period")
    check(srv.request("GET", f"/api/quota/{tenant}/bad%20metric"), 422, "metric")
    check(srv.request("POST", "/api/billing-report", json_body={"tenant_id": tenant, "period": "2026-13"}), 422, "period")
    check(srv.request("POST", "/api/billing-report", json_body={"tenant_id": tenant, "format": "pdf"}), 422, "format")
    check(srv.request("POST", "/api/billing-report", json_body={"tenant": tenant}), 422, "tenant")
    check(srv.request("GET", "/api/no-such-route"), 404, None)
    check(srv.request("GET", "/nothing/here"), 404, None)
    check(srv.request("DELETE", "/api/events"), 405, None)

    assert all(status < 500 for status in seen), seen
    assert usage(srv, tenant, metric) == before_usage
    assert without(quota(srv, tenant, metric), "as_of") == before_quota
    assert ok(srv.request("GET", "/healthz")) == {"status": "ok"}
    # and it still records
    record(srv, tenant_id=tenant, metric=metric, quantity="0.5")
    assert dec(usage(srv, tenant, metric)["value"]) == Decimal(8)


# -- plan versions and OpenAPI ----------------------------------------------------------------------------

@pytest.mark.unit
def test_plan_versioning(app_node: InProcessNode) -> None:
    srv = app_node
    plan_id = uid("plan_ver")

    def definition(price: str) -> dict[str, Any]:
        return {
            "name": "Versioned",
            "base_fee": "10",
            "metrics": [{"metric": "calls", "included": 100, "policy": "charge", "unit_price": price}],
        }

    v1 = put_plan(srv, plan_id, definition("0.50"))
    v2 = put_plan(srv, plan_id, definition("0.75"))
    assert v1["version"] == 1 and v2["version"] == 2
    current = ok(srv.request("GET", f"/api/plans/{plan_id}"))
    assert current["version"] == 2 and dec(current["metrics"][0]["unit_price"]) == Decimal("0.75")
    old = ok(srv.request("GET", f"/api/plans/{plan_id}?version=1"))
    assert old["version"] == 1 and dec(old["metrics"][0]["unit_price"]) == Decimal("0.50")
    assert ok(srv.request("GET", f"/api/plans/{plan_id}?version=2")) == current
    listed = {p["plan_id"]: p for p in ok(srv.request("GET", "/api/plans"))["plans"]}
    assert listed[plan_id]["version"] == 2
    # Re-sending the current definition is not a change: still version 2.
    assert put_plan(srv, plan_id, definition("0.75"))["version"] == 2

    # A tenant on the plan is billed at the newest price.
    tenant = uid("ver")
    put_tenant(srv, tenant, plan_id)
    record(srv, tenant_id=tenant, metric="calls", quantity=104)
    bill = invoice(srv, tenant)
    assert bill["plan_version"] == 2
    assert dec(line(bill, "calls")["amount"]) == money(Decimal(4) * Decimal("0.75"))


@pytest.mark.unit
def test_openapi_document(app_node: InProcessNode) -> None:
    status, headers, body = app_node.request("GET", "/openapi.json")
    assert status == 200 and headers["content-type"].startswith("application/json")
    assert isinstance(body, dict)
    assert str(body.get("openapi", "")).startswith("3.")
    paths = body["paths"]
    expected = {
        "/api/events": "post",
        "/api/events/batch": "post",
        "/api/usage/{tenant_id}": "get",
        "/api/usage/{tenant_id}/{metric}": "get",
        "/api/quota/{tenant_id}/{metric}": "get",
        "/api/top-users/{tenant_id}/{metric}": "get",
        "/api/billing-report": "post",
        "/api/plans/{plan_id}": "put",
        "/api/tenants/{tenant_id}": "put",
    }
    for path, method in expected.items():
        assert path in paths, path
        assert method in paths[path], (path, sorted(paths[path]))
    # every documented path is served (not a 404 route miss)
    probe = app_node.request("GET", "/api/usage/tenant_acme/api_calls")
    assert probe[0] == 200


def documented_validator(document: dict[str, Any], path: str, method: str, status: int) -> Any:
    """A jsonschema validator for the answer `document` promises for (path, method, status)."""
    answer = document["paths"][path][method]["responses"][str(status)]
    schema = {**answer["content"]["application/json"]["schema"], "components": document["components"]}
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


@pytest.mark.unit
def test_answers_match_the_documented_schemas(app_node: InProcessNode) -> None:
    document = ok(app_node.request("GET", "/openapi.json"))
    tenant = uid("schema")
    put_tenant(app_node, tenant, "pro")
    blocked_event = {"tenant_id": "tenant_globex", "metric": "api_calls", "quantity": 10**9}
    calls = [  # (method, documented path, concrete path, body, expected status)
        ("post", "/api/events", "/api/events", {"tenant_id": tenant, "metric": "api_calls", "quantity": "2.5"}, 200),
        ("post", "/api/events", "/api/events", blocked_event, 429),
        ("post", "/api/events", "/api/events", {"tenant_id": tenant, "metric": "api_calls"}, 422),
        ("post", "/api/events/batch", "/api/events/batch",
         {"events": [{"tenant_id": tenant, "metric": "api_calls", "quantity": 1}, {"tenant_id": tenant}]}, 200),
        ("get", "/api/usage/{tenant_id}/{metric}", f"/api/usage/{tenant}/api_calls?daily=true", None, 200),
        ("get", "/api/usage/{tenant_id}/{metric}", "/api/usage/nobody_here/api_calls", None, 404),
        ("get", "/api/usage/{tenant_id}", f"/api/usage/{tenant}", None, 200),
        ("get", "/api/quota/{tenant_id}/{metric}", f"/api/quota/{tenant}/api_calls", None, 200),
        ("get", "/api/top-users/{tenant_id}/{metric}", f"/api/top-users/{tenant}/api_calls?limit=0", None, 422),
        ("get", "/api/top-users/{tenant_id}/{metric}", f"/api/top-users/{tenant}/api_calls", None, 200),
        ("post", "/api/billing-report", "/api/billing-report", {"tenant_id": tenant}, 200),
        ("get", "/api/plans", "/api/plans", None, 200),
        ("get", "/api/tenants/{tenant_id}", f"/api/tenants/{tenant}", None, 200),
        ("get", "/api/metrics", "/api/metrics", None, 200),
        ("get", "/api/dead-letters", "/api/dead-letters", None, 200),
        ("get", "/api/alerts", "/api/alerts", None, 200),
        ("get", "/healthz", "/healthz", None, 200),
    ]
    for method, documented, concrete, body, status in calls:
        got, _headers, answer = app_node.request(method.upper(), concrete, json_body=body)
        assert got == status, (concrete, got, answer)
        data = json.loads(exact_json(answer))  # Decimals (parsed exactly) back to JSON numbers' types
        errors = [e.message for e in documented_validator(document, documented, method, status).iter_errors(data)]
        assert errors == [], (concrete, status, errors)
