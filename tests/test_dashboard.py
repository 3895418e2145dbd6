"""The /dashboard page in a real headless Chromium against a real server process.

The server runs on a fresh DuckDB file with the demo data plus events posted
here with known quantities. The test drives Debian's `chromium` through
`chromedriver` with Selenium, reads the numbers the page shows and checks them
against the API's JSON fetched directly. A second test turns the node's API keys
on and checks that the page asks for a key on 401 and then works with a tenant
key and with an admin key.

Needs /usr/bin/chromium and /usr/bin/chromedriver (`make browser` installs them;
`make test` runs it first). Missing browser = failure, never a skip.
"""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterator

import pytest

from support.nodes import ServerProcess, request

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER_BIN", "/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
WAIT_SECONDS = 30.0
TENANT = "tenant_acme"  # demo tenant on the "pro" plan (compute_minutes: 1000 included, 0.02 per overage minute)

# Known usage on top of the demo data: compute_minutes ends at 1000.625, over the quota by 0.625.
KNOWN_EVENTS = [
    {"tenant_id": TENANT, "metric": "compute_minutes", "quantity": "1000.5", "user_id": "ops_bot", "event_id": "dash-1"},
    {"tenant_id": TENANT, "metric": "compute_minutes", "quantity": "0.125", "user_id": "ana", "event_id": "dash-2"},
    # not in the plan (no limit), and not representable as a float: shown as text, never via parseFloat
    {"tenant_id": TENANT, "metric": "bytes_out", "quantity": "12345678901234567.123456789", "user_id": "bulk",
     "event_id": "dash-3"},
]

# What the page exposes, read from the DOM in one go.
SNAPSHOT_JS = """
const q = (sel) => Array.from(document.querySelectorAll(sel));
const total = document.getElementById('billing-total');
return {
  state: document.body.dataset.state || null,
  tenant: document.body.dataset.tenant || null,
  metric: document.body.dataset.metric || null,
  error: document.getElementById('error').hidden ? null : document.getElementById('error').textContent,
  authVisible: !document.getElementById('auth-form').hidden,
  tenantOptions: q('#tenant-select option').map(o => o.value).filter(v => v),
  quotas: q('#quota-bars .quota-row').map(r => ({
    metric: r.dataset.metric, dataUsed: r.dataset.used, dataLimit: r.dataset.limit,
    used: r.querySelector('.used').textContent, limit: r.querySelector('.limit').textContent,
    fillWidth: r.querySelector('.fill').style.width, fillClass: r.querySelector('.fill').className,
  })),
  dailyMetric: document.getElementById('daily-chart').dataset.metric || null,
  dailyCountText: document.getElementById('daily-count').textContent,
  dailyTotalText: document.getElementById('daily-total').textContent,
  daily: q('#daily-chart svg rect.day').map(b => ({date: b.dataset.date, value: b.dataset.value,
    height: parseFloat(b.getAttribute('height'))})),
  users: q('#top-users tbody tr').map(r => ({user: r.querySelector('.user').textContent,
    value: r.querySelector('.value').textContent, dataUser: r.dataset.user, dataValue: r.dataset.value})),
  billingTotal: total.textContent, billingDataTotal: total.dataset.total || null,
  billingCurrency: document.getElementById('billing-currency').textContent,
};
"""


# -- the browser ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Debian Chromium via chromedriver; fails (never skips) with the reason when it cannot start."""
    for path, what in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromedriver")):
        if not os.access(path, os.X_OK):
            pytest.fail(f"{what} not found at {path}: run `make browser` (apt-get install chromium chromium-driver)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError as exc:
        pytest.fail(f"selenium is not installed ({exc}); it is in the test extra: pip install -e '.[test]'")
    profile = tempfile.mkdtemp(prefix="dashboard-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--disable-dev-shm-usage", "--window-size=1280,1500", f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    try:
        driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    except Exception as exc:  # noqa: BLE001 - report whatever stopped the browser
        shutil.rmtree(profile, ignore_errors=True)
        pytest.fail(f"headless chromium did not start: {type(exc).__name__}: {exc}")
    driver.set_page_load_timeout(WAIT_SECONDS)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def snapshot(driver: Any) -> dict[str, Any]:
    return driver.execute_script(SNAPSHOT_JS)


def wait_for(driver: Any, condition: Any, what: str) -> dict[str, Any]:
    """Poll the page snapshot until `condition(snapshot)` holds; fail with the last snapshot."""
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        page = snapshot(driver)
        if condition(page):
            return page
        if page["error"]:
            pytest.fail(f"the page shows an error while waiting for {what}: {page['error']}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {WAIT_SECONDS:g}s waiting for {what}; page: {page}")
        time.sleep(0.05)


def choose(driver: Any, select_id: str, value: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element(By.ID, select_id)).select_by_value(value)


def ready_with(tenant: str, metric: str | None = None) -> Any:
    return lambda p: p["state"] == "ready" and p["tenant"] == tenant and (metric is None or p["metric"] == metric)


# -- the API, fetched directly -----------------------------------------------------------------


def api(base_url: str, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
    status, _headers, data = request(method, f"{base_url}{path}", json_body=body, headers=headers)
    assert status == 200, f"{method} {path} -> {status}: {data}"
    return data


def expected_metrics(base_url: str, tenant: str, headers: dict[str, str] | None = None) -> list[str]:
    tenants = {t["tenant_id"]: t for t in api(base_url, "GET", "/api/tenants", headers=headers)["tenants"]}
    plan = api(base_url, "GET", f"/api/plans/{tenants[tenant]['plan_id']}", headers=headers)
    names = [m["metric"] for m in plan["metrics"]]
    for summary in api(base_url, "GET", f"/api/usage/{tenant}", headers=headers)["metrics"]:
        if summary["metric"] not in names:
            names.append(summary["metric"])
    return names


def check_quotas(page: dict[str, Any], base_url: str, tenant: str, headers: dict[str, str] | None = None) -> None:
    names = expected_metrics(base_url, tenant, headers)
    assert [row["metric"] for row in page["quotas"]] == names
    for row in page["quotas"]:
        quota = api(base_url, "GET", f"/api/quota/{tenant}/{row['metric']}", headers=headers)
        assert row["used"] == row["dataUsed"] == quota["used"], row
        limit_text = "unlimited" if quota["limit"] is None else quota["limit"]
        assert row["limit"] == limit_text, row
        assert row["dataLimit"] == (quota["limit"] or ""), row


def check_daily(page: dict[str, Any], base_url: str, tenant: str, metric: str) -> dict[str, Any]:
    summary = api(base_url, "GET", f"/api/usage/{tenant}/{metric}?daily=true")
    assert page["dailyMetric"] == metric
    assert [(d["date"], d["value"]) for d in page["daily"]] == [(d["date"], d["value"]) for d in summary["daily"]]
    assert page["dailyCountText"] == str(len(summary["daily"]))
    assert page["dailyTotalText"] == summary["value"]
    if summary["aggregation"] == "SUM":
        assert sum(Decimal(d["value"]) for d in page["daily"]) == Decimal(summary["value"])
    tallest = max(page["daily"], key=lambda d: Decimal(d["value"]))
    assert all(d["height"] <= tallest["height"] for d in page["daily"])
    assert tallest["height"] > 50  # the largest day fills the plot height (166 px)
    return summary


def check_top_users(page: dict[str, Any], base_url: str, tenant: str, metric: str) -> list[dict[str, Any]]:
    users = api(base_url, "GET", f"/api/top-users/{tenant}/{metric}?limit=10")["users"]
    assert [(u["user"], u["value"]) for u in page["users"]] == [(u["user_id"], u["value"]) for u in users]
    assert [(u["dataUser"], u["dataValue"]) for u in page["users"]] == [(u["user_id"], u["value"]) for u in users]
    return users


# -- the dashboard with auth off ------------------------------------------------------------------


@pytest.fixture(scope="module")
def dashboard_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path_factory.mktemp("dashboard") / "metering.duckdb", demo=True)
    try:
        process.start()
        for event in KNOWN_EVENTS:
            status, _h, body = process.request("POST", "/api/events", json_body=event)
            assert status == 200 and body["status"] == "recorded", body
        yield process
        process.stop()
    finally:
        process.close()


def test_dashboard_shows_what_the_api_says(browser: Any, dashboard_server: ServerProcess) -> None:
    base = dashboard_server.url
    status, headers, html = request("GET", f"{base}/dashboard")
    assert status == 200 and headers["content-type"].startswith("text/html"), (status, headers)
    assert "/dashboard/static/dashboard.js" in html and "http" not in html.replace("http-equiv", "")  # offline
    for asset, kind in (("dashboard.js", "javascript"), ("dashboard.css", "text/css")):
        status, headers, _body = request("GET", f"{base}/dashboard/static/{asset}")
        assert status == 200 and kind in headers["content-type"], (asset, status, headers)

    browser.get(f"{base}/dashboard")
    page = wait_for(browser, lambda p: p["state"] == "ready" and p["tenantOptions"], "the tenant list")
    assert page["tenantOptions"] == [t["tenant_id"] for t in api(base, "GET", "/api/tenants")["tenants"]]
    assert page["tenant"] is None and page["quotas"] == []  # nothing shown before a tenant is chosen

    choose(browser, "tenant-select", TENANT)
    page = wait_for(browser, ready_with(TENANT), f"{TENANT}'s data")

    # usage vs quota, per metric of the plan (and any other metric used)
    check_quotas(page, base, TENANT)
    rows = {row["metric"]: row for row in page["quotas"]}
    assert (rows["api_calls"]["used"], rows["api_calls"]["limit"]) == ("601", "100000")  # the demo's 60 events
    assert (rows["storage_gb"]["used"], rows["storage_gb"]["limit"]) == ("0.75", "100")
    assert (rows["compute_minutes"]["used"], rows["compute_minutes"]["limit"]) == ("1000.625", "1000")
    assert rows["compute_minutes"]["fillWidth"] == "100%" and "over" in rows["compute_minutes"]["fillClass"]
    assert rows["api_calls"]["fillWidth"] == "0.6%" and "ok" in rows["api_calls"]["fillClass"]
    assert (rows["bytes_out"]["used"], rows["bytes_out"]["limit"]) == ("12345678901234567.123456789", "unlimited")

    # daily chart and top users for the default metric (the first one used: api_calls)
    assert page["metric"] == "api_calls"
    summary = check_daily(page, base, TENANT, "api_calls")
    assert summary["value"] == "601" and len(page["daily"]) >= 1
    users = check_top_users(page, base, TENANT, "api_calls")
    assert sorted(u["value"] for u in users) == ["144", "150", "151", "156"]

    # the latest billing total: base fee 49 + 0.625 overage minutes x 0.02 = 0.0125 -> 0.01
    invoice = api(base, "POST", "/api/billing-report", {"tenant_id": TENANT})["invoices"][0]
    assert invoice["total"] == "49.01"
    assert page["billingTotal"] == page["billingDataTotal"] == invoice["total"]
    assert page["billingCurrency"] == invoice["currency"] == "USD"

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "dashboard.png"
    shot.unlink(missing_ok=True)
    assert browser.save_screenshot(str(shot)), "chromium did not save the screenshot"
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "the screenshot is not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    assert width >= 1000 and height >= 800, (width, height)
    assert len(data) > 20_000, f"suspiciously small screenshot ({len(data)} bytes)"

    # another metric: the chart and the table follow the metric selector
    choose(browser, "metric-select", "compute_minutes")
    page = wait_for(browser, ready_with(TENANT, "compute_minutes"), "compute_minutes")
    check_daily(page, base, TENANT, "compute_minutes")
    assert page["dailyTotalText"] == "1000.625"
    assert check_top_users(page, base, TENANT, "compute_minutes") and [
        (u["user"], u["value"]) for u in page["users"]
    ] == [("ops_bot", "1000.5"), ("ana", "0.125")]
    choose(browser, "metric-select", "bytes_out")
    page = wait_for(browser, ready_with(TENANT, "bytes_out"), "bytes_out")
    check_daily(page, base, TENANT, "bytes_out")
    assert page["dailyTotalText"] == "12345678901234567.123456789"
    assert [(u["user"], u["value"]) for u in page["users"]] == [("bulk", "12345678901234567.123456789")]

    # another tenant: everything is replaced
    choose(browser, "tenant-select", "tenant_globex")
    page = wait_for(browser, ready_with("tenant_globex"), "tenant_globex's data")
    check_quotas(page, base, "tenant_globex")
    assert {r["metric"]: r["limit"] for r in page["quotas"]}["api_calls"] == "1000"
    invoice = api(base, "POST", "/api/billing-report", {"tenant_id": "tenant_globex"})["invoices"][0]
    assert page["billingTotal"] == invoice["total"]


# -- the dashboard with API keys (the node's own auth) -----------------------------------------------


@pytest.fixture
def keyed_server(tmp_path: Path) -> Iterator[tuple[ServerProcess, str, str]]:
    """A demo server with authentication on: (server, admin token, tenant_globex token)."""
    process = ServerProcess(tmp_path / "metering.duckdb", demo=True)
    try:
        process.start()
        status, _h, admin = process.request("POST", "/api/keys", json_body={"name": "dash-admin", "scope": "admin"})
        assert status == 201, admin  # the first key may be created while auth is still off
        headers = {"Authorization": f"Bearer {admin['token']}"}
        status, _h, tenant = process.request(
            "POST", "/api/keys", json_body={"name": "dash-globex", "scope": "tenant", "tenant_id": "tenant_globex"},
            headers=headers,
        )
        assert status == 201, tenant
        yield process, admin["token"], tenant["token"]
        process.stop()
    finally:
        process.close()


def test_dashboard_asks_for_a_key_when_the_api_answers_401(
    browser: Any, keyed_server: tuple[ServerProcess, str, str]
) -> None:
    from selenium.webdriver.common.by import By

    server, admin_token, tenant_token = keyed_server
    base = server.url
    admin = {"Authorization": f"Bearer {admin_token}"}
    assert request("GET", f"{base}/api/tenants")[0] == 401  # auth is on
    assert request("GET", f"{base}/dashboard")[0] == 200  # the page itself is open

    browser.get(f"{base}/dashboard")
    page = wait_for(browser, lambda p: p["state"] == "auth", "the key prompt")
    assert page["authVisible"] and page["tenantOptions"] == []

    def submit_key(key: str) -> None:
        field = browser.find_element(By.ID, "api-key")
        field.clear()
        field.send_keys(key)
        browser.find_element(By.CSS_SELECTOR, "#auth-form button[type=submit]").click()

    submit_key("not-a-key")
    page = wait_for(browser, lambda p: p["state"] == "auth", "the key prompt again after a wrong key")
    assert page["tenantOptions"] == []

    # a tenant key: /api/tenants is admin-only (403), so the page shows the key's own tenant
    submit_key(tenant_token)
    page = wait_for(browser, ready_with("tenant_globex"), "tenant_globex's data with its tenant key")
    assert not page["authVisible"] and page["tenantOptions"] == ["tenant_globex"]
    assert browser.execute_script("return sessionStorage.getItem('usage_metering_api_key')") == tenant_token
    check_quotas(page, base, "tenant_globex", headers=admin)
    invoice = api(base, "POST", "/api/billing-report", {"tenant_id": "tenant_globex"}, headers=admin)["invoices"][0]
    assert page["billingTotal"] == invoice["total"]
    users = api(base, "GET", "/api/top-users/tenant_globex/api_calls", headers=admin)["users"]
    assert [(u["user"], u["value"]) for u in page["users"]] == [(u["user_id"], u["value"]) for u in users] and users

    # forget it, then an admin key: every tenant
    browser.find_element(By.ID, "forget-key").click()
    page = wait_for(browser, lambda p: p["state"] == "auth", "the key prompt after forgetting the key")
    submit_key(admin_token)
    page = wait_for(browser, lambda p: p["state"] == "ready" and len(p["tenantOptions"]) > 1, "all tenants")
    assert page["tenantOptions"] == [t["tenant_id"] for t in api(base, "GET", "/api/tenants", headers=admin)["tenants"]]
    choose(browser, "tenant-select", "tenant_initech")
    page = wait_for(browser, ready_with("tenant_initech"), "tenant_initech's data with the admin key")
    check_quotas(page, base, "tenant_initech", headers=admin)
    assert {r["metric"]: r["limit"] for r in page["quotas"]}["storage_gb"] == "unlimited"
