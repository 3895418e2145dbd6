"""One DuckDB transaction: commit on success, roll back (without masking the error) on failure."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import duckdb

log = logging.getLogger(__name__)


@contextmanager
def transaction(cursor: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    cursor.execute("BEGIN TRANSACTION")
    try:
        yield cursor
        cursor.execute("COMMIT")
    except BaseException:
        _roll_back(cursor)
        raise


def _roll_back(cursor: duckdb.DuckDBPyConnection) -> None:
    """A failed COMMIT has already ended the transaction; the original error is what matters."""
    try:
        cursor.execute("ROLLBACK")
    except duckdb.Error as exc:
        log.debug("nothing to roll back: %s", exc)
