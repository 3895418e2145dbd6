"""Delivering quota alerts to webhooks: signed JSON POSTs, retried with backoff until a 2xx.

The ingestor writes each crossed threshold to the `alerts` table in the same
transaction as the usage that crossed it (an outbox). `WebhookDispatcher`, a
thread the node starts, POSTs pending alerts and records every attempt in
DuckDB, so delivery survives receiver downtime and node restarts. Delivery is
at-least-once (a crash between the receiver's 2xx and the status update sends
the alert again): receivers deduplicate on `alert_id`.

Signing: `X-Usage-Metering-Timestamp: <unix seconds>` and
`X-Usage-Metering-Signature: sha256=<hex>` where hex is HMAC-SHA256 with the
secret over `<timestamp>.` followed by the exact body bytes. The timestamp is
signed so a captured request cannot be replayed later under a fresh timestamp;
receivers should refuse timestamps older than a few minutes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import httpx

from usage_metering.metering import Metering
from usage_metering.schemas import ValidationError
from usage_metering.schemas.plan import parse_webhook_url
from usage_metering.store.alerts import Alert
from usage_metering.utilities import PeriodicTask

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Usage-Metering-Signature"
TIMESTAMP_HEADER = "X-Usage-Metering-Timestamp"
SECRET_ENV = "USAGE_METERING_WEBHOOK_SECRET"
SECRET_FILE_SUFFIX = ".webhook-secret"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header value for `body` sent at `timestamp` (unix seconds as text)."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify(secret: str, timestamp: str, body: bytes, signature: str) -> bool:
    """What a receiver does (in constant time); here for tests and as a reference."""
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


def resolve_secret(db_path: str | Path, given: str | None = None) -> str:
    """The signing secret: `given`, else $USAGE_METERING_WEBHOOK_SECRET, else one kept next to the database.

    The generated secret is written once to `<db>.webhook-secret` (mode 0600) and
    reused on every start, so receivers keep verifying across restarts. Its path
    is logged when it is created; the secret itself never is.
    """
    secret = given or os.environ.get(SECRET_ENV)
    if secret:
        return secret
    path = Path(f"{db_path}{SECRET_FILE_SUFFIX}")
    if path.exists():
        return path.read_text().strip()
    secret = secrets.token_hex(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(secret + "\n")
    log.warning("generated a webhook signing secret in %s (set %s to choose your own)", path, SECRET_ENV)
    return secret


@dataclass(frozen=True)
class WebhookSettings:
    secret: str
    url: str | None = None  # for tenants without their own webhook_url
    retry_base_seconds: float = 1.0  # first retry after this, doubling each time
    retry_max_seconds: float = 300.0
    timeout_seconds: float = 5.0
    poll_seconds: float = 0.2  # how often pending alerts are looked for

    def __post_init__(self) -> None:
        parse_webhook_url("webhook_url", self.url)
        if not self.secret:
            raise ValidationError("webhook_secret", "must not be empty", "invalid_secret")

    def retry_delay(self, attempts: int) -> float:
        """Seconds to wait after the `attempts`-th failed attempt: exponential, capped."""
        return min(self.retry_base_seconds * 2.0 ** max(attempts - 1, 0), self.retry_max_seconds)


def webhook_settings(
    db_path: str | Path,
    url: str | None,
    secret: str | None,
    retry_base_seconds: float = 1.0,
    retry_max_seconds: float = 300.0,
) -> WebhookSettings:
    """The node's settings; the URL is checked before a secret is read or generated."""
    checked_url = parse_webhook_url("webhook_url", url)
    return WebhookSettings(resolve_secret(db_path, secret), checked_url, retry_base_seconds, retry_max_seconds)


class DeliveryError(Exception):
    pass


def alert_body(alert: Alert) -> bytes:
    return json.dumps(alert.payload(), separators=(",", ":"), sort_keys=True).encode()


def post_signed(http: httpx.Client, url: str, body: bytes, secret: str) -> int:
    """POST `body` once; return the 2xx status or raise DeliveryError. Redirects are not followed."""
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "usage-metering-webhooks",
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: sign(secret, timestamp, body),
    }
    try:
        response = http.post(url, content=body, headers=headers)
    except httpx.HTTPError as error:
        raise DeliveryError(f"{type(error).__name__}: {error}") from None
    if not response.is_success:
        raise DeliveryError(f"HTTP {response.status_code}")
    return response.status_code


class WebhookDispatcher:
    """A thread that delivers due alerts, oldest due first, one at a time."""

    def __init__(self, metering: Metering, settings: WebhookSettings) -> None:
        self.metering = metering
        self.settings = settings
        self._task = PeriodicTask("webhooks", settings.poll_seconds, self.deliver_due)
        self._http = httpx.Client(timeout=settings.timeout_seconds, follow_redirects=False)

    def start(self) -> WebhookDispatcher:
        if not self._task.running:
            if self._http.is_closed:  # started again after a stop
                self._http = httpx.Client(timeout=self.settings.timeout_seconds, follow_redirects=False)
            self._task.start()
        return self

    def stop(self) -> None:
        """Finish the attempt in flight (and record it), then stop."""
        if self._task.running:
            self._task.stop()
            self._http.close()

    def deliver_due(self) -> int:
        """One pass over the due alerts; returns how many were delivered."""
        due = self.metering.node.due_alerts(self.settings.url)
        delivered = 0
        for alert, url in due:
            if self._task.stopping:
                break
            delivered += self._attempt(alert, url)
        return delivered

    def _attempt(self, alert: Alert, url: str) -> int:
        try:
            post_signed(self._http, url, alert_body(alert), self.settings.secret)
        except DeliveryError as error:
            delay = self.settings.retry_delay(alert.attempts + 1)
            retry_at = self.metering.clock() + timedelta(seconds=delay)
            self.metering.node.mark_alert_failed(alert, str(error), retry_at)
            log.warning(
                "alert %s to %s failed (%s); attempt %d, next in %.1fs",
                alert.alert_id,
                url,
                error,
                alert.attempts + 1,
                delay,
            )
            return 0
        self.metering.node.mark_alert_delivered(alert)
        log.info("alert %s delivered to %s", alert.alert_id, url)
        return 1
