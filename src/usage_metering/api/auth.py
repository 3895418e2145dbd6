"""Who may call what: `Authorization: Bearer <key>` and the per-route rules.

While no API key exists, authentication is off (the quick start works without
a key) and `run_node` binds to loopback only. Once a key exists, every
request needs a valid one, except `/healthz` and `/readyz` (probes carry no
data) and the dashboard's static page and assets (`/dashboard`,
`/dashboard/static/...`: they hold no data; the page asks for a key and sends
it with its API calls). `/metrics` and `/openapi.json` need a key too. Then:

- an **admin** key may call everything;
- a **tenant** key may record events for its own tenant and read its own
  usage, quota, top users and billing report; everything else (plans, metrics,
  tenants, dead letters, keys, and any route without a rule below) is admin-only.

The middleware answers 401 (with `WWW-Authenticate: Bearer`) for a missing,
malformed, unknown or revoked key and 403 for a route or a tenant in the URL
outside the key's scope. Tenants named in a request *body* are checked by the
handlers that parse the body (`check_event_tenants`, `report_tenant`), so a
batch with one foreign event is refused as a whole before anything is queued.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from usage_metering.access import Principal
from usage_metering.metering import Metering
from usage_metering.schemas import ErrorDetail, UsageEvent

from .errors import ApiError, error_response

log = logging.getLogger("usage_metering")

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/dashboard"})
OPEN_PREFIXES = ("/dashboard/static/",)
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
PRINCIPAL_SCOPE_KEY = "usage_metering.principal"

# Route rules for tenant keys; a (method, path template) not listed is admin-only.
ANY_KEY = "any_key"  # any valid key
TENANT_IN_PATH = "tenant_in_path"  # the {tenant_id} in the URL must be the key's tenant
TENANT_IN_BODY = "tenant_in_body"  # the handler checks the tenants named in the body
TENANT_RULES: dict[tuple[str, str], str] = {
    ("POST", "/api/events"): TENANT_IN_BODY,
    ("POST", "/api/events/batch"): TENANT_IN_BODY,
    ("POST", "/api/billing-report"): TENANT_IN_BODY,
    ("GET", "/api/usage/{tenant_id}"): TENANT_IN_PATH,
    ("GET", "/api/usage/{tenant_id}/{metric}"): TENANT_IN_PATH,
    ("GET", "/api/quota/{tenant_id}/{metric}"): TENANT_IN_PATH,
    ("GET", "/api/top-users/{tenant_id}/{metric}"): TENANT_IN_PATH,
    ("GET", "/openapi.json"): ANY_KEY,
}


def _unauthorized(message: str, code: str) -> Response:
    response = error_response(401, ErrorDetail(code, message, "Authorization"))
    challenge = 'Bearer realm="usage-metering"'
    if code == "invalid_key":
        challenge += ', error="invalid_token"'
    response.headers["WWW-Authenticate"] = challenge
    return response


def _forbidden(message: str, field: str | None = None) -> Response:
    return error_response(403, ErrorDetail("forbidden", message, field))


def is_open_path(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, else None."""
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        return None
    return token


def _matched_route(routes: Sequence[BaseRoute], scope: Scope) -> tuple[str, dict[str, Any]] | None:
    """(path template, path params) of the route that will serve this request, if any."""
    for route in routes:
        match, child = route.matches(scope)
        if match is Match.FULL:
            template = route.path if isinstance(route, Route) else scope["path"]
            return template, dict(child.get("path_params", {}))
    return None


def _refusal(principal: Principal, scope: Scope) -> Response | None:
    """A 403 when a tenant key may not call this route (or this URL's tenant); else None."""
    if principal.is_admin:
        return None
    matched = _matched_route(scope["app"].router.routes, scope)
    if matched is None:
        return None  # no such route: the router answers 404/405
    template, params = matched
    method = "GET" if scope["method"] == "HEAD" else scope["method"]
    rule = TENANT_RULES.get((method, template))
    if rule is None:
        return _forbidden(f"this key is scoped to tenant {principal.tenant_id!r}; {template} needs an admin key")
    if rule == TENANT_IN_PATH and params.get("tenant_id") != principal.tenant_id:
        return _forbidden(f"this key may only access tenant {principal.tenant_id!r}", "tenant_id")
    return None


class AuthMiddleware:
    """Authenticates every HTTP request (but the open probes) and applies the route rules."""

    def __init__(self, app: ASGIApp, metering: Metering) -> None:
        self.app = app
        self.metering = metering

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_open_path(scope["path"]) or not self.metering.access.enabled:
            await self.app(scope, receive, send)
            return
        refusal, principal = self._check(scope)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        scope[PRINCIPAL_SCOPE_KEY] = principal
        await self.app(scope, receive, send)

    def _check(self, scope: Scope) -> tuple[Response | None, Principal | None]:
        headers = dict(scope["headers"])
        raw = headers.get(b"authorization")
        if raw is None:
            return _unauthorized("an API key is required: send 'Authorization: Bearer <key>'", "missing_key"), None
        token = bearer_token(raw.decode("latin-1"))
        if token is None:
            return _unauthorized("the Authorization header must be 'Bearer <key>'", "malformed_authorization"), None
        principal = self.metering.authenticate(token)
        if principal is None:
            return _unauthorized("the API key is unknown or revoked", "invalid_key"), None
        return _refusal(principal, scope), principal


def principal_of(request: Request) -> Principal | None:
    """The caller's key, or None while authentication is off."""
    return request.scope.get(PRINCIPAL_SCOPE_KEY)


def check_event_tenants(request: Request, events: Sequence[Any]) -> None:
    """403 for the whole request if a tenant key sends an event for another tenant.

    Items are event objects (dicts) or already validated events. Items that are not objects are left to
    validation (they are rejected anyway).
    """
    principal = principal_of(request)
    if principal is None or principal.is_admin:
        return
    for index, event in enumerate(events):
        tenant_id: str | None
        if isinstance(event, UsageEvent):
            tenant_id = event.tenant_id
        elif isinstance(event, dict):
            tenant_id = event.get("tenant_id")
        else:
            continue
        if not principal.may_access(tenant_id):
            field = "tenant_id" if len(events) == 1 else f"events[{index}].tenant_id"
            raise ApiError(
                403, "forbidden", f"this key may only record events for tenant {principal.tenant_id!r}", field
            )


def report_tenant(request: Request, tenant_id: Any) -> Any:
    """The tenant a billing report covers: a tenant key's own tenant when none is given."""
    principal = principal_of(request)
    if principal is None or principal.is_admin:
        return tenant_id
    if tenant_id is None:
        return principal.tenant_id
    if not principal.may_access(tenant_id):
        raise ApiError(403, "forbidden", f"this key may only access tenant {principal.tenant_id!r}", "tenant_id")
    return tenant_id


def _is_loopback(host: str) -> bool:
    """localhost, ::1 or any 127.x.y.z (a test cluster puts its nodes on 127.0.0.1, .2, .3)."""
    if host in LOOPBACK_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serving_host(requested: str, metering: Metering) -> str:
    """The interface to bind: loopback only while authentication is off, with a log line saying why."""
    if metering.access.enabled:
        log.info("authentication is on: requests need 'Authorization: Bearer <key>' (except /healthz, /readyz)")
        return requested
    log.warning(
        "authentication is off: no API keys exist; create one with `usage-metering keys create NAME --scope admin`"
    )
    if _is_loopback(requested):
        return requested
    log.warning(
        "binding to 127.0.0.1 instead of %s: authentication is off (no API keys), so the API is not exposed "
        "beyond this machine until a key exists",
        requested,
    )
    return "127.0.0.1"
