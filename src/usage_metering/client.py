"""`MeteringClient`: the library's methods and return types, over a node's HTTP API.

    from usage_metering import MeteringClient
    with MeteringClient("http://localhost:8005", api_key="um_...") as metering:
        metering.record({"tenant_id": "acme", "metric": "api_calls", "quantity": 1})
        print(metering.quota("acme", "api_calls").remaining)

Error answers become the exceptions `Metering` raises in-process
(`ValidationError` for 400/413/422, `NotFoundError` for an unknown tenant, plan
or metric); what has no in-process equivalent (401/403, 409, 5xx) raises
`MeteringHttpError`, and a node that cannot be reached `MeteringUnreachable`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import date
from decimal import Decimal
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

from .reports.pricing import Invoice
from .reports.quota import QuotaStatus
from .reports.top_users import TopUsers
from .reports.usage import TenantUsage, UsageSummary
from .schemas import (
    ErrorDetail,
    EventResult,
    EventStatus,
    MetricDefinition,
    NotFoundError,
    Plan,
    Tenant,
    UsageEvent,
    ValidationError,
    check_id,
)
from .schemas.wire import JsonShape, from_json_data
from .store.alerts import Alert
from .store.dead_letters import StoredDeadLetter
from .store.keys import ApiKey

T = TypeVar("T")

DEFAULT_TIMEOUT_SECONDS = 60.0


class MeteringHttpError(Exception):
    """An error answer with no in-process equivalent: 401/403, 409, 5xx (`code` from the JSON body)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class MeteringUnreachable(ConnectionError):
    """The node did not answer (connection refused, timeout, broken connection)."""


def raise_for_answer(response: httpx.Response) -> None:
    """The exception `Metering` would have raised in-process for an error answer; nothing for a 2xx."""
    if response.is_success:
        return
    status = response.status_code
    try:
        error = response.json().get("error")
    except (ValueError, AttributeError):
        error = None
    if not isinstance(error, dict):
        text = response.text.strip() or "no details"
        raise MeteringHttpError(status, "", f"HTTP {status}: {text[:500]}")
    message = str(error.get("message") or f"HTTP {status}")
    code = str(error.get("code") or "")
    if status in (400, 413, 422):
        raise ValidationError(error.get("field"), message, code or "invalid_field")
    if status == 404 and code.startswith("unknown_"):
        missing = NotFoundError(code[len("unknown_") :], "")
        missing.args = (message,)  # the node's own text: "unknown tenant 'x'"
        raise missing
    raise MeteringHttpError(status, code, message)


def exact_json(value: Any) -> str:
    """JSON text in which Decimals stay exact numbers (json.dumps would need floats)."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{json.dumps(str(k))}:{exact_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(exact_json(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def _segment(value: str) -> str:
    return quote(value, safe="")


def _query(**values: Any) -> dict[str, str]:
    """Query parameters: None and False left out, True as "true", dates as ISO text."""
    params = {}
    for name, value in values.items():
        if value is None or value is False:
            continue
        params[name] = "true" if value is True else value.isoformat() if isinstance(value, date) else str(value)
    return params


class MeteringClient:
    """The same public methods and return types as `Metering`, through a node's HTTP API.

    `http` lets the caller supply the httpx client (e.g. Starlette's TestClient
    for an in-process app); otherwise one keep-alive client is made for `base_url`.
    """

    def __init__(
        self,
        base_url: str = "http://localhost:8005",
        *,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        http: httpx.Client | None = None,
    ) -> None:
        headers = {"Accept": "application/json", "User-Agent": "usage-metering-client"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self.base_url = base_url.rstrip("/")
        self.http = http if http is not None else httpx.Client(base_url=self.base_url, timeout=timeout)
        self.http.headers.update(headers)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> MeteringClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- transport -------------------------------------------------------------------

    def send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
    ) -> httpx.Response:
        """One request; the answer whatever its status (see `raise_for_answer`). Bodies are sent exact."""
        content = None
        headers = {}
        if body is not None:
            content = exact_json(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            return self.http.request(method, path, params=params, content=content, headers=headers)
        except httpx.TransportError as error:
            raise MeteringUnreachable(f"cannot reach {self.base_url}: {error or type(error).__name__}") from None

    def _call(self, shape: type[T], method: str, path: str, *, key: str | None = None, **options: Any) -> T:
        """Send, raise for an error answer, and read the body (or its `key` field) as `shape`."""
        response = self.send(method, path, **options)
        raise_for_answer(response)
        data = response.json()
        return from_json_data(shape, data[key] if key is not None else data)

    # -- recording ---------------------------------------------------------------------

    def record_events(self, items: Sequence[Mapping[str, Any] | UsageEvent]) -> list[EventResult]:
        """One batch; a result per event, in order (rejected events are results, not exceptions)."""
        if not items:
            return []
        events = [item.to_json_dict() if isinstance(item, UsageEvent) else item for item in items]
        return self._call(list[EventResult], "POST", "/api/events/batch", body={"events": events}, key="results")

    def record(self, item: Mapping[str, Any] | UsageEvent) -> EventResult:
        """Record one event; raises ValidationError if it is invalid. A blocked event is a result."""
        event = item.to_json_dict() if isinstance(item, UsageEvent) else item
        response = self.send("POST", "/api/events", body=event)
        if response.status_code == 429:
            answer = response.json()
            error: ErrorDetail = from_json_data(ErrorDetail, answer["error"])
            return EventResult(0, answer.get("event_id"), EventStatus.BLOCKED, error)
        raise_for_answer(response)
        answer = response.json()
        return EventResult(0, answer["event_id"], EventStatus(answer["status"]))

    # -- reading -------------------------------------------------------------------------

    def tenant(self, tenant_id: str) -> Tenant:
        return self._call(Tenant, "GET", f"/api/tenants/{_segment(tenant_id)}")

    def tenants(self) -> list[Tenant]:
        return self._call(list[Tenant], "GET", "/api/tenants", key="tenants")

    def usage(
        self,
        tenant_id: str,
        metric: str,
        *,
        period: str | None = None,
        start: date | None = None,
        end: date | None = None,
        daily: bool = False,
    ) -> UsageSummary:
        params = _query(period=period, daily=daily, **{"from": start, "to": end})
        return self._call(UsageSummary, "GET", f"/api/usage/{_segment(tenant_id)}/{_segment(metric)}", params=params)

    def usage_all(
        self, tenant_id: str, *, period: str | None = None, start: date | None = None, end: date | None = None
    ) -> TenantUsage:
        params = _query(period=period, **{"from": start, "to": end})
        return self._call(TenantUsage, "GET", f"/api/usage/{_segment(tenant_id)}", params=params)

    def quota(self, tenant_id: str, metric: str) -> QuotaStatus:
        return self._call(QuotaStatus, "GET", f"/api/quota/{_segment(tenant_id)}/{_segment(metric)}")

    def top_users(self, tenant_id: str, metric: str, *, limit: int = 10, period: str | None = None) -> TopUsers:
        path = f"/api/top-users/{_segment(tenant_id)}/{_segment(metric)}"
        return self._call(TopUsers, "GET", path, params=_query(limit=limit, period=period))

    def billing_report(self, tenant_id: str | None = None, period: str | None = None) -> list[Invoice]:
        body = {name: value for name, value in (("tenant_id", tenant_id), ("period", period)) if value is not None}
        return self._call(list[Invoice], "POST", "/api/billing-report", body=body, key="invoices")

    def dead_letters(self, limit: int = 100) -> list[StoredDeadLetter]:
        return self._call(
            list[StoredDeadLetter], "GET", "/api/dead-letters", params=_query(limit=limit), key="dead_letters"
        )

    def alerts(self, tenant_id: str | None = None, status: str | None = None, limit: int = 1000) -> list[Alert]:
        params = _query(tenant_id=tenant_id, status=status, limit=limit)
        return self._call(list[Alert], "GET", "/api/alerts", params=params, key="alerts")

    # -- configuration -------------------------------------------------------------------

    def save_plan(self, plan: Plan | Mapping[str, Any]) -> Plan:
        data = _as_mapping(plan)
        return self._call(Plan, "PUT", f"/api/plans/{_segment(_id_in(data, 'plan_id'))}", body=data)

    def plans(self) -> list[Plan]:
        return self._call(list[Plan], "GET", "/api/plans", key="plans")

    def plan(self, plan_id: str, version: int | None = None) -> Plan:
        return self._call(Plan, "GET", f"/api/plans/{_segment(plan_id)}", params=_query(version=version))

    def save_tenant(self, tenant: Tenant | Mapping[str, Any]) -> Tenant:
        data = _as_mapping(tenant)
        return self._call(Tenant, "PUT", f"/api/tenants/{_segment(_id_in(data, 'tenant_id'))}", body=data)

    def define_metric(self, metric: MetricDefinition | Mapping[str, Any]) -> MetricDefinition:
        data = _as_mapping(metric)
        return self._call(MetricDefinition, "PUT", f"/api/metrics/{_segment(_id_in(data, 'name'))}", body=data)

    def metrics(self) -> list[MetricDefinition]:
        return self._call(list[MetricDefinition], "GET", "/api/metrics", key="metrics")

    # -- API keys ------------------------------------------------------------------------

    def create_api_key(self, name: str, scope: str, tenant_id: str | None = None) -> tuple[ApiKey, str]:
        """The new key and its token (shown once, never stored)."""
        body = {"name": name, "scope": scope, **({"tenant_id": tenant_id} if tenant_id is not None else {})}
        response = self.send("POST", "/api/keys", body=body)
        raise_for_answer(response)
        answer = response.json()
        key: ApiKey = from_json_data(ApiKey, answer)
        return key, answer["token"]

    def list_api_keys(self) -> list[ApiKey]:
        return self._call(list[ApiKey], "GET", "/api/keys", key="keys")

    def revoke_api_key(self, key_id: str) -> ApiKey:
        return self._call(ApiKey, "DELETE", f"/api/keys/{_segment(key_id)}")


def _as_mapping(value: JsonShape | Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(value, Mapping):
        return value
    if isinstance(value, JsonShape):
        return value.to_json_dict()
    raise ValidationError(None, "must be a JSON object", "invalid_type")


def _id_in(data: Mapping[str, Any], field: str) -> str:
    """The id that goes in the URL; the same checks the library applies to the body."""
    return check_id(field, data.get(field)) or ""
