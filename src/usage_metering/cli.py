"""The `usage-metering` command line: a thin click layer over the `Metering` library.

Every command works two ways with the same output:

- on the database file (``--db``, default ``data/metering.duckdb``), through
  ``Metering.open`` in this process, when no node is running; or
- against a running node over HTTP (``--url http://HOST:PORT``, optionally
  ``--api-key``), since DuckDB allows one writer process per file.

Both go through a `Backend` that returns the library's JSON shapes
(``to_json_dict()``), so ``--format json|csv|table`` renders the same data
whatever the transport.

Exit codes:

- 0: success.
- 1: the request was understood but could not be done: an unknown tenant, plan
  or metric; an event blocked by a quota; any event of ``record --file``
  rejected or blocked; the database file held by another process (the message
  suggests ``--url``); the server refused the API key.
- 2: invalid input: a bad option or argument (click's usage errors) or a value
  the library refuses (``Error: <field>: <message>``).
- 3: the server could not be reached or failed (connection error, HTTP 5xx).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator, Mapping, Sequence, TypeVar

import click
from click.core import ParameterSource

from . import __version__
from .metering import NotFoundError
from .reports.pricing import CSV_COLUMNS
from .schemas import DEFAULT_LATE_WINDOW, Aggregation, ValidationError
from .store.database import DEFAULT_DB_PATH, StoreLockedError

EXIT_FAILED = 1
EXIT_INVALID = 2
EXIT_UNAVAILABLE = 3

RECORD_CHUNK = 1000  # events per ingest batch (and per HTTP batch request)
SHOWN_PROBLEMS = 5  # rejection/block reasons listed after `record --file`
STATUSES = ("recorded", "duplicate", "blocked", "rejected")


class CliError(click.ClickException):
    """Printed as `Error: <message>` on stderr, no traceback; exits with `exit_code`."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# -- JSON ------------------------------------------------------------------------------


def load_json(text: str, what: str) -> Any:
    """Parse JSON with exact decimals (like the HTTP API); a syntax error is invalid input."""
    try:
        return json.loads(text, parse_float=Decimal)
    except ValueError as exc:
        raise CliError(f"{what} is not valid JSON: {exc}", EXIT_INVALID) from None


def dumps_exact(value: Any) -> str:
    """JSON text in which Decimals stay exact numbers (json.dumps would need floats)."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{json.dumps(str(k))}:{dumps_exact(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(dumps_exact(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


# -- backends: the library in this process, or a node over HTTP --------------------------


class LocalBackend:
    """The library on the database file; returns the JSON shapes the HTTP API returns."""

    def __init__(self, metering: Any) -> None:
        self.metering = metering

    def init_demo(self) -> dict[str, int]:
        from .demo import init_demo

        return init_demo(self.metering)

    def record(self, event: Mapping[str, Any]) -> dict[str, Any]:
        result = self.metering.record_events([event])[0]
        if result.error is not None:
            raise result.error
        return result.to_json_dict()

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
        from .reports.pricing import invoice_csv_rows

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
        return self.metering.dead_letters(limit)

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
    from .schemas import check_id

    if not isinstance(data, Mapping):
        raise ValidationError(None, "must be a JSON object", "invalid_type")
    return check_id(field, data.get(field)) or ""


@contextmanager
def open_backend(ctx: click.Context) -> Iterator[Any]:
    """HTTP when --url is given, else the library on the --db file (closed afterwards)."""
    options = ctx.find_root().obj
    if options["url"]:
        if ctx.find_root().get_parameter_source("late_window_days") is ParameterSource.COMMANDLINE:
            raise CliError("--late-window-days applies to the database file (--db); with --url the node's "
                           "own window applies (set it on its serve command)", EXIT_INVALID)
        yield HttpBackend(HttpClient(options["url"], options["api_key"]))
        return
    from .metering import Metering

    with Metering.open(options["db"], late_window=options["late_window"]) as metering:
        yield LocalBackend(metering)


# -- output ------------------------------------------------------------------------------

TABLE_CELL_MAX = 80


def _cell(value: Any, none: str) -> str:
    if value is None:
        return none
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _is_number(text: str) -> bool:
    try:
        Decimal(text)
    except ArithmeticError:
        return False
    return text[:1].isdigit() or text[:1] == "-"


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """Aligned columns with a header; numeric columns right-aligned, None as '-'."""
    cells = [[_cell(row.get(c), "-") for c in columns] for row in rows]
    cells = [[c if len(c) <= TABLE_CELL_MAX else c[: TABLE_CELL_MAX - 1] + "…" for c in line] for line in cells]
    widths = [max([len(column)] + [len(line[i]) for line in cells]) for i, column in enumerate(columns)]
    numeric = [
        any(_is_number(line[i]) for line in cells) and all(line[i] in ("-", "") or _is_number(line[i]) for line in cells)
        for i in range(len(columns))
    ]

    def render(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)]
        return "  ".join(parts).rstrip()

    lines = [render(list(columns)), "  ".join("-" * w for w in widths)]
    lines.extend(render(line) for line in cells)
    return "\n".join(lines)


def format_csv(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([_cell(row.get(c), "") for c in columns] for row in rows)
    return buffer.getvalue().rstrip("\n")


def emit(
    data: Any,
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    *,
    title: str | None = None,
) -> None:
    """Print `data` as JSON, or `rows` (flat dicts) as CSV or an aligned table."""
    output = click.get_current_context().find_root().obj["format"]
    if output == "json":
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
    elif output == "csv":
        click.echo(format_csv(rows, columns))
    else:
        if title:
            click.echo(title)
        click.echo(format_table(rows, columns))


def _flat_period(data: Mapping[str, Any]) -> dict[str, Any]:
    """`period: {start, end}` as period_start/period_end columns."""
    period = data.get("period") or {}
    flat = {k: v for k, v in data.items() if k != "period"}
    return {**flat, "period_start": period.get("start"), "period_end": period.get("end")}


USAGE_COLUMNS = ("tenant_id", "metric", "aggregation", "value", "event_count", "period_start", "period_end")
QUOTA_COLUMNS = (
    "tenant_id", "metric", "used", "limit", "remaining", "policy", "allowed", "period_start", "period_end", "as_of",
)
REPORT_TABLE_COLUMNS = (
    "tenant_id", "plan_id", "plan_version", "period_label", "currency", "row_type",
    "metric", "policy", "used", "included", "overage_quantity", "unit_price", "amount",
)
TOP_USER_COLUMNS = ("rank", "user_id", "value", "event_count")
PLAN_COLUMNS = ("plan_id", "version", "name", "currency", "base_fee", "metrics")
PLAN_METRIC_COLUMNS = ("plan_id", "version", "metric", "included", "policy", "unit_price", "tiers")
TENANT_COLUMNS = ("tenant_id", "name", "plan_id", "billing_anchor_day")
METRIC_COLUMNS = ("name", "aggregation", "unit", "description")
KEY_COLUMNS = ("key_id", "name", "scope", "tenant_id", "created_at", "revoked_at")
DEAD_LETTER_COLUMNS = ("id", "received_at", "source", "topic", "partition", "offset", "reason", "raw")
ALERT_COLUMNS = (
    "tenant_id", "metric", "threshold_percent", "used", "included", "period_start", "status", "attempts",
    "last_error", "created_at", "delivered_at",
)
RECORD_COLUMNS = ("event_id", "status")
SUMMARY_COLUMNS = ("recorded", "duplicates", "blocked", "rejected")


def _tiers_text(tiers: Sequence[Mapping[str, Any]]) -> str:
    return "; ".join(f"up to {t['up_to'] or 'unlimited'} at {t['unit_price']}" for t in tiers)


def emit_plan(plan: Mapping[str, Any]) -> None:
    rows = [
        {**m, "plan_id": plan["plan_id"], "version": plan["version"], "tiers": _tiers_text(m.get("tiers") or [])}
        for m in plan.get("metrics", [])
    ]
    title = (
        f"plan {plan['plan_id']} v{plan['version']}: {plan['name']} "
        f"({plan['currency']}, base fee {plan['base_fee']})"
    )
    emit(plan, rows, PLAN_METRIC_COLUMNS, title=title)


# -- the command group, with error handling ----------------------------------------------


class MeteringGroup(click.Group):
    """Turns the library's user errors into `Error: ...` lines and exit codes."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ValidationError as error:
            raise CliError(str(error), EXIT_INVALID) from None
        except NotFoundError as error:
            raise CliError(str(error), EXIT_FAILED) from None
        except StoreLockedError as error:
            raise CliError(str(error), EXIT_FAILED) from None


@click.group(cls=MeteringGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_DB_PATH,
    show_default=True,
    envvar="USAGE_METERING_DB",
    show_envvar=True,
    help="The DuckDB file, opened in this process (only when no node holds it).",
)
@click.option(
    "--url",
    metavar="URL",
    envvar="USAGE_METERING_URL",
    show_envvar=True,
    help="Talk to a running node over HTTP (e.g. http://127.0.0.1:8005) instead of opening --db.",
)
@click.option(
    "--api-key",
    metavar="KEY",
    envvar="USAGE_METERING_API_KEY",
    show_envvar=True,
    help="API key sent as 'Authorization: Bearer KEY' with --url.",
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["table", "json", "csv"], case_sensitive=False),
    default="table",
    show_default=True,
    help="Output: an aligned table, JSON (the API's shapes) or CSV with a header.",
)
@click.option(
    "--late-window-days",
    type=click.FloatRange(min=0, min_open=True),
    default=DEFAULT_LATE_WINDOW.total_seconds() / 86400,
    show_default=True,
    envvar="USAGE_METERING_LATE_WINDOW_DAYS",
    show_envvar=True,
    help="Accept event timestamps this many days old (serve, consume, record, import on --db; raise it to backfill).",
)
@click.version_option(__version__, prog_name="usage-metering")
@click.pass_context
def cli(ctx: click.Context, db: Path, url: str | None, api_key: str | None, output_format: str,
        late_window_days: float) -> None:
    """Usage metering: record usage events, check quotas, report usage and bills.

    Works on the DuckDB file (--db) when no node is running, or on a running
    node over HTTP (--url). Exit codes: 0 ok; 1 failed (unknown id, events
    rejected or blocked, database held by another process); 2 invalid input;
    3 server unreachable or failing.
    """
    ctx.obj = {"db": db, "url": url, "api_key": api_key, "format": output_format.lower(),
               "late_window": timedelta(days=late_window_days)}


log_format_option = click.option(
    "--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True,
    help="json: one JSON object per line (with a request_id and an access line per HTTP request).")
log_level_option = click.option(
    "--log-level", type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default="info", show_default=True, help="Least severe level logged.")

webhook_url_option = click.option(
    "--webhook-url", metavar="URL", help="Where quota alerts go for tenants without their own webhook_url.")
webhook_secret_option = click.option(
    "--webhook-secret", metavar="SECRET", envvar="USAGE_METERING_WEBHOOK_SECRET", show_envvar=True,
    help="HMAC key signing alert webhooks (default: generated once into <db>.webhook-secret).")


def require_file_mode(ctx: click.Context, command: str) -> None:
    if ctx.find_root().obj["url"]:
        raise CliError(f"{command} works on the database file (--db), not with --url", EXIT_INVALID)


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8005, show_default=True, type=click.IntRange(1, 65535), help="TCP port.")
@click.option("--init-demo", is_flag=True, help="Load the demo metrics, plans, tenants and events first.")
@log_format_option
@log_level_option
@webhook_url_option
@webhook_secret_option
@click.option("--snapshot-interval", type=click.FloatRange(min=0), default=300, show_default=True, metavar="SECONDS",
              help="Publish the read-only analyst snapshot this often (and at shutdown); 0 = never.")
@click.option("--snapshot-path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Snapshot file (default: <db stem>.snapshot.duckdb next to --db).")
@click.option("--kafka-bootstrap-servers", metavar="HOST:PORT[,...]", envvar="USAGE_METERING_KAFKA", show_envvar=True,
              help="Kafka mode: POST /api/events produces to Kafka (202 after acks=all) and this node consumes the topic.")
@click.option("--kafka-topic", default="usage-events", show_default=True, help="Usage events topic (Kafka mode).")
@click.pass_context
def serve(
    ctx: click.Context, host: str, port: int, init_demo: bool, log_format: str, log_level: str,
    webhook_url: str | None, webhook_secret: str | None, snapshot_interval: float, snapshot_path: Path | None,
    kafka_bootstrap_servers: str | None, kafka_topic: str,
) -> None:
    """Run the metering node: this process owns --db and serves the HTTP API.

    Also serves GET /metrics (Prometheus), /healthz (liveness) and /readyz (readiness),
    and POSTs quota alerts to webhooks.
    """
    require_file_mode(ctx, "serve")
    from .api.server import run_server

    options = ctx.find_root().obj
    run_server(options["db"], host, port, init_demo, log_level=log_level.lower(), log_format=log_format,
               late_window=options["late_window"],
               webhook_url=webhook_url, webhook_secret=webhook_secret,
               snapshot_interval=snapshot_interval, snapshot_path=snapshot_path,
               kafka_bootstrap_servers=kafka_bootstrap_servers, kafka_topic=kafka_topic)


@cli.command("init-demo")
@click.pass_context
def init_demo_command(ctx: click.Context) -> None:
    """Create the demo metrics, plans and tenants and record sample events (safe to repeat)."""
    require_file_mode(ctx, "init-demo")
    with open_backend(ctx) as backend:
        counts = backend.init_demo()
    data = {status: counts.get(status, 0) for status in STATUSES}
    emit(data, [data], STATUSES)


# -- record ------------------------------------------------------------------------------


def _parse_properties(pairs: Sequence[str]) -> dict[str, str] | None:
    properties: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not key=value", param_hint="'--property'")
        properties[key] = value
    return properties or None


def _quantity(text: str | None) -> Decimal | str | None:
    """A number as an exact JSON number (like a JSON client sends); anything else as text for the library to judge."""
    if text is not None and re.fullmatch(r"-?[0-9]+(\.[0-9]+)?", text.strip()):
        return Decimal(text.strip())
    return text


def _read_lines(stream: IO[str], on_bytes: Callable[[int], None]) -> Iterator[tuple[int, str, Any]]:
    """(line number, the line, parsed JSON or a ValidationError) for each non-blank line."""
    for number, line in enumerate(stream, start=1):
        on_bytes(len(line.encode("utf-8", "replace")))
        if not line.strip():
            continue
        try:
            yield number, line, json.loads(line, parse_float=Decimal)
        except ValueError as exc:
            yield number, line, ValidationError(None, f"not valid JSON: {exc}", "malformed_json")


def _read_events(stream: IO[str], on_bytes: Callable[[int], None]) -> Iterator[tuple[int, Any]]:
    """(line number, parsed JSON or a ValidationError) for each non-blank line."""
    for number, _line, item in _read_lines(stream, on_bytes):
        yield number, item


def record_stream(backend: Any, stream: IO[str], on_bytes: Callable[[int], None]) -> dict[str, Any]:
    """Record the JSON-lines events in chunks; counts plus the first few problems."""
    counts = dict.fromkeys(STATUSES, 0)
    problems: list[dict[str, Any]] = []

    def note(line: int, result: Mapping[str, Any]) -> None:
        counts[result["status"]] += 1
        if result["status"] in ("rejected", "blocked") and len(problems) < SHOWN_PROBLEMS:
            problems.append({"line": line, "event_id": result.get("event_id"), "status": result["status"],
                             "error": result.get("error")})

    def flush(chunk: list[tuple[int, Any]]) -> None:
        """Record the chunk's valid JSON lines; note every line's outcome in file order."""
        valid = [event for _, event in chunk if not isinstance(event, ValidationError)]
        results = iter(backend.record_batch(valid) if valid else [])
        for line, event in chunk:
            if isinstance(event, ValidationError):
                note(line, {"event_id": None, "status": "rejected", "error": event.as_dict()})
            else:
                note(line, next(results))

    for chunk in chunked(_read_events(stream, on_bytes), RECORD_CHUNK):
        flush(chunk)
    return {**status_summary(counts), "problems": problems}


T = TypeVar("T")


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of at most `size` items (the last may be shorter)."""
    chunk: list[T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def status_summary(counts: Mapping[str, int]) -> dict[str, int]:
    """Per-status counts as the record/import summaries print them."""
    return {
        "recorded": counts["recorded"],
        "duplicates": counts["duplicate"],
        "blocked": counts["blocked"],
        "rejected": counts["rejected"],
    }


def _problem_text(problem: Mapping[str, Any]) -> str:
    error = problem.get("error") or {}
    reason = error.get("message") or problem["status"]
    if error.get("field"):
        reason = f"{error['field']}: {reason}"
    return f"line {problem['line']}: {problem['status']}: {reason}"


@cli.command()
@click.option("--tenant", "tenant_id", metavar="TENANT", help="Tenant the usage is billed to.")
@click.option("--metric", metavar="METRIC", help="What was used, e.g. api_calls.")
@click.option("--quantity", metavar="Q", help="How much was used: a decimal >= 0.")
@click.option("--user", "user_id", metavar="USER", help="The tenant's end user.")
@click.option("--event-id", metavar="ID", help="Idempotency key (a UUIDv7 is generated when absent).")
@click.option("--timestamp", metavar="TS", help="RFC 3339 time of the usage (default now).")
@click.option("--property", "properties", multiple=True, metavar="KEY=VALUE", help="A property (repeatable).")
@click.option(
    "--file",
    "events_file",
    type=click.File("r", encoding="utf-8"),
    help="Record JSON lines, one event object per line ('-' = stdin) instead of one event.",
)
@click.pass_context
def record(
    ctx: click.Context,
    tenant_id: str | None,
    metric: str | None,
    quantity: str | None,
    user_id: str | None,
    event_id: str | None,
    timestamp: str | None,
    properties: tuple[str, ...],
    events_file: IO[str] | None,
) -> None:
    """Record one usage event, or a file of them (--file).

    With --file, prints how many events were recorded, duplicates, blocked by a
    quota and rejected as invalid (with the first reasons); exits 1 if any event
    was rejected or blocked, the others are recorded all the same.
    """
    single = (tenant_id, metric, quantity, user_id, event_id, timestamp)
    if events_file is not None:
        if any(v is not None for v in single) or properties:
            raise click.UsageError("--file cannot be combined with single-event options")
        record_file(ctx, events_file)
        return
    if tenant_id is None and metric is None and quantity is None:
        raise click.UsageError("give --tenant, --metric and --quantity, or --file")
    event: dict[str, Any] = {"tenant_id": tenant_id, "metric": metric, "quantity": _quantity(quantity)}
    optional = {"user_id": user_id, "event_id": event_id, "timestamp": timestamp,
                "properties": _parse_properties(properties)}
    event.update({k: v for k, v in optional.items() if v is not None})
    with open_backend(ctx) as backend:
        result = backend.record(event)
    if result["status"] == "blocked":
        message = (result.get("error") or {}).get("message", "blocked by the quota")
        raise CliError(f"event {result.get('event_id')} blocked: {message}", EXIT_FAILED)
    data = {"event_id": result["event_id"], "status": result["status"]}
    emit(data, [data], RECORD_COLUMNS)


def record_file(ctx: click.Context, events_file: IO[str]) -> None:
    size = None
    if getattr(events_file, "name", "-") not in ("-", "<stdin>"):
        try:
            size = os.fstat(events_file.fileno()).st_size
        except (OSError, ValueError, io.UnsupportedOperation):
            size = None
    stderr = sys.stderr
    with open_backend(ctx) as backend:
        if size:
            with click.progressbar(length=size, label="Recording events", file=stderr) as bar:
                summary = record_stream(backend, events_file, bar.update)
        else:
            summary = record_stream(backend, events_file, lambda _n: None)
    emit(summary, [summary], SUMMARY_COLUMNS)
    if ctx.find_root().obj["format"] != "json":
        for problem in summary["problems"]:
            click.echo(_problem_text(problem), err=True)
        failed = summary["rejected"] + summary["blocked"]
        if failed > len(summary["problems"]):
            click.echo(f"... and {failed - len(summary['problems'])} more", err=True)
    if summary["rejected"] or summary["blocked"]:
        ctx.exit(EXIT_FAILED)


# -- reports -----------------------------------------------------------------------------

period_option = click.option("--period", metavar="YYYY-MM", help="Billing period starting in this month.")


def _day(value: datetime | None) -> date | None:
    return value.date() if value is not None else None


@cli.command()
@click.argument("tenant_id", metavar="TENANT")
@click.argument("metric", required=False)
@period_option
@click.option("--from", "start", type=click.DateTime(["%Y-%m-%d"]), metavar="YYYY-MM-DD", help="First day, YYYY-MM-DD (with --to).")
@click.option("--to", "end", type=click.DateTime(["%Y-%m-%d"]), metavar="YYYY-MM-DD", help="Last day, inclusive (with --from).")
@click.option("--daily", is_flag=True, help="Per-day values (with METRIC).")
@click.pass_context
def usage(
    ctx: click.Context,
    tenant_id: str,
    metric: str | None,
    period: str | None,
    start: datetime | None,
    end: datetime | None,
    daily: bool,
) -> None:
    """A tenant's usage of METRIC, or of every metric, in the current period.

    --period YYYY-MM picks another billing period, --from/--to a date range.
    """
    if period is not None and (start is not None or end is not None):
        raise click.UsageError("use --period or --from/--to, not both")
    if daily and metric is None:
        raise click.UsageError("--daily needs a METRIC")
    window = {"period": period, "start": _day(start), "end": _day(end)}
    with open_backend(ctx) as backend:
        if metric is None:
            summaries = backend.usage_all(tenant_id, **window)
            emit(summaries, [_flat_period(s) for s in summaries], USAGE_COLUMNS)
            return
        summary = backend.usage(tenant_id, metric, **window, daily=daily)
    if not daily:
        emit(summary, [_flat_period(summary)], USAGE_COLUMNS)
        return
    rows = [{"tenant_id": tenant_id, "metric": metric, **day} for day in summary.get("daily", [])]
    period_text = f"{summary['period']['start']} to {summary['period']['end']}"
    title = (
        f"{tenant_id} {metric} ({summary['aggregation']}) {period_text}: "
        f"{summary['value']} from {summary['event_count']} events"
    )
    emit(summary, rows, ("tenant_id", "metric", "date", "value", "event_count"), title=title)


@cli.command()
@click.argument("tenant_id", metavar="TENANT")
@click.argument("metric")
@click.pass_context
def quota(ctx: click.Context, tenant_id: str, metric: str) -> None:
    """Usage of METRIC in the current period against the tenant's plan quota."""
    with open_backend(ctx) as backend:
        status = backend.quota(tenant_id, metric)
    emit(status, [_flat_period(status)], QUOTA_COLUMNS)


@cli.command()
@click.option("--tenant", "tenant_id", metavar="TENANT", help="One tenant (default: all tenants).")
@period_option
@click.pass_context
def report(ctx: click.Context, tenant_id: str | None, period: str | None) -> None:
    """Billing report: one invoice per tenant with base fee, overage charges and total.

    CSV has one row per base fee, line item and total (amounts add up per invoice).
    """
    output = ctx.find_root().obj["format"]
    with open_backend(ctx) as backend:
        if output == "json":
            emit(backend.billing_report(tenant_id, period), [], CSV_COLUMNS)
            return
        rows = backend.billing_rows(tenant_id, period)
    emit(None, rows, CSV_COLUMNS if output == "csv" else REPORT_TABLE_COLUMNS)


@cli.command("top-users")
@click.argument("tenant_id", metavar="TENANT")
@click.argument("metric")
@click.option("--limit", default=10, show_default=True, type=click.IntRange(1, 1000), help="How many users.")
@period_option
@click.pass_context
def top_users_command(ctx: click.Context, tenant_id: str, metric: str, limit: int, period: str | None) -> None:
    """A tenant's heaviest users of METRIC in the current (or given) period."""
    with open_backend(ctx) as backend:
        users = backend.top_users(tenant_id, metric, limit, period)
    emit(users, users, TOP_USER_COLUMNS)


@cli.command("dead-letters")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1, 10_000), help="How many, newest first.")
@click.pass_context
def dead_letters(ctx: click.Context, limit: int) -> None:
    """Input that could not become an event, with the reason (newest first)."""
    with open_backend(ctx) as backend:
        letters = backend.dead_letters(limit)
    emit(letters, letters, DEAD_LETTER_COLUMNS)


@cli.command()
@click.option("--tenant", "tenant_id", metavar="TENANT", help="One tenant (default: all tenants).")
@click.option("--status", type=click.Choice(["pending", "delivered"]), help="Only alerts with this delivery status.")
@click.option("--limit", default=1000, show_default=True, type=click.IntRange(1, 10_000), help="How many, newest first.")
@click.pass_context
def alerts(ctx: click.Context, tenant_id: str | None, status: str | None, limit: int) -> None:
    """Quota alerts: thresholds crossed per period, and whether their webhook was delivered."""
    with open_backend(ctx) as backend:
        items = backend.alerts(tenant_id, status, limit)
    emit(items, [_flat_period(a) for a in items], ALERT_COLUMNS)


# -- configuration -------------------------------------------------------------------------


@cli.group()
def plans() -> None:
    """Plans: price lists with quotas; every change makes a new version."""


@plans.command("list")
@click.pass_context
def plans_list(ctx: click.Context) -> None:
    """The current version of every plan."""
    with open_backend(ctx) as backend:
        items = backend.plans()
    rows = [{**p, "metrics": ",".join(m["metric"] for m in p.get("metrics", []))} for p in items]
    emit(items, rows, PLAN_COLUMNS)


@plans.command("show")
@click.argument("plan_id")
@click.option("--version", type=click.IntRange(min=1), help="An older version (default: the newest).")
@click.pass_context
def plans_show(ctx: click.Context, plan_id: str, version: int | None) -> None:
    """One plan with its metrics, quotas and prices."""
    with open_backend(ctx) as backend:
        plan = backend.plan(plan_id, version)
    emit_plan(plan)


@plans.command("set")
@click.argument("plan_file", metavar="FILE.json", type=click.File("r", encoding="utf-8"))
@click.pass_context
def plans_set(ctx: click.Context, plan_file: IO[str]) -> None:
    """Create a plan from a JSON file ('-' = stdin), or a new version if it changed."""
    data = load_json(plan_file.read(), getattr(plan_file, "name", "the plan file"))
    with open_backend(ctx) as backend:
        plan = backend.save_plan(data)
    emit_plan(plan)


def with_changes(current: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """`current` with the options the user gave (None = not given, keep the current value)."""
    return {**current, **{key: value for key, value in changes.items() if value is not None}}


@cli.group()
def tenants() -> None:
    """Tenants: the customers, each on a plan with a billing anchor day."""


@tenants.command("list")
@click.pass_context
def tenants_list(ctx: click.Context) -> None:
    """Every tenant."""
    with open_backend(ctx) as backend:
        items = backend.tenants()
    emit(items, items, TENANT_COLUMNS)


@tenants.command("show")
@click.argument("tenant_id", metavar="ID")
@click.pass_context
def tenants_show(ctx: click.Context, tenant_id: str) -> None:
    """One tenant."""
    with open_backend(ctx) as backend:
        tenant = backend.tenant(tenant_id)
    emit(tenant, [tenant], TENANT_COLUMNS)


@tenants.command("set")
@click.argument("tenant_id", metavar="ID")
@click.option("--name", help="Display name.")
@click.option("--plan", "plan_id", metavar="PLAN_ID", help="The plan the tenant is billed on.")
@click.option("--anchor-day", type=int, help="Day of month (1-31) billing periods start.")
@click.option("--webhook-url", metavar="URL", help="Where this tenant's quota alerts are POSTed ('' = none).")
@click.pass_context
def tenants_set(
    ctx: click.Context, tenant_id: str, name: str | None, plan_id: str | None, anchor_day: int | None,
    webhook_url: str | None = None,
) -> None:
    """Create a tenant, or change the given fields of an existing one."""
    changes = {"name": name, "plan_id": plan_id, "billing_anchor_day": anchor_day, "webhook_url": webhook_url}
    with open_backend(ctx) as backend:
        try:
            current = backend.tenant(tenant_id)
        except NotFoundError:
            current = {"tenant_id": tenant_id}
        tenant = backend.save_tenant(with_changes(current, changes))
    emit(tenant, [tenant], TENANT_COLUMNS)


@cli.group()
def metrics() -> None:
    """Metric definitions: how each metric's events aggregate."""


@metrics.command("list")
@click.pass_context
def metrics_list(ctx: click.Context) -> None:
    """Every defined metric (undefined metrics aggregate with SUM)."""
    with open_backend(ctx) as backend:
        items = backend.metrics()
    emit(items, items, METRIC_COLUMNS)


@metrics.command("define")
@click.argument("name")
@click.option(
    "--aggregation",
    type=click.Choice([a.value for a in Aggregation], case_sensitive=False),
    help="How events aggregate (new metrics default to SUM).",
)
@click.option("--unit", help="Unit shown in reports, e.g. calls or GB.")
@click.option("--description", help="What the metric measures.")
@click.pass_context
def metrics_define(
    ctx: click.Context, name: str, aggregation: str | None, unit: str | None, description: str | None
) -> None:
    """Define a metric, or change the given fields of an existing one."""
    changes = {"aggregation": aggregation.upper() if aggregation else None, "unit": unit, "description": description}
    with open_backend(ctx) as backend:
        current = next((m for m in backend.metrics() if m["name"] == name), {"name": name})
        metric = backend.define_metric(with_changes(current, changes))
    emit(metric, [metric], METRIC_COLUMNS)


@cli.group()
def keys() -> None:
    """API keys: once one exists, the HTTP API needs 'Authorization: Bearer <key>'."""


@keys.command("create")
@click.argument("name")
@click.option("--scope", type=click.Choice(["admin", "tenant"]), required=True, help="admin: everything; tenant: one tenant's events and reports.")
@click.option("--tenant", "tenant_id", metavar="TENANT", help="The tenant of a --scope tenant key.")
@click.pass_context
def keys_create(ctx: click.Context, name: str, scope: str, tenant_id: str | None) -> None:
    """Create a key and print its token: the only time it is shown (only a hash is stored)."""
    with open_backend(ctx) as backend:
        key = backend.create_key(name, scope, tenant_id)
    emit(key, [key], (*KEY_COLUMNS, "token"))
    click.echo("Store this token now: it is shown only once and cannot be recovered.", err=True)


@keys.command("list")
@click.pass_context
def keys_list(ctx: click.Context) -> None:
    """Every key, revoked ones included (never the tokens)."""
    with open_backend(ctx) as backend:
        items = backend.keys()
    emit(items, items, KEY_COLUMNS)


@keys.command("revoke")
@click.argument("key_id", metavar="KEY_ID")
@click.pass_context
def keys_revoke(ctx: click.Context, key_id: str) -> None:
    """Revoke a key: requests with it fail from now on."""
    with open_backend(ctx) as backend:
        key = backend.revoke_key(key_id)
    emit(key, [key], KEY_COLUMNS)


from .cli_analyst import export_command, import_command  # noqa: E402  (built on the helpers above)

cli.add_command(export_command)
cli.add_command(import_command)

from .cli_kafka import consume_command, kafka_group  # noqa: E402

cli.add_command(kafka_group)
cli.add_command(consume_command)


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point (`usage-metering`, `python -m usage_metering`)."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="usage-metering")


if __name__ == "__main__":
    main()
