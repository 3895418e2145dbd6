"""`/metrics`, `/readyz` and request ids for an app: `install_observability(app, metering)`.

Kafka mode plugs in later through the two hooks on `Observability`:
`set_lag_source(consumer.lag)` and `add_readiness_check("kafka_partitions", ...)`.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response

from usage_metering.metering import Metering

from .metrics import LagSource, PrometheusMetrics
from .models import Readiness, typed_response
from .request_context import RequestIdMiddleware

ReadinessCheck = Callable[[], bool]


class Observability:
    """One app's metrics and readiness checks (`app.state.observability`)."""

    def __init__(self, metering: Metering) -> None:
        self.metrics = PrometheusMetrics(metering.path)
        self._checks: dict[str, ReadinessCheck] = {"ingestor": lambda: metering.node.writing}

    def add_readiness_check(self, name: str, check: ReadinessCheck) -> None:
        """/readyz answers 503 while `check()` is false (or raises), naming `name` as what it waits for."""
        self._checks[name] = check

    def set_lag_source(self, source: LagSource | None) -> None:
        self.metrics.set_lag_source(source)

    def waiting_for(self) -> list[str]:
        """Names of the checks that do not pass yet (empty: ready)."""
        return [name for name, check in self._checks.items() if not _passes(check)]


def _passes(check: ReadinessCheck) -> bool:
    try:
        return bool(check())
    except Exception:
        return False


def _observability(request: Request) -> Observability:
    observability: Observability = request.app.state.observability
    return observability


async def metrics_endpoint(request: Request) -> Response:
    body, content_type = _observability(request).metrics.render()
    return Response(body, headers={"Content-Type": content_type})


async def readyz(request: Request) -> Response:
    waiting = _observability(request).waiting_for()
    if waiting:
        return typed_response(Readiness("waiting", waiting), 503)
    return typed_response(Readiness("ready"))


def install_observability(app: Starlette, metering: Metering) -> Observability:
    """Request-id middleware and a metrics observer on `metering` (the routes are the app's:
    `metrics_endpoint`, `readyz`); call once per app, before it starts."""
    observability = Observability(metering)
    metering.node.observe(observability.metrics)
    app.state.observability = observability
    app.add_middleware(RequestIdMiddleware)
    return observability
