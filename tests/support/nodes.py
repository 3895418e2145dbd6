"""The node under test: a real server process on a real DuckDB file, or the same app in-process.

`ServerProcess` runs `usage_metering.node.server.run_node(NodeConfig(...))` in a fresh
Python process (with `src/` on PYTHONPATH) and is talked to over a socket.
`InProcessNode` serves `create_app(...)` through Starlette's TestClient, for
the auth and 4xx matrices where a process per test buys nothing. Both answer
`request()` with the same (status, lower-cased headers, body) triple, and
`client()` gives the library's `MeteringClient` on either.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterator

import httpx
from starlette.testclient import TestClient

from usage_metering import Metering, MeteringClient
from usage_metering.api.app import create_app
from usage_metering.client import exact_json
from usage_metering.node.demo import init_demo
from usage_metering.store import Lake

SRC_DIR = Path(__file__).resolve().parents[2] / "src"  # tests/support/nodes.py
START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 30.0
REQUEST_TIMEOUT_SECONDS = 60.0

Answer = tuple[int, dict[str, str], Any]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def call(
    http: httpx.Client,
    method: str,
    url: str,
    json_body: Any = None,
    raw_body: bytes | str | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    """One request -> (status, lower-cased headers, body).

    A JSON body is sent with exact Decimals; the answer is parsed as JSON
    (fractions as Decimal) when it says application/json, else returned as text.
    """
    send_headers = dict(headers or {})
    content: bytes | str | None = raw_body
    if json_body is not None:
        content = exact_json(json_body)
        send_headers.setdefault("Content-Type", "application/json")
    response = http.request(method, url, content=content, headers=send_headers)
    answer_headers = {name.lower(): value for name, value in response.headers.items()}
    if answer_headers.get("content-type", "").startswith("application/json"):
        return response.status_code, answer_headers, json.loads(response.text, parse_float=Decimal)
    return response.status_code, answer_headers, response.text


def request(method: str, url: str, timeout: float = REQUEST_TIMEOUT_SECONDS, **options: Any) -> Answer:
    """`call` on a fresh connection (for one-off requests to a URL)."""
    with httpx.Client(timeout=timeout) as http:
        return call(http, method, url, **options)


class Answering:
    """`request()` on the node's httpx client `http` (a socket, or Starlette's TestClient)."""

    http: httpx.Client

    def request(
        self,
        method: str,
        path: str,
        json_body: Any = None,
        raw_body: bytes | str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        return call(self.http, method, path, json_body=json_body, raw_body=raw_body, headers=headers)


def wait_until_serving(base_url: str, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """Wait until a server started as a CLI process answers /healthz (fail if it exits or takes too long)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if request("GET", f"{base_url}/healthz")[0] == 200:
                return
        except httpx.TransportError:
            pass
        assert process.poll() is None and time.monotonic() < deadline, "server did not start"
        time.sleep(0.2)


# `ServerProcess` options: where each goes in the node's configuration (usage_metering.node.config).
_HTTP_OPTIONS = {"host": "host", "advertise_url": "advertise_url", "snapshot_interval": "snapshot_interval",
                 "snapshot_path": "snapshot_path"}
_WEBHOOK_OPTIONS = {"webhook_url": "url", "webhook_secret": "secret",
                    "webhook_retry_base_seconds": "retry_base_seconds", "webhook_retry_max_seconds": "retry_max_seconds"}
_KAFKA_OPTIONS = {"kafka_bootstrap_servers": "bootstrap_servers", "kafka_topic": "topic"}


def _arguments(options: dict[str, Any], names: dict[str, str]) -> str:
    return ", ".join(f"{names[name]}={value!r}" for name, value in options.items() if name in names)


def node_config_code(db_path: Path, port: int, demo: bool, lake: Lake | None, options: dict[str, Any]) -> str:
    """Python text building the NodeConfig a `serve` with these options builds (values as literals)."""
    unknown = set(options) - {*_HTTP_OPTIONS, *_WEBHOOK_OPTIONS, *_KAFKA_OPTIONS, "log_format", "log_level"}
    assert not unknown, f"not a node option: {sorted(unknown)}"
    http = f"HttpOptions(port={port}, {_arguments(options, _HTTP_OPTIONS)})"
    kafka = f"KafkaOptions({_arguments(options, _KAFKA_OPTIONS)})" if "kafka_bootstrap_servers" in options else "None"
    rest = "".join(f", {name}={options[name]!r}" for name in ("log_format", "log_level") if name in options)
    lake_text = "None" if lake is None else f"Lake({lake.catalog!r}, {lake.data_path!r})"
    return (
        f"NodeConfig(Path({str(db_path)!r}), lake={lake_text}, http={http}, kafka={kafka}, "
        f"webhooks=WebhookOptions({_arguments(options, _WEBHOOK_OPTIONS)}), demo={demo!r}{rest})"
    )


class ServerProcess(Answering):
    """`run_node(NodeConfig(...))` as `serve` builds it, in a subprocess, ready when /healthz answers.

    `options` are `serve`'s settings by their Python names (literals: they are written into
    the child's command line with repr), e.g. `{"log_format": "json"}`.
    """

    def __init__(
        self, db_path: str | Path, port: int | None = None, demo: bool = True, options: dict[str, Any] | None = None,
        lake: Lake | None = None,
    ) -> None:
        self.db_path = Path(db_path)
        self.lake = lake
        self.port = port if port is not None else free_port()
        self.demo = demo
        self.options = dict(options or {})
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="metering-server-", suffix=".log", delete=False)
        self.http = httpx.Client(base_url=self.url, timeout=REQUEST_TIMEOUT_SECONDS)

    # -- lifecycle -----------------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT_SECONDS) -> ServerProcess:
        code = (
            "import sys; from pathlib import Path; "
            "from usage_metering.node.config import HttpOptions, KafkaOptions, NodeConfig, WebhookOptions; "
            "from usage_metering.node.server import run_node; from usage_metering.store import Lake; "
            f"sys.exit(run_node({node_config_code(self.db_path, self.port, self.demo, self.lake, self.options)}))"
        )
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC_DIR), env.get("PYTHONPATH", "")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        self.process = subprocess.Popen(
            [sys.executable, "-c", code],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(SRC_DIR.parent),
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"server exited with code {self.process.returncode} before /healthz answered; "
                    f"output:\n{self.output()}"
                )
            try:
                status, _headers, body = request("GET", f"{self.url}/healthz", timeout=2)
                if status == 200 and isinstance(body, dict) and body.get("status") == "ok":
                    return self
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"server did not answer /healthz within {timeout:g}s; output:\n{self.output()}")
            time.sleep(0.1)

    def stop(self, timeout: float = STOP_TIMEOUT_SECONDS) -> int:
        """SIGTERM, wait, and assert a clean exit (code 0)."""
        assert self.process is not None, "server was not started"
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"server did not exit {timeout:g}s after SIGTERM; output:\n{self.output()}")
        assert code == 0, f"server exited with code {code} after SIGTERM; output:\n{self.output()}"
        return code

    def kill(self) -> int:
        """SIGKILL (kill -9): no shutdown code runs. Returns the exit code."""
        assert self.process is not None, "server was not started"
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        return self.process.wait(timeout=STOP_TIMEOUT_SECONDS)

    def close(self) -> None:
        """Teardown: make sure the process is gone (kill if still running) and drop the log."""
        if self.process is not None and self.process.poll() is None:
            self.kill()
        self.http.close()
        self._log.close()
        try:
            os.unlink(self._log.name)
        except OSError:
            pass

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def log_path(self) -> Path:
        """The file holding the child's stdout and stderr (all of it; `output()` gives the tail)."""
        return Path(self._log.name)

    def output(self) -> str:
        self._log.flush()
        try:
            return Path(self._log.name).read_text(errors="replace")[-20_000:]
        except OSError:
            return "<no output>"

    # -- convenience -----------------------------------------------------------------

    def client(self, api_key: str | None = None) -> MeteringClient:
        return MeteringClient(self.url, api_key=api_key)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def serving(process: ServerProcess) -> Iterator[ServerProcess]:
    """For fixtures (`yield from serving(...)`): start, hand over, stop with SIGTERM asserting exit 0."""
    try:
        process.start()
        yield process
        process.stop()
    finally:
        process.close()


class InProcessNode(Answering):
    """The node's HTTP app on a real DuckDB file, served in-process by Starlette's TestClient."""

    def __init__(self, db_path: str | Path, demo: bool = True, **options: Any) -> None:
        self.db_path = Path(db_path)
        self.metering = Metering.open(self.db_path, **options)
        if demo:
            init_demo(self.metering)
        self.app = create_app(self.metering)
        self.http = TestClient(self.app, raise_server_exceptions=False)

    def client(self, api_key: str | None = None) -> MeteringClient:
        return MeteringClient("http://testserver", api_key=api_key, http=TestClient(self.app))

    def close(self) -> None:
        self.http.close()
        self.metering.close()

    def __enter__(self) -> InProcessNode:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


Node = ServerProcess | InProcessNode
