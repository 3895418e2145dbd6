"""Starting the node: the library, the ASGI app and uvicorn in one process."""

from __future__ import annotations

import logging
from pathlib import Path

import uvicorn

from usage_metering.demo import init_demo
from usage_metering.metering import Metering

from .app import create_app

log = logging.getLogger("usage_metering")


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
    uvicorn.run(
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
