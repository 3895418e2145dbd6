"""Starting the node: the library, the ASGI app and uvicorn in one process."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from pathlib import Path
from typing import Iterator

import uvicorn

from usage_metering.demo import init_demo
from usage_metering.metering import Metering

from .app import create_app

log = logging.getLogger("usage_metering")


class NodeServer(uvicorn.Server):
    """uvicorn, except that SIGTERM/SIGINT end in a clean exit 0 after the graceful shutdown.

    Stock uvicorn re-raises the caught signal once it has shut down, so the
    process dies by the signal (exit -15), which supervisors and CI read as a crash.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        originals = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in originals.items():
                signal.signal(sig, handler)


def run_server(
    db_path: str | Path,
    host: str = "127.0.0.1",
    port: int = 8005,
    demo: bool = False,
    log_level: str = "info",
) -> None:
    """Open the database (this process becomes its one writer) and serve until stopped."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    metering = Metering.open(db_path)
    if demo:
        counts = init_demo(metering)
        log.info("demo data ready: %s", counts)
    log.info("serving %s on http://%s:%d", db_path, host, port)
    config = uvicorn.Config(
        create_app(metering),
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        http="auto",
        loop="auto",
        timeout_keep_alive=30,
        timeout_graceful_shutdown=10,
    )
    NodeServer(config).run()
