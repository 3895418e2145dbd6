"""A real webhook receiver for alert tests: http.server on 127.0.0.1, recording every POST."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from support.nodes import free_port
from usage_metering.node.webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes
    answered: int


class Receiver:
    """http.server on 127.0.0.1 that records every POST and answers `status`."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port if port is not None else free_port()
        self.status = 204
        self.deliveries: list[Delivery] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/quota"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status = receiver.status
                with receiver._lock:
                    receiver.deliveries.append(Delivery({k.lower(): v for k, v in self.headers.items()}, body, status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def accepted(self) -> list[Delivery]:
        with self._lock:
            return [d for d in self.deliveries if 200 <= d.answered < 300]


def signature_of(delivery: Delivery, secret: str) -> str:
    """What a receiver computes: HMAC-SHA256 over '<timestamp>.' + the raw body bytes."""
    signed = delivery.headers[TIMESTAMP_HEADER.lower()].encode() + b"." + delivery.body
    return "sha256=" + hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def assert_signed(delivery: Delivery, secret: str) -> dict[str, Any]:
    assert hmac.compare_digest(delivery.headers[SIGNATURE_HEADER.lower()], signature_of(delivery, secret))
    assert abs(int(delivery.headers[TIMESTAMP_HEADER.lower()]) - time.time()) < 60
    return json.loads(delivery.body)
