"""The two backends a command can talk to: the library on the --db file, or a node over HTTP (--url).

Both return the library's JSON shapes (``to_json_dict()``), so ``--format
json|csv|table`` renders the same data whatever the transport.
"""

from __future__ import annotations

import csv
import io
import json
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager
from datetime import date
from decimal import Decimal
from typing import Any, Iterator, Mapping, Sequence

import click
from click.core import ParameterSource

from usage_metering.metering import NotFoundError
from usage_metering.schemas import ValidationError

from .common import EXIT_FAILED, EXIT_INVALID, EXIT_UNAVAILABLE, CliError, root_options


def dumps_exact(value: Any) -> str:
    """JSON text in which Decimals stay exact numbers (json.dumps would need floats)."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{json.dumps(str(k))}:{dumps_exact(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(dumps_exact(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


class LocalBackend:
    """The library on the database file; returns the JSON shapes the HTTP API returns."""

    def __init__(self, metering: Any) -> None:
        self.metering = metering

    def init_demo(self) -> dict[str, int]:
        from usage_metering.node.demo import init_demo

        return init_demo(self.metering)

    def record(self, event: Mapping[str, Any]) -> dict[str, Any]:
        return self.metering.record(event).to_json_dict()

    def record_batch(self, events: Sequence[Any]) -> list[dict[str, Any]]:
        return [result.to_json_dict() for result in self.metering.record_events(events)]

    def usage(self, tenant_id: str, metric: str, **window: Any) -> dict[str, Any]:
        return self.metering.usage(tenant_id, metric, **window).to_json_dict()

    def usage_all(self, tenant_id: str, **window: Any) -> list[dict[str, Any]]:
        return [s.to_json_dict() for s in self.metering.usage_all(tenant_id, **window).metrics]

    def quota(self, tenant_id: str, metric: str) -> dict[str, Any]:
        return self.metering.quota(tenant_id, metric).to_json_dict()

    def billing_report(self, tenant_id: str | None, period: str | None) -> list[dict[str, Any]]:
        return [invoice.to_json_dict() for invoice in self.metering.billing_report(tenant_id, period)]

    def billing_rows(self, tenant_id: str | None, period: str | None) -> list[dict[str, str]]:
        from usage_metering.reports.pricing import invoice_csv_rows

        return invoice_csv_rows(self.metering.billing_report(tenant_id, period))

    def top_users(self, tenant_id: str, metric: str, limit: int, period: str | None) -> list[dict[str, Any]]:
        ranking = self.metering.top_users(tenant_id, metric, limit=limit, period=period)
        return [user.to_json_dict() for user in ranking.users]

    def plans(self) -> list[dict[str, Any]]:
        return [plan.to_json_dict() for plan in self.metering.plans()]

    def plan(self, plan_id: str, version: int | None) -> dict[str, Any]:
        return self.metering.plan(plan_id, version).to_json_dict()

    def save_plan(self, data: Mapping[str, Any]) -> dict[str, Any]:
        return self.metering.save_plan(data).to_json_dict()

    def tenants(self) -> list[dict[str, Any]]:
        return [tenant.to_json_dict() for tenant in self.metering.tenants()]

    def tenant(self, tenant_id: str) -> dict[str, Any]:
        return self.metering.tenant(tenant_id).to_json_dict()

    def save_tenant(self, data: Mapping[str, Any]) -> dict[str, Any]:
        return self.metering.save_tenant(data).to_json_dict()

    def metrics(self) -> list[dict[str, Any]]:
        return [metric.to_json_dict() for metric in self.metering.metrics()]

    def define_metric(self, data: Mapping[str, Any]) -> dict[str, Any]:
        return self.metering.define_metric(data).to_json_dict()

    def dead_letters(self, limit: int) -> list[dict[str, Any]]:
        return [letter.to_json_dict() for letter in self.metering.dead_letters(limit)]

    def alerts(self, tenant_id: str | None, status: str | None, limit: int) -> list[dict[str, Any]]:
        return [alert.to_json_dict() for alert in self.metering.alerts(tenant_id, status, limit)]

    def create_key(self, name: str, scope: str, tenant_id: str | None) -> dict[str, Any]:
        key, token = self.metering.create_api_key(name, scope, tenant_id)
        return {**key.to_json_dict(), "token": token}

    def keys(self) -> list[dict[str, Any]]:
        return [key.to_json_dict() for key in self.metering.list_api_keys()]

    def revoke_key(self, key_id: str) -> dict[str, Any]:
        return self.metering.revoke_api_key(key_id).to_json_dict()


class HttpClient:
    """JSON over HTTP to a running node; error bodies become the CLI's errors."""

    def __init__(self, base_url: str, api_key: str | None = None, timeout: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        accept: Sequence[int] = (),
    ) -> tuple[int, Any]:
        """(status, parsed JSON or text). Statuses >= 400 raise unless listed in `accept`."""
        url = self.base_url + path
        params = {k: _query_value(v) for k, v in (query or {}).items() if v is not None and v is not False}
        if params:
            url += "?" + urllib.parse.urlencode(params)
        headers = {"Accept": "application/json"}
        data = None
        if body is not None:
            data = dumps_exact(body).encode()
            headers["Content-Type"] = "application/json"
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.status, _decode(response.headers.get_content_type(), response.read())
        except urllib.error.HTTPError as error:
            payload = _decode(error.headers.get_content_type(), error.read())
            if error.code in accept:
                return error.code, payload
            raise _http_error(error.code, payload) from None
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise CliError(f"cannot reach {self.base_url}: {reason}", EXIT_UNAVAILABLE) from None


def _query_value(value: Any) -> str:
    if value is True:
        return "true"
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _decode(content_type: str, raw: bytes) -> Any:
    text = raw.decode("utf-8", "replace")
    if content_type == "application/json":
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


def _http_error(status: int, payload: Any) -> Exception:
    """An HTTP error answer as the exception the library would have raised in-process."""
    error = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(error, dict):
        message = payload.strip() if isinstance(payload, str) and payload.strip() else "no details"
        return CliError(f"HTTP {status}: {message}", EXIT_UNAVAILABLE if status >= 500 else EXIT_FAILED)
    message = str(error.get("message") or f"HTTP {status}")
    field = error.get("field")
    code = str(error.get("code") or "")
    if status in (400, 413, 422):
        return ValidationError(field, message, code or "invalid_field")
    if status == 404 and code.startswith("unknown_"):
        missing = NotFoundError(code[len("unknown_"):], "")
        missing.args = (message,)  # the server's text: "unknown tenant 'x'"
        return missing
    if status >= 500 and code != "store_locked":
        return CliError(message, EXIT_UNAVAILABLE)
    return CliError(message, EXIT_FAILED)  # 401/403, 404 unknown_*, 409, store_locked


def _quoted(value: str) -> str:
    return urllib.parse.quote(value, safe="")


class HttpBackend:
    """The same operations as LocalBackend, through the node's HTTP API."""

    def __init__(self, client: HttpClient) -> None:
        self.client = client

    def _get(self, path: str, **query: Any) -> Any:
        return self.client.request("GET", path, query=query)[1]

    def init_demo(self) -> dict[str, int]:
        raise CliError("init-demo works on the database file; start the node with `serve --init-demo`", EXIT_INVALID)

    def record(self, event: Mapping[str, Any]) -> dict[str, Any]:
        status, body = self.client.request("POST", "/api/events", body=event, accept=(429,))
        if status == 429:
            return {"index": 0, "event_id": body.get("event_id"), "status": "blocked", "error": body.get("error")}
        return {"index": 0, **body}

    def record_batch(self, events: Sequence[Any]) -> list[dict[str, Any]]:
        return self.client.request("POST", "/api/events/batch", body={"events": list(events)})[1]["results"]

    def usage(self, tenant_id: str, metric: str, **window: Any) -> dict[str, Any]:
        query = {"period": window.get("period"), "from": window.get("start"), "to": window.get("end")}
        return self._get(f"/api/usage/{_quoted(tenant_id)}/{_quoted(metric)}", **query, daily=window.get("daily"))

    def usage_all(self, tenant_id: str, **window: Any) -> list[dict[str, Any]]:
        query = {"period": window.get("period"), "from": window.get("start"), "to": window.get("end")}
        return self._get(f"/api/usage/{_quoted(tenant_id)}", **query)["metrics"]

    def quota(self, tenant_id: str, metric: str) -> dict[str, Any]:
        return self._get(f"/api/quota/{_quoted(tenant_id)}/{_quoted(metric)}")

    def _report_body(self, tenant_id: str | None, period: str | None) -> dict[str, str]:
        return {k: v for k, v in (("tenant_id", tenant_id), ("period", period)) if v is not None}

    def billing_report(self, tenant_id: str | None, period: str | None) -> list[dict[str, Any]]:
        body = self._report_body(tenant_id, period)
        return self.client.request("POST", "/api/billing-report", body=body)[1]["invoices"]

    def billing_rows(self, tenant_id: str | None, period: str | None) -> list[dict[str, str]]:
        body = self._report_body(tenant_id, period)
        text = self.client.request("POST", "/api/billing-report", query={"format": "csv"}, body=body)[1]
        return list(csv.DictReader(io.StringIO(text)))

    def top_users(self, tenant_id: str, metric: str, limit: int, period: str | None) -> list[dict[str, Any]]:
        path = f"/api/top-users/{_quoted(tenant_id)}/{_quoted(metric)}"
        return self._get(path, limit=limit, period=period)["users"]

    def plans(self) -> list[dict[str, Any]]:
        return self._get("/api/plans")["plans"]

    def plan(self, plan_id: str, version: int | None) -> dict[str, Any]:
        return self._get(f"/api/plans/{_quoted(plan_id)}", version=version)

    def save_plan(self, data: Mapping[str, Any]) -> dict[str, Any]:
        plan_id = _required_id(data, "plan_id")
        return self.client.request("PUT", f"/api/plans/{_quoted(plan_id)}", body=data)[1]

    def tenants(self) -> list[dict[str, Any]]:
        return self._get("/api/tenants")["tenants"]

    def tenant(self, tenant_id: str) -> dict[str, Any]:
        return self._get(f"/api/tenants/{_quoted(tenant_id)}")

    def save_tenant(self, data: Mapping[str, Any]) -> dict[str, Any]:
        tenant_id = _required_id(data, "tenant_id")
        return self.client.request("PUT", f"/api/tenants/{_quoted(tenant_id)}", body=data)[1]

    def metrics(self) -> list[dict[str, Any]]:
        return self._get("/api/metrics")["metrics"]

    def define_metric(self, data: Mapping[str, Any]) -> dict[str, Any]:
        name = _required_id(data, "name")
        return self.client.request("PUT", f"/api/metrics/{_quoted(name)}", body=data)[1]

    def dead_letters(self, limit: int) -> list[dict[str, Any]]:
        return self._get("/api/dead-letters", limit=limit)["dead_letters"]

    def alerts(self, tenant_id: str | None, status: str | None, limit: int) -> list[dict[str, Any]]:
        return self._get("/api/alerts", tenant_id=tenant_id, status=status, limit=limit)["alerts"]

    def create_key(self, name: str, scope: str, tenant_id: str | None) -> dict[str, Any]:
        body = {"name": name, "scope": scope, **({"tenant_id": tenant_id} if tenant_id is not None else {})}
        return self.client.request("POST", "/api/keys", body=body)[1]

    def keys(self) -> list[dict[str, Any]]:
        return self._get("/api/keys")["keys"]

    def revoke_key(self, key_id: str) -> dict[str, Any]:
        return self.client.request("DELETE", f"/api/keys/{_quoted(key_id)}")[1]


def _required_id(data: Any, field: str) -> str:
    """The id that goes in the URL; the same checks the library applies to the body."""
    from usage_metering.schemas import check_id

    if not isinstance(data, Mapping):
        raise ValidationError(None, "must be a JSON object", "invalid_type")
    return check_id(field, data.get(field)) or ""


@contextmanager
def open_backend(ctx: click.Context) -> Iterator[Any]:
    """HTTP when --url is given, else the library on the --db file (closed afterwards)."""
    options = root_options(ctx)
    if options["url"]:
        if ctx.find_root().get_parameter_source("late_window_days") is ParameterSource.COMMANDLINE:
            raise CliError("--late-window-days applies to the database file (--db); with --url the node's "
                           "own window applies (set it on its serve command)", EXIT_INVALID)
        yield HttpBackend(HttpClient(options["url"], options["api_key"]))
        return
    from usage_metering.metering import Metering

    with Metering.open(options["db"], late_window=options["late_window"]) as metering:
        yield LocalBackend(metering)
