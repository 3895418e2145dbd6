"""Quota checks in a cluster: asked of the node that owns the tenant's Kafka partition.

That node's counters are exact and current; the node asked first answers from the lake instead (with
`as_of` now) when the owner cannot be reached in time or fails (5xx), or when the question was already
forwarded once (no loops during a rebalance). The answer says where it came from: `counters` (this
node owns the tenant), `owner <url>` (forwarded) or `lake`; None outside a cluster.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote

import httpx

from .client import raise_for_answer
from .metering import Metering
from .reports.quota import QuotaStatus
from .schemas.wire import from_json_data

log = logging.getLogger(__name__)

FORWARDED_HEADER = "x-usage-metering-forwarded"
OWNER_TIMEOUT_SECONDS = 2.0
PASSED_ON_HEADERS = ("authorization", "x-request-id")  # the caller's credentials and request id


@dataclass(frozen=True)
class QuotaAnswer:
    status: QuotaStatus
    source: str | None  # counters, owner <url>, lake; None: not a cluster node

    @property
    def from_local_counters(self) -> bool:
        return self.source in (None, "counters")


class QuotaForwarding:
    """Answers quota checks for a node, asking owner nodes over one keep-alive HTTP client."""

    def __init__(self, metering: Metering) -> None:
        self.metering = metering
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()

    def local_answer(self, tenant_id: str, metric: str) -> QuotaAnswer | None:
        """From this node's own counters, with no I/O; None when another node owns the tenant."""
        owned = self.metering.node.owns_partition_of(tenant_id)
        if owned is False:
            return None
        return QuotaAnswer(self.metering.quota(tenant_id, metric), None if owned is None else "counters")

    def remote_answer(
        self, tenant_id: str, metric: str, *, passed_on: Mapping[str, str], forwarded: bool = False
    ) -> QuotaAnswer:
        """For a tenant another node owns: that node's answer (unless this question was forwarded already),
        else the lake's. `passed_on`: the caller's headers to pass to the owner (PASSED_ON_HEADERS)."""
        if not forwarded:
            owner = self.metering.node.quota_owner(tenant_id)
            status = self._ask(owner, tenant_id, metric, passed_on) if owner is not None else None
            if status is not None:
                return QuotaAnswer(status, f"owner {owner}")
        return QuotaAnswer(self.metering.quota(tenant_id, metric), "lake")

    def _ask(self, owner_url: str, tenant_id: str, metric: str, passed_on: Mapping[str, str]) -> QuotaStatus | None:
        """The owner's answer; None when it did not answer in time or failed. Its 4xx answers raise what
        the library raises for them."""
        headers = {**passed_on, FORWARDED_HEADER: "1"}
        url = f"{owner_url.rstrip('/')}/api/quota/{quote(tenant_id, safe='')}/{quote(metric, safe='')}"
        try:
            answer = self._http().get(url, headers=headers)
        except httpx.HTTPError as exc:
            log.warning("owner %s did not answer (%r); answering from the lake", owner_url, exc)
            return None
        if answer.status_code >= 500:
            log.warning("owner %s answered %d; answering from the lake", owner_url, answer.status_code)
            return None
        raise_for_answer(answer)
        return from_json_data(QuotaStatus, answer.json())

    def _http(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                self._client = httpx.Client(timeout=OWNER_TIMEOUT_SECONDS)
            return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
