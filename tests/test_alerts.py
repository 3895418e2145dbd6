"""Quota notifications: threshold crossings recorded once per period, delivered as signed webhooks.

Unit tests drive the crossing function and the in-process library; the
end-to-end tests run a real server process on a real DuckDB file and a real
HTTP receiver (http.server in a thread of this test) on 127.0.0.1.
"""

from __future__ import annotations

import json
import time
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from click.testing import CliRunner

from support.nodes import ServerProcess
from support.webhook_receiver import Receiver, assert_signed
from usage_metering.cli import cli
from usage_metering.ingest.alerts import AlertRule, crossed_thresholds
from usage_metering.metering import Metering
from usage_metering.node.webhooks import SECRET_ENV
from usage_metering.schemas import ValidationError, parse_plan, parse_tenant

SECRET = "test-secret-0123456789"
FAST_RETRIES = {"webhook_retry_base_seconds": 0.2, "webhook_retry_max_seconds": 0.5}
WAIT_SECONDS = 20.0


# -- the crossing function ---------------------------------------------------------------

RULE = AlertRule(Decimal(100), (Decimal(80), Decimal(100)))


@pytest.mark.unit
def test_crossing_80_and_100_in_one_batch_gives_both() -> None:
    assert crossed_thresholds(RULE, Decimal(10), Decimal(120)) == (Decimal(80), Decimal(100))


@pytest.mark.unit
def test_reaching_a_level_exactly_crosses_it() -> None:
    assert crossed_thresholds(RULE, Decimal("79.999"), Decimal(80)) == (Decimal(80),)
    assert crossed_thresholds(RULE, Decimal(99), Decimal(100)) == (Decimal(100),)


@pytest.mark.unit
def test_nothing_is_crossed_again_above_a_level() -> None:
    assert crossed_thresholds(RULE, Decimal(80), Decimal(99)) == ()
    assert crossed_thresholds(RULE, Decimal(100), Decimal(500)) == ()
    assert crossed_thresholds(RULE, Decimal(5), Decimal(5)) == ()


@pytest.mark.unit
def test_levels_are_exact_decimals() -> None:
    rule = AlertRule(Decimal(3), (Decimal("12.5"),))  # level 0.375
    assert crossed_thresholds(rule, Decimal("0.374"), Decimal("0.375")) == (Decimal("12.5"),)
    assert crossed_thresholds(rule, Decimal("0.375"), Decimal("0.376")) == ()


# -- plan and tenant fields ----------------------------------------------------------------


def _plan(included: Any = 100, policy: str = "charge", **metric: Any) -> dict[str, Any]:
    return {
        "plan_id": "alerting",
        "name": "Alerting",
        "metrics": [{"metric": "api_calls", "included": included, "policy": policy, **metric}],
    }


@pytest.mark.unit
def test_plan_thresholds_default_sort_and_validate() -> None:
    assert parse_plan(_plan()).metrics[0].alert_thresholds == (Decimal(80), Decimal(100))
    custom = parse_plan(_plan(alert_thresholds=[100, 50, "80"])).metrics[0]
    assert custom.alert_thresholds == (Decimal(50), Decimal(80), Decimal(100))
    assert custom.to_json_dict()["alert_thresholds"] == ["50", "80", "100"]
    assert parse_plan(_plan(included=None)).metrics[0].alert_thresholds == ()
    assert parse_plan(_plan(alert_thresholds=[])).metrics[0].alert_thresholds == ()
    for bad, field in (
        ([0], "metrics[0].alert_thresholds[0]"),
        ([80, 80], "metrics[0].alert_thresholds[1]"),
        ("80", "metrics[0].alert_thresholds"),
        ([1001], "metrics[0].alert_thresholds[0]"),
    ):
        with pytest.raises(ValidationError) as error:
            parse_plan(_plan(alert_thresholds=bad))
        assert error.value.field == field
    with pytest.raises(ValidationError) as error:
        parse_plan(_plan(included=None, alert_thresholds=[50]))
    assert error.value.field == "metrics[0].alert_thresholds"


@pytest.mark.unit
def test_tenant_webhook_url_is_validated() -> None:
    assert parse_tenant({"tenant_id": "t", "webhook_url": "https://hooks.example.com/q"}).webhook_url
    with pytest.raises(ValidationError) as error:
        parse_tenant({"tenant_id": "t", "webhook_url": "ftp://example.com"})
    assert error.value.field == "webhook_url"


# -- detection inside the ingest transaction (the library, in process) ----------------------


@pytest.fixture
def metering(tmp_path: Path) -> Iterator[Metering]:
    with Metering.open(tmp_path / "alerts.duckdb") as opened:
        yield opened


def _record(metering: Metering, tenant_id: str, *quantities: Any, metric: str = "api_calls") -> list[str]:
    events = [{"tenant_id": tenant_id, "metric": metric, "quantity": q} for q in quantities]
    return [result.status for result in metering.record_events(events)]


def _thresholds(metering: Metering, tenant_id: str) -> list[str]:
    return sorted(a.to_json_dict()["threshold_percent"] for a in metering.alerts(tenant_id))


@pytest.mark.unit
def test_each_threshold_is_recorded_when_crossed(metering: Metering) -> None:
    metering.save_plan(_plan())
    metering.save_tenant({"tenant_id": "t1", "plan_id": "alerting"})
    assert _record(metering, "t1", 30, 60) == ["recorded", "recorded"]  # one batch: 0 -> 90
    assert _thresholds(metering, "t1") == ["80"]
    _record(metering, "t1", 5, 50)
    assert _thresholds(metering, "t1") == ["100", "80"]
    alert = metering.alerts("t1", "pending")[0].to_json_dict()
    assert alert["status"] == "pending" and alert["attempts"] == 0 and alert["used"] == "145"


@pytest.mark.unit
def test_crossing_two_thresholds_in_a_single_batch(metering: Metering) -> None:
    metering.save_plan(_plan(alert_thresholds=[50, 80, 100]))
    metering.save_tenant({"tenant_id": "t2", "plan_id": "alerting"})
    _record(metering, "t2", 40, 45)  # 0 -> 85 in one batch: 50 and 80, not 100
    assert _thresholds(metering, "t2") == ["50", "80"]


@pytest.mark.unit
def test_recrossing_after_the_alert_exists_gives_nothing(metering: Metering) -> None:
    """A LATEST metric falls and rises again: the crossing repeats, the alert does not."""
    metering.define_metric({"name": "seats", "aggregation": "LATEST"})
    metering.save_plan({"plan_id": "seats", "name": "Seats", "metrics": [{"metric": "seats", "included": 10}]})
    metering.save_tenant({"tenant_id": "t3", "plan_id": "seats"})
    for quantity in (9, 2, 9, 3, 8):
        _record(metering, "t3", quantity, metric="seats")
    alerts = metering.alerts("t3")
    assert [a.to_json_dict()["threshold_percent"] for a in alerts] == ["80"]
    assert alerts[0].used == Decimal(9)  # the first crossing is the one kept


@pytest.mark.unit
def test_blocked_events_do_not_count(metering: Metering) -> None:
    metering.save_plan(_plan(included=10, policy="block", alert_thresholds=[50, 100]))
    metering.save_tenant({"tenant_id": "t4", "plan_id": "alerting"})
    assert _record(metering, "t4", 4) == ["recorded"]
    assert _record(metering, "t4", 7) == ["blocked"]  # 11 would cross 50% and 100%
    assert metering.alerts("t4") == []
    assert _record(metering, "t4", 6) == ["recorded"]  # exactly 10: the quota is reached
    assert _thresholds(metering, "t4") == ["100", "50"]


@pytest.mark.unit
def test_no_alerts_without_a_plan_or_a_quota(metering: Metering) -> None:
    metering.save_plan(_plan(included=None))
    metering.save_tenant({"tenant_id": "t5", "plan_id": "alerting"})
    _record(metering, "t5", 10**6)
    _record(metering, "no-plan", 10**6)
    assert metering.alerts() == []


@pytest.mark.unit
def test_alerts_survive_a_reopen_without_repeating(tmp_path: Path) -> None:
    path = tmp_path / "reopen.duckdb"
    with Metering.open(path) as first:
        first.save_plan(_plan())
        first.save_tenant({"tenant_id": "t6", "plan_id": "alerting"})
        _record(first, "t6", 85)
    with Metering.open(path) as second:  # counters rebuilt from the rollups
        _record(second, "t6", 5)
        assert _thresholds(second, "t6") == ["80"]
        _record(second, "t6", 10)
        assert _thresholds(second, "t6") == ["100", "80"]


@pytest.mark.unit
def test_alert_filters_are_validated(metering: Metering) -> None:
    with pytest.raises(ValidationError) as error:
        metering.alerts(status="sent")
    assert error.value.field == "status"


# -- a real webhook receiver ------------------------------------------------------------------


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    started = Receiver().start()
    try:
        yield started
    finally:
        started.stop()


def wait_for(condition: Callable[[], Any], what: str, timeout: float = WAIT_SECONDS) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


def setup_tenant(server: ServerProcess, tenant_id: str, webhook_url: str | None = None) -> None:
    status, _, body = server.request("PUT", "/api/plans/alerting", json_body=_plan())
    assert status == 200, body
    tenant = {"plan_id": "alerting", **({"webhook_url": webhook_url} if webhook_url else {})}
    status, _, body = server.request("PUT", f"/api/tenants/{tenant_id}", json_body=tenant)
    assert status == 200, body
    assert body["webhook_url"] == webhook_url


def post_usage(server: ServerProcess, tenant_id: str, quantity: int) -> None:
    event = {"tenant_id": tenant_id, "metric": "api_calls", "quantity": quantity}
    status, _, body = server.request("POST", "/api/events", json_body=event)
    assert status == 200 and body["status"] == "recorded", body


def list_alerts(server: ServerProcess, query: str = "") -> list[dict[str, Any]]:
    status, _, body = server.request("GET", f"/api/alerts{query}")
    assert status == 200, body
    return body["alerts"]


# -- end to end ----------------------------------------------------------------------------------


@pytest.mark.integration
def test_signed_webhook_once_per_threshold(tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, SECRET)  # the secret from the environment, as `serve` reads it
    options = {"webhook_url": receiver.url, **FAST_RETRIES}
    with ServerProcess(tmp_path / "metering.duckdb", demo=False, options=options) as server:
        setup_tenant(server, "acme")  # no own URL: the global one
        post_usage(server, "acme", 80)
        first = wait_for(lambda: receiver.accepted(), "the 80% webhook")
        payload = assert_signed(first[0], SECRET)
        assert payload["type"] == "quota.threshold_crossed"
        assert (payload["tenant_id"], payload["metric"]) == ("acme", "api_calls")
        assert (payload["threshold_percent"], payload["used"], payload["included"]) == ("80", "80", "100")
        assert first[0].headers["content-type"] == "application/json"

        post_usage(server, "acme", 20)
        both = wait_for(lambda: receiver.accepted() if len(receiver.accepted()) >= 2 else None, "the 100% webhook")
        second = assert_signed(both[1], SECRET)
        assert (second["threshold_percent"], second["used"]) == ("100", "100")
        assert second["alert_id"] != payload["alert_id"]

        post_usage(server, "acme", 50)
        post_usage(server, "acme", 50)
        time.sleep(1.5)  # several dispatcher passes
        assert len(receiver.deliveries) == 2

        alerts = list_alerts(server, "?tenant_id=acme")
        assert [(a["threshold_percent"], a["status"], a["attempts"]) for a in alerts] == [
            ("100", "delivered", 1), ("80", "delivered", 1)
        ]
        assert all(a["delivered_at"] and a["last_error"] is None for a in alerts)
        assert list_alerts(server, "?status=pending") == []
        assert list_alerts(server, "?tenant_id=someone-else") == []
        status, _, body = server.request("GET", "/api/alerts?status=sent")
        assert status == 422 and body["error"]["field"] == "status"

        result = CliRunner().invoke(cli, ["--url", server.url, "--format", "json", "alerts", "--tenant", "acme"])
        assert result.exit_code == 0, result.output
        assert [a["threshold_percent"] for a in json.loads(result.output)] == ["100", "80"]
        server.stop()


@pytest.mark.integration
def test_receiver_answering_500_then_recovering_gets_it_once(tmp_path: Path, receiver: Receiver) -> None:
    receiver.status = 500
    options = {"webhook_secret": SECRET, **FAST_RETRIES}  # no global URL: the tenant's own
    with ServerProcess(tmp_path / "metering.duckdb", demo=False, options=options) as server:
        setup_tenant(server, "globex", webhook_url=receiver.url)
        post_usage(server, "globex", 85)

        def failing_twice() -> dict[str, Any] | None:
            alerts = list_alerts(server, "?tenant_id=globex")
            return alerts[0] if alerts and alerts[0]["attempts"] >= 2 else None

        pending = wait_for(failing_twice, "two failed attempts")
        assert pending["status"] == "pending" and pending["last_error"] == "HTTP 500"
        assert receiver.accepted() == []

        receiver.status = 204
        delivered = wait_for(lambda: receiver.accepted(), "delivery after the receiver recovered")
        assert_signed(delivered[0], SECRET)
        time.sleep(1.5)
        assert len(receiver.accepted()) == 1
        bodies = {d.body for d in receiver.deliveries}
        assert len(bodies) == 1  # every retry sent the same body (receivers dedupe on alert_id)
        alert = list_alerts(server, "?tenant_id=globex")[0]
        assert alert["status"] == "delivered" and alert["attempts"] == len(receiver.deliveries)
        server.stop()


@pytest.mark.integration
def test_pending_alert_is_delivered_after_a_restart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SECRET_ENV, raising=False)  # the node generates and keeps its own secret
    db_path = tmp_path / "metering.duckdb"
    receiver = Receiver()  # reserved port, nothing listening yet
    options = {"webhook_url": receiver.url, **FAST_RETRIES}
    try:
        with ServerProcess(db_path, demo=False, options=options) as server:
            setup_tenant(server, "initech")
            post_usage(server, "initech", 90)
            wait_for(lambda: list_alerts(server, "?status=pending&tenant_id=initech")[0]["attempts"] >= 1,
                     "a failed attempt")
            pending = list_alerts(server, "?tenant_id=initech")[0]
            assert pending["status"] == "pending" and "Connection" in pending["last_error"]
            server.stop()  # SIGTERM with the alert still pending

        secret = Path(f"{db_path}.webhook-secret").read_text().strip()
        assert len(secret) == 64
        receiver.start()
        with ServerProcess(db_path, demo=False, options=options) as server:
            delivered = wait_for(lambda: receiver.accepted(), "delivery after the restart")
            payload = assert_signed(delivered[0], secret)  # the same stored secret after the restart
            assert payload["threshold_percent"] == "80"
            post_usage(server, "initech", 5)  # 95: no new threshold; the 80% one is not repeated
            time.sleep(1.5)
            assert len(receiver.deliveries) == 1
            alert = list_alerts(server, "?tenant_id=initech")[0]
            assert alert["status"] == "delivered" and alert["attempts"] >= 2
            server.stop()
    finally:
        receiver.stop()
