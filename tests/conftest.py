"""Shared pytest fixtures and the suite's markers. Keep each group self-contained.

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

# -- markers: what each test needs to run -------------------------------------------------
#
#   unit         in this process and fast: starts no programs, opens no network sockets, needs no Java,
#                PostgreSQL or Chromium (`make test-unit`, well under a minute)
#   integration  real server processes, subprocesses, sockets, heavy IO or long property-based runs, but
#                nothing beyond Python
#   kafka        a Kafka broker (Java): tests/kafka/ and every test using the `kafka_bootstrap` fixture
#   lake         a PostgreSQL server: every test using the `postgres` or `lakes` fixture
#   browser      Chromium and chromedriver (tests/test_dashboard.py)
#
# `kafka` and `lake` are added here from the fixtures a test uses (and tests/kafka/ is all `kafka`); `unit`,
# `integration` and `browser` are written in the test modules (a module's `pytestmark`, or one test's
# decorator where a module mixes them). Every test must end up with at least one of them, `unit` only alone
# and `integration` never beside kafka, lake or browser; a test that breaks this fails the collection, so a
# new test has to say what it needs.

MARKERS = ("unit", "integration", "kafka", "lake", "browser")
SYSTEM_MARKERS = ("kafka", "lake", "browser")
MARKER_OF_FIXTURE = {"kafka_bootstrap": "kafka", "postgres": "lake", "lakes": "lake"}
KAFKA_DIR = Path(__file__).resolve().parent / "kafka"


def _markers_of(item: pytest.Item) -> set[str]:
    return {mark.name for mark in item.iter_markers() if mark.name in MARKERS}


@pytest.hookimpl(tryfirst=True)  # before `-m` selects on them
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    problems: list[str] = []
    for item in items:
        needed = {MARKER_OF_FIXTURE[name] for name in getattr(item, "fixturenames", ()) if name in MARKER_OF_FIXTURE}
        if KAFKA_DIR in Path(item.path).resolve().parents:
            needed.add("kafka")
        for name in sorted(needed - _markers_of(item)):
            item.add_marker(name)
        markers = _markers_of(item)
        if not markers:
            problems.append(f"{item.nodeid}: no marker; mark it one of {', '.join(MARKERS)}")
        elif "unit" in markers and len(markers) > 1:
            others = sorted(markers - {"unit"})
            problems.append(f"{item.nodeid}: `unit` beside {others}; a unit test needs none of those")
        elif "integration" in markers and markers & set(SYSTEM_MARKERS):
            problems.append(
                f"{item.nodeid}: `integration` beside {sorted(markers & set(SYSTEM_MARKERS))}; integration tests"
                " need nothing beyond Python, so leave `integration` off"
            )
    if problems:
        raise pytest.UsageError("tests without a right marker (see tests/conftest.py):\n  " + "\n  ".join(problems))


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
