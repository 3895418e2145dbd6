"""Find or start a real Kafka broker for the test suite.

Plain functions (no pytest fixtures) so conftest.py, benchmarks and ad-hoc scripts can
share them. Order of preference in :func:`find_bootstrap_servers`:

1. ``KAFKA_BOOTSTRAP_SERVERS`` from the environment (CI or a developer's own broker);
2. a testcontainers Kafka, when a Docker engine answers a ping;
3. ``scripts/kafka-local.sh start``: a single-node KRaft broker run from Apache Kafka's
   release jars (fetched once from Maven Central into ``.cache/kafka``).

A broker that cannot be had is an error (:class:`RuntimeError` carrying the script's
output), never a skip: Kafka-backed tests must not silently turn green.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Optional

REPO_ROOT = Path(__file__).resolve().parents[2]  # tests/support/kafka_broker.py
KAFKA_LOCAL_SCRIPT = REPO_ROOT / "scripts" / "kafka-local.sh"

# Image for the testcontainers path; KRaft-capable Confluent image (testcontainers' default).
KAFKA_TEST_IMAGE = os.environ.get("KAFKA_TEST_IMAGE", "confluentinc/cp-kafka:7.6.0")

# A cold `start` fetches ~45 jars with mvn before the broker boots; leave room for that.
_START_TIMEOUT_S = 600.0
DEFAULT_LOCAL_PORT = 19092  # scripts/kafka-local.sh default (KAFKA_LOCAL_PORT)
_STOP_TIMEOUT_S = 120.0

_lock = threading.Lock()
# The testcontainers KafkaContainer we started, kept so stop_local_broker() can stop it.
_container: Optional[Any] = None
# Where the current bootstrap address came from: "env", "container", "local" or None.
_source: Optional[str] = None
_bootstrap: Optional[str] = None

_ADDRESS_RE = re.compile(r"^[\w.\-\[\]:]+:\d+(,[\w.\-\[\]:]+:\d+)*$")


def docker_available(timeout_s: float = 2.0) -> bool:
    """True if a Docker engine answers a ping within ``timeout_s`` (False on any error)."""
    try:
        import docker  # type: ignore[import-untyped]

        client = docker.from_env(timeout=timeout_s)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


def _script_env() -> dict[str, str]:
    env = dict(os.environ)
    # The script's readiness probe uses kafka-python; the running interpreter has it.
    env.setdefault("PYTHON", sys.executable)
    return env


def _run_script(command: str, timeout_s: float, extra_env: Optional[dict[str, str]] = None
                ) -> subprocess.CompletedProcess[str]:
    """Run ``scripts/kafka-local.sh COMMAND``; RuntimeError with its output if it fails."""
    env = _script_env()
    if extra_env:
        env.update(extra_env)
    argv = ["bash", str(KAFKA_LOCAL_SCRIPT), command]
    try:
        proc = subprocess.run(argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                              timeout=timeout_s, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as exc:
        raise RuntimeError(
            f"{' '.join(argv)} timed out after {timeout_s:.0f}s\n"
            f"--- stdout ---\n{_text(exc.stdout)}\n--- stderr ---\n{_text(exc.stderr)}"
        ) from exc
    except OSError as exc:
        raise RuntimeError(f"could not run {' '.join(argv)}: {exc}") from exc
    if proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(argv)} failed with exit code {proc.returncode}\n"
            f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
        )
    return proc


def _text(data: Any) -> str:
    if data is None:
        return ""
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace")
    return str(data)


def _bootstrap_from_output(proc: subprocess.CompletedProcess[str], command: str) -> str:
    """The script prints the bootstrap address as the last stdout line."""
    lines = [line.strip() for line in proc.stdout.splitlines() if line.strip()]
    address = lines[-1] if lines else ""
    if not _ADDRESS_RE.match(address):
        raise RuntimeError(
            f"scripts/kafka-local.sh {command} printed no bootstrap address "
            f"(last line {address!r})\n"
            f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"
        )
    return address


def _start_container() -> str:
    global _container
    try:
        from testcontainers.community.kafka import KafkaContainer  # testcontainers >= 4.14
    except ImportError:  # older testcontainers
        from testcontainers.kafka import KafkaContainer  # type: ignore[no-redef]

    container = KafkaContainer(KAFKA_TEST_IMAGE).with_kraft()
    container.start()
    _container = container
    return str(container.get_bootstrap_server())


def _port_busy(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _free_port_pair() -> int:
    """A port P with P and P + 1 free (the broker and its controller listener)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port < 65535 and not _port_busy(port + 1):
            return port
    raise RuntimeError("no free pair of ports for the local Kafka broker")


def _start_local() -> str:
    # Another program (or another checkout's broker) on the default port: use free ports
    # instead; restart/stop read the same setting from the environment.
    if "KAFKA_LOCAL_PORT" not in os.environ and _port_busy(DEFAULT_LOCAL_PORT) and not _local_broker_running():
        os.environ["KAFKA_LOCAL_PORT"] = str(_free_port_pair())
    proc = _run_script("start", _START_TIMEOUT_S)
    return _bootstrap_from_output(proc, "start")


def find_bootstrap_servers() -> str:
    """Return a bootstrap address of a running broker, starting one if needed.

    The result is cached for the process, so calling it from several fixtures is cheap.
    Raises RuntimeError (with the start script's output) if no broker can be had.
    """
    global _source, _bootstrap
    with _lock:
        if _bootstrap is not None:
            return _bootstrap

        env_value = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
        if env_value:
            _source, _bootstrap = "env", env_value
            return env_value

        container_error: Optional[BaseException] = None
        if docker_available():
            try:
                address = _start_container()
                _source, _bootstrap = "container", address
                return address
            except Exception as exc:  # image pull or start failed: try the local broker
                container_error = exc

        try:
            address = _start_local()
        except RuntimeError as exc:
            if container_error is not None:
                raise RuntimeError(
                    f"testcontainers Kafka failed ({container_error!r}) and so did the "
                    f"local broker:\n{exc}"
                ) from exc
            raise
        _source, _bootstrap = "local", address
        return address


def _local_broker_running() -> bool:
    try:
        proc = subprocess.run(["bash", str(KAFKA_LOCAL_SCRIPT), "status"], cwd=REPO_ROOT,
                              env=_script_env(), capture_output=True, text=True, timeout=30,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def restart_local_broker(crash: bool = False) -> str:
    """Restart the script-managed broker, keeping its topics and committed offsets.

    Blocks until the broker answers again and returns its bootstrap address (unchanged).
    ``crash=True`` kills it with SIGKILL instead of a clean shutdown. Only valid when the
    broker comes from ``scripts/kafka-local.sh`` (started here, or started beforehand
    and named via KAFKA_BOOTSTRAP_SERVERS); a testcontainers or foreign broker raises.
    """
    global _bootstrap
    with _lock:
        if _source == "container":
            raise RuntimeError("restart_local_broker() is not supported for a testcontainers broker")
        if _source != "local" and not _local_broker_running():
            raise RuntimeError(
                "restart_local_broker(): no broker started by scripts/kafka-local.sh is running "
                f"(bootstrap source: {_source or 'none'})"
            )
        extra = {"KAFKA_LOCAL_RESTART_SIGNAL": "KILL" if crash else "TERM"}
        proc = _run_script("restart", _START_TIMEOUT_S, extra_env=extra)
        address = _bootstrap_from_output(proc, "restart")
        if _source == "local":
            _bootstrap = address
        return address


def stop_local_broker() -> None:
    """Stop the broker this module started (container or local script) and forget it.

    A broker given via KAFKA_BOOTSTRAP_SERVERS is not ours and is left alone. Stopping the
    local broker also deletes its data dir; the jar cache stays. With several test
    processes sharing one local broker, only the last one should call this.
    """
    global _container, _source, _bootstrap
    with _lock:
        try:
            if _container is not None:
                container, _container = _container, None
                container.stop()
            elif _source == "local":
                _run_script("stop", _STOP_TIMEOUT_S)
        finally:
            _source, _bootstrap = None, None
