"""API keys: the SQL for the `api_keys` table (migration 2).

A row holds a key's id, name, scope, tenant and the SHA-256 of its token; the
token itself is never stored. Revoking sets `revoked_at`; rows are kept so the
id stays taken and an audit can see who had access when.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

import duckdb
from pydantic import Field

from usage_metering.schemas.wire import Identifier, JsonShape, Timestamp

from .timeutil import from_naive_utc, to_naive_utc

_COLUMNS = "key_id, name, scope, tenant_id, key_hash, created_at, revoked_at"


@dataclass(frozen=True)
class ApiKey(JsonShape):
    """One stored key. `created_at`/`revoked_at` are aware UTC datetimes."""

    key_id: Annotated[str, Field(pattern="^[0-9a-f]{16}$")]
    name: str
    scope: Literal["admin", "tenant"]
    tenant_id: Identifier | None
    created_at: Timestamp
    revoked_at: Timestamp | None = None
    key_hash: Annotated[str, Field(exclude=True)] = ""  # never shown, so a key read over HTTP has none

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


def _from_row(row: tuple[Any, ...]) -> ApiKey:
    key_id, name, scope, tenant_id, key_hash, created_at, revoked_at = row
    return ApiKey(
        key_id=key_id,
        name=name,
        scope=scope,
        tenant_id=tenant_id,
        key_hash=key_hash,
        created_at=from_naive_utc(created_at),
        revoked_at=from_naive_utc(revoked_at) if revoked_at is not None else None,
    )


def insert_key(cursor: duckdb.DuckDBPyConnection, key: ApiKey) -> None:
    cursor.execute(
        f"INSERT INTO api_keys ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            key.key_id,
            key.name,
            key.scope,
            key.tenant_id,
            key.key_hash,
            to_naive_utc(key.created_at),
            to_naive_utc(key.revoked_at) if key.revoked_at is not None else None,
        ],
    )


def load_keys(cursor: duckdb.DuckDBPyConnection) -> list[ApiKey]:
    """Every key, revoked ones included, oldest first."""
    rows = cursor.execute(f"SELECT {_COLUMNS} FROM api_keys ORDER BY created_at, key_id").fetchall()
    return [_from_row(row) for row in rows]


def load_key(cursor: duckdb.DuckDBPyConnection, key_id: str) -> ApiKey | None:
    rows = cursor.execute(f"SELECT {_COLUMNS} FROM api_keys WHERE key_id = ?", [key_id]).fetchall()
    return _from_row(rows[0]) if rows else None


def mark_revoked(cursor: duckdb.DuckDBPyConnection, key_id: str, at: datetime) -> None:
    """Set `revoked_at` once; revoking an already revoked key keeps the first time."""
    cursor.execute(
        "UPDATE api_keys SET revoked_at = ? WHERE key_id = ? AND revoked_at IS NULL",
        [to_naive_utc(at), key_id],
    )
