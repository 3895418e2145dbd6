"""A cheap HTTP/1.1 load generator: asyncio (+uvloop) over raw sockets.

Why not an HTTP client library: the generator shares 2 cores with the server,
so every microsecond it spends is stolen from the thing measured. Requests are
pre-built bytes, responses are parsed only as far as the status line and
Content-Length, connections are kept alive, and it runs in its own process
(`run_in_process`) so its CPU time is measured separately (getrusage).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypedDict

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack is Python 3.11+


@dataclass
class LoadResult:
    """What one load run saw; latencies are per request, nanoseconds, send to full body read."""

    requests: int
    seconds: float
    statuses: dict[int, int]
    errors: int
    p50_s: float
    p99_s: float
    max_s: float
    client_cpu_s: float
    server_loop_cpu_s: float = 0.0  # server main thread (the event loop)
    server_other_cpu_s: float = 0.0  # server's other threads (ingestor writer, thread pool, DuckDB)
    machine_busy_s: float = 0.0  # all processes on the machine, to expose outside noise
    truncated: bool = False  # the duration cap ended the run before `total` requests
    error_sample: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def server_cpu_share(self) -> float:
        return (self.server_loop_cpu_s + self.server_other_cpu_s) / self.seconds if self.seconds else 0.0

    @property
    def client_cpu_share(self) -> float:
        """Cores the generator used on average (1.0 = one full core)."""
        return self.client_cpu_s / self.seconds if self.seconds else 0.0


def thread_cpu_seconds(pid: int) -> tuple[float, float]:
    """(main thread, all other threads) CPU seconds of a process, from /proc (Linux); zeros elsewhere."""
    import os

    tick = os.sysconf("SC_CLK_TCK")
    main = other = 0.0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            seconds = (int(fields[11]) + int(fields[12])) / tick  # utime, stime
            if int(tid) == pid:
                main += seconds
            else:
                other += seconds
    except OSError:
        pass
    return main, other


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (/proc/stat), to show load from other processes."""
    import os

    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return 0.0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def build_request(method: str, path: str, body: bytes = b"", host: str = "127.0.0.1") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: keep-alive\r\n"
    if body or method in ("POST", "PUT"):
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


async def _read_response(reader: asyncio.StreamReader) -> int:
    """Status code; reads the whole body by Content-Length (the server never chunks JSON replies)."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    index = head.lower().find(b"content-length:")
    if index >= 0:
        length = int(head[index + 15 : head.index(b"\r\n", index)])
        if length:
            await reader.readexactly(length)
    return status


async def _connection(
    host: str,
    port: int,
    requests: list[bytes],
    next_index: list[int],
    total: int,
    deadline: float,
    latencies: list[int],
    statuses: dict[int, int],
    errors: list[str],
) -> None:
    reader, writer = await asyncio.open_connection(host, port, limit=1 << 22)
    try:
        while next_index[0] < total and time.monotonic() < deadline:
            index = next_index[0]
            next_index[0] += 1
            start = time.perf_counter_ns()
            try:
                writer.write(requests[index % len(requests)])
                status = await _read_response(reader)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
                errors.append(repr(exc))
                return
            latencies.append(time.perf_counter_ns() - start)
            statuses[status] = statuses.get(status, 0) + 1
    finally:
        writer.close()


async def _run(
    host: str,
    port: int,
    requests: list[bytes],
    connections: int,
    total: int,
    max_seconds: float,
    server_pid: int | None = None,
) -> LoadResult:
    latencies: list[int] = []
    statuses: dict[int, int] = {}
    errors: list[str] = []
    next_index = [0]
    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    server_before = thread_cpu_seconds(server_pid) if server_pid else (0.0, 0.0)
    busy_before = machine_busy_seconds()
    start = time.perf_counter()
    deadline = time.monotonic() + max_seconds
    await asyncio.gather(
        *(
            _connection(host, port, requests, next_index, total, deadline, latencies, statuses, errors)
            for _ in range(connections)
        )
    )
    seconds = time.perf_counter() - start
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    server_after = thread_cpu_seconds(server_pid) if server_pid else (0.0, 0.0)
    busy = machine_busy_seconds() - busy_before
    cpu = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    latencies.sort()

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] / 1e9 if latencies else float("nan")

    return LoadResult(
        requests=len(latencies),
        seconds=seconds,
        statuses=statuses,
        errors=len(errors),
        p50_s=pct(0.50),
        p99_s=pct(0.99),
        max_s=latencies[-1] / 1e9 if latencies else float("nan"),
        client_cpu_s=cpu,
        server_loop_cpu_s=server_after[0] - server_before[0],
        server_other_cpu_s=server_after[1] - server_before[1],
        machine_busy_s=busy,
        truncated=len(latencies) + len(errors) < total,
        error_sample=errors[:3],
    )


def run_load(
    host: str,
    port: int,
    requests: list[bytes],
    connections: int,
    total: int,
    max_seconds: float,
    warmup: int = 0,
    server_pid: int | None = None,
) -> LoadResult:
    """Send `total` requests (cycling through `requests`) over `connections` keep-alive sockets.

    Bounded twice: by `total` and by `max_seconds`. A warm-up pass (not measured) first,
    using `requests[total:]` when the builder made spares (so unique event ids stay unique).
    """
    try:
        import uvloop

        runner: Callable[..., LoadResult] = uvloop.run
    except ImportError:
        runner = asyncio.run
    if warmup:
        spare = requests[total : total + warmup] or requests[:warmup]
        runner(_run(host, port, spare, connections, warmup, max_seconds))
    return runner(
        _run(
            host,
            port,
            requests[:total] if len(requests) > total else requests,
            connections,
            total,
            max_seconds,
            server_pid,
        )
    )


class _LoadTarget(TypedDict):
    host: str
    port: int
    connections: int
    total: int
    max_seconds: float


class LoadOptions(_LoadTarget, total=False):
    """`run_load`'s arguments but `requests`: what `run_in_process` hands to the child."""

    warmup: int
    server_pid: int | None


def _child(conn: multiprocessing.connection.Connection, build: Callable[[], list[bytes]], kwargs: LoadOptions) -> None:
    try:
        conn.send(run_load(requests=build(), **kwargs))
    except BaseException as exc:  # report, don't hang the parent
        conn.send(exc)
    finally:
        conn.close()


def run_in_process(build: Callable[[], list[bytes]], **kwargs: Unpack[LoadOptions]) -> LoadResult:
    """`run_load` in a fresh process; `build` (a picklable top-level function) makes the requests there.

    Building inside the child keeps the parent idle and avoids pickling megabytes of request bytes.
    """
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(child, build, kwargs), daemon=True)
    process.start()
    child.close()
    try:
        timeout = float(kwargs.get("max_seconds", 60)) * 2 + 120
        if not parent.poll(timeout):
            raise TimeoutError("load generator did not finish")
        result: LoadResult | BaseException = parent.recv()  # what _child sends
    finally:
        process.join(timeout=10)
        if process.is_alive():
            process.kill()
    if isinstance(result, BaseException):
        raise result
    return result
