"""The throwaway PostgreSQL server the benchmarks' peer (and the cluster mode's catalog) runs on."""

from __future__ import annotations

import psycopg
import pytest

from support.postgres_server import PostgresServer

pytestmark = pytest.mark.lake


def test_a_temporary_server_starts_answers_restarts_and_is_removed() -> None:
    server = PostgresServer.temporary().start()
    try:
        with psycopg.connect(server.dsn, autocommit=True) as connection:
            connection.execute("CREATE TABLE kept (n int PRIMARY KEY)")
            connection.execute("INSERT INTO kept VALUES (1), (2)")
        server.stop()
        server.start()  # the data directory is reused: what was committed is there
        with psycopg.connect(server.dsn) as connection:
            assert connection.execute("SELECT sum(n) FROM kept").fetchone() == (3,)
    finally:
        server.remove()
    assert not server.data_dir.exists()
