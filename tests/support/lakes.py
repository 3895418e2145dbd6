"""Fresh DuckLakes for tests: a catalog database on a real PostgreSQL server, Parquet data in a temp dir."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import psycopg

from support.postgres_server import PostgresServer
from usage_metering.store import Lake

_numbers = itertools.count(1)


class LakeFactory:
    def __init__(self, server: PostgresServer, directory: Path) -> None:
        self.server = server
        self.directory = directory

    def catalog_dsn(self, database: str) -> str:
        return f"host=127.0.0.1 port={self.server.port} user=postgres dbname={database}"

    def new(self, name: str = "lake") -> Lake:
        """An empty lake: a new catalog database and a new data directory."""
        database = f"{name}_{os.getpid()}_{next(_numbers)}"
        with psycopg.connect(self.server.dsn, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{database}"')
        data = self.directory / f"{database}-data"
        data.mkdir()
        return Lake(f"postgres:{self.catalog_dsn(database)}", str(data))
