"""Shared pytest fixtures. Keep each group self-contained.

Helpers shared by several test modules live in the `support` package (tests/support/); pyproject's
`pythonpath = ["tests"]` makes `from support.nodes import ...` work for the tests and these fixtures alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from support.lakes import LakeFactory
from support.nodes import InProcessNode, ServerProcess, serving
from support.postgres_server import PostgresServer


# -- HTTP end-to-end: a real metering server process on a real DuckDB file -------------


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    """A fresh server (demo data on) on its own DuckDB file; killed at teardown if still up."""
    process = ServerProcess(tmp_path / "metering.duckdb", demo=True)
    try:
        process.start()
        yield process
    finally:
        process.close()


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server (demo data on) for a whole test module; tests use unique tenant ids.

    Stopped with SIGTERM at the end, which must exit cleanly (code 0).
    """
    directory = tmp_path_factory.mktemp("shared-server")
    yield from serving(ServerProcess(directory / "metering.duckdb", demo=True))


@pytest.fixture(scope="module")
def app_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessNode]:
    """The HTTP app in-process (demo data on) for a whole test module; tests use unique tenant ids."""
    with InProcessNode(tmp_path_factory.mktemp("app-node") / "metering.duckdb", demo=True) as node:
        yield node


# -- DuckLake: a real PostgreSQL server (Debian's package) holds the lakes' catalogs ---------


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL server for the session; a missing package fails the tests, never skips them."""
    try:
        server = PostgresServer.temporary().start()
    except Exception as exc:
        pytest.fail(f"no PostgreSQL server could be started:\n{exc}", pytrace=False)
    yield server
    server.remove()


@pytest.fixture
def lakes(postgres: PostgresServer, tmp_path: Path) -> LakeFactory:
    """Makes fresh lakes: a new catalog database on the session's server, data under this test's tmp_path."""
    return LakeFactory(postgres, tmp_path)
