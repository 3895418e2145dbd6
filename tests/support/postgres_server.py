"""A throwaway PostgreSQL server from Debian's `postgresql` package, for tests and benchmarks.

`PostgresServer(data_dir)` runs initdb (first time only) and starts the server
on 127.0.0.1 and a free port, with its socket in the data directory; `stop()`
shuts it down (fast mode). As root the server runs as the `postgres` user (it
refuses to run as root). Nothing here skips: a missing package is an error
that says how to install it.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

START_TIMEOUT_SECONDS = 60


def _bin_dir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if found:
        return Path(found[-1]).parent
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl:
        return Path(pg_ctl).parent
    raise RuntimeError("PostgreSQL is not installed: apt-get install -y postgresql (make install-test does)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """`data_dir`'s parents must be traversable by the `postgres` user (`temporary()` makes such a place)."""

    def __init__(self, data_dir: str | Path, port: int | None = None) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.port = port or _free_port()
        self.bin = _bin_dir()
        self._as_postgres = os.geteuid() == 0

    @classmethod
    def temporary(cls) -> PostgresServer:
        """A server on a fresh data directory under the system temp dir (remove it with `remove()`)."""
        parent = Path(tempfile.mkdtemp(prefix="usage-metering-pg-"))
        parent.chmod(0o711)  # the postgres user must reach the data directory inside
        return cls(parent / "data")

    def remove(self) -> None:
        """Stop the server and delete its data directory (and the temporary parent `temporary()` made)."""
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)
        if self.data_dir.parent.name.startswith("usage-metering-pg-"):
            shutil.rmtree(self.data_dir.parent, ignore_errors=True)

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin / args[0]), *args[1:]]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, capture_output=True, text=True, check=False, timeout=START_TIMEOUT_SECONDS)

    def start(self) -> PostgresServer:
        if not (self.data_dir / "PG_VERSION").exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            if self._as_postgres:
                user = pwd.getpwnam("postgres")
                os.chown(self.data_dir, user.pw_uid, user.pw_gid)
            done = self._run("initdb", "-D", str(self.data_dir), "-U", "postgres", "--auth=trust",
                             "--encoding=UTF8", "--locale=C.UTF-8")
            if done.returncode != 0:
                raise RuntimeError(f"initdb failed:\n{done.stdout}\n{done.stderr}")
        options = f"-p {self.port} -k {self.data_dir} -c listen_addresses=127.0.0.1"
        done = self._run("pg_ctl", "-D", str(self.data_dir), "-o", options, "-l", str(self.data_dir / "server.log"),
                         "-w", "-t", str(START_TIMEOUT_SECONDS), "start")
        if done.returncode != 0:
            log = (self.data_dir / "server.log").read_text(errors="replace")[-3000:] if (
                self.data_dir / "server.log").exists() else ""
            raise RuntimeError(f"PostgreSQL did not start:\n{done.stdout}\n{done.stderr}\n{log}")
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"PostgreSQL does not answer on port {self.port}") from None
                time.sleep(0.1)

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "stop")

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
