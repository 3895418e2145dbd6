"""Quota checks in a cluster: asked of the node that owns the tenant's Kafka partition.

That node's counters are exact and current; the node asked first answers from
the lake instead (with `as_of` now) when the owner cannot be reached in time,
or when the question was already forwarded once (no loops during a
rebalance). The `X-Quota-Source` header says which: `counters` (this node
owns the tenant), `owner <url>` (forwarded) or `lake`.
"""

from __future__ import annotations

import logging

import httpx
from starlette.requests import Request
from starlette.responses import Response

log = logging.getLogger(__name__)

FORWARDED_HEADER = "x-usage-metering-forwarded"
SOURCE_HEADER = "x-quota-source"
OWNER_TIMEOUT_SECONDS = 2.0
_PASSED_ON = ("authorization", "x-request-id")


class OwnerClient:
    """One HTTP client (keep-alive connections to the other nodes) for the app's lifetime."""

    def __init__(self) -> None:
        self._client: httpx.AsyncClient | None = None

    async def ask(self, owner_url: str, request: Request) -> Response | None:
        """The owner's answer to this request (any status it gives), or None if it did not answer."""
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=OWNER_TIMEOUT_SECONDS)
        headers = {name: request.headers[name] for name in _PASSED_ON if name in request.headers}
        headers[FORWARDED_HEADER] = "1"
        try:
            answer = await self._client.get(f"{owner_url.rstrip('/')}{request.url.path}", headers=headers)
        except httpx.HTTPError as exc:
            log.warning("owner %s did not answer (%r); answering from the lake", owner_url, exc)
            return None
        if answer.status_code >= 500:
            log.warning("owner %s answered %d; answering from the lake", owner_url, answer.status_code)
            return None
        return Response(
            answer.content,
            status_code=answer.status_code,
            media_type=answer.headers.get("content-type"),
            headers={SOURCE_HEADER: f"owner {owner_url}"},
        )

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()


def was_forwarded(request: Request) -> bool:
    return FORWARDED_HEADER in request.headers
