"""A real metering server in a subprocess, and a tiny standard-library HTTP client.

Used by the end-to-end tests: `ServerProcess` runs
`usage_metering.node.server.run_server(...)` in a fresh Python process (with
`src/` on PYTHONPATH) on a real DuckDB file, and `request()` talks to it over a
socket with `http.client`. No third-party dependencies.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterator

SRC_DIR = Path(__file__).resolve().parent.parent / "src"
START_TIMEOUT_SECONDS = 30.0
STOP_TIMEOUT_SECONDS = 30.0
REQUEST_TIMEOUT_SECONDS = 60.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)  # exact: sent as decimal text, which the API accepts
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def request(
    method: str,
    url: str,
    json_body: Any = None,
    raw_body: bytes | str | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = REQUEST_TIMEOUT_SECONDS,
) -> tuple[int, dict[str, str], Any]:
    """One HTTP request on a new connection -> (status, lower-cased headers, body).

    The body is parsed as JSON (numbers with a fraction as Decimal) when the
    response says application/json, else returned as text.
    """
    parts = urllib.parse.urlsplit(url)
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    send_headers = dict(headers or {})
    body: bytes | None = None
    if json_body is not None:
        body = json.dumps(json_body, default=_json_default).encode()
        send_headers.setdefault("Content-Type", "application/json")
    elif raw_body is not None:
        body = raw_body.encode() if isinstance(raw_body, str) else raw_body
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        try:
            conn.request(method, path, body=body, headers=send_headers)
        except (BrokenPipeError, ConnectionResetError):
            # The server may answer (e.g. 413) and close before reading the whole
            # body; its answer can still be waiting in the socket.
            pass
        response = conn.getresponse()
        data = response.read()
        response_headers = {k.lower(): v for k, v in response.getheaders()}
        status = response.status
    finally:
        conn.close()
    text = data.decode("utf-8", errors="replace")
    if response_headers.get("content-type", "").startswith("application/json"):
        return status, response_headers, json.loads(text, parse_float=Decimal)
    return status, response_headers, text


def wait_until_serving(base_url: str, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    """Wait until a server started as a CLI process answers /healthz (fail if it exits or takes too long)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if request("GET", f"{base_url}/healthz")[0] == 200:
                return
        except OSError:
            pass
        assert process.poll() is None and time.monotonic() < deadline, "server did not start"
        time.sleep(0.2)


class ServerProcess:
    """`run_server(db_path, port=port, demo=demo, **options)` in a subprocess, ready when /healthz answers.

    `options` are more keyword arguments for `run_server` (literals: they are
    written into the child's command line with repr), e.g. `{"log_format": "json"}`.
    """

    def __init__(
        self, db_path: str | Path, port: int | None = None, demo: bool = True, options: dict[str, Any] | None = None
    ) -> None:
        self.db_path = Path(db_path)
        self.port = port if port is not None else free_port()
        self.demo = demo
        self.options = dict(options or {})
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="metering-server-", suffix=".log", delete=False)

    # -- lifecycle -----------------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT_SECONDS) -> ServerProcess:
        code = (
            "from usage_metering.node.server import run_server; "
            f"run_server({str(self.db_path)!r}, port={self.port}, demo={self.demo!r}"
            + "".join(f", {name}={value!r}" for name, value in self.options.items())
            + ")"
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
            except OSError:
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

    def request(
        self,
        method: str,
        path: str,
        json_body: Any = None,
        raw_body: bytes | str | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], Any]:
        return request(method, f"{self.url}{path}", json_body=json_body, raw_body=raw_body, headers=headers)

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
