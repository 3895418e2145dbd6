"""A DuckLake as the store: catalog in PostgreSQL, data as Parquet files on a shared path or object storage.

A node attaches the lake to an in-memory DuckDB and makes it the default
catalog (`USE lake`), so the store's SQL runs on it unchanged. The SQL on
every path is written for both: no PRIMARY KEY, UNIQUE or CHECK constraint is
relied on, no sequence, no ON CONFLICT and no INSERT ... RETURNING (DuckLake
has none of them).

The lake's tables and views are the file's, derived from the migrations: an
in-memory file is migrated to the newest version and its columns (types and
NOT NULL) and views are recreated in the lake, without constraints or
defaults. `schema_migrations` in the lake records that version; migrations
after `LAKE_BASE_VERSION` run on both and must be written for both.

Object storage (`s3://` data paths, through httpfs) takes its credentials
from the standard AWS environment variables; AWS_ENDPOINT_URL points at an
S3-compatible server (MinIO, R2, Ceph), addressed path-style.

Extensions come from the `duckdb-extension-*` packages installed with this
one: the extension repository may not be reachable. They are installed from
the packages' files into a cache directory (DuckDB registers the postgres
extension as `postgres_scanner`) and loaded from there.
"""

from __future__ import annotations

import importlib
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import duckdb

from .file_format import cache_dir
from .migrations import MIGRATIONS, apply_migrations, apply_steps_after
from .timeutil import utc_now_naive
from .transaction import transaction

LAKE_ALIAS = "lake"
# The schema version lakes were first created at; later migrations must run on a lake too.
LAKE_BASE_VERSION = 7
# (package, file stem in the package, name DuckDB registers it under)
_EXTENSIONS = {
    "ducklake": ("duckdb_extension_ducklake", "ducklake", "ducklake"),
    "postgres": ("duckdb_extension_postgres", "postgres", "postgres_scanner"),
    "httpfs": ("duckdb_extension_httpfs", "httpfs", "httpfs"),
}


class LakeError(RuntimeError):
    """The lake cannot be opened as given (catalog unreachable, wrong data path, newer schema, ...)."""


@dataclass(frozen=True)
class Lake:
    """Where a lake lives: DuckLake's metadata string and the data path shared by every node.

    `catalog` is what follows `ducklake:` in DuckLake's ATTACH, e.g.
    `postgres:host=db port=5432 dbname=metering user=metering`. `data_path` is
    one absolute path or URL (`s3://bucket/prefix/`) every node reaches the same
    way; None uses the one the catalog recorded when the lake was created.
    """

    catalog: str
    data_path: str | None = None

    def __post_init__(self) -> None:
        catalog = self.catalog.removeprefix("ducklake:")
        object.__setattr__(self, "catalog", catalog)
        if self.data_path is not None and "://" not in self.data_path:
            object.__setattr__(self, "data_path", str(Path(self.data_path).resolve()) + "/")

    def attach_sql(self, *, read_only: bool = False) -> str:
        options = [] if self.data_path is None else [f"DATA_PATH {_literal(self.data_path)}"]
        if read_only:
            options.append("READ_ONLY")
        listed = f" ({', '.join(options)})" if options else ""
        return f"ATTACH {_literal('ducklake:' + self.catalog)} AS {LAKE_ALIAS}{listed}"

    def needed_extensions(self) -> list[str]:
        names = ["ducklake"]
        if self.catalog.startswith("postgres:"):
            names.append("postgres")
        if self.data_path is not None and self.data_path.startswith(("s3://", "gcs://", "gs://", "https://", "r2://")):
            names.append("httpfs")
        return names


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def extension_directory() -> Path:
    return cache_dir() / f"duckdb-extensions-{duckdb.__version__}"


def load_extensions(con: duckdb.DuckDBPyConnection, names: list[str]) -> None:
    """Install (from the installed packages) and load each extension; the network is never asked."""
    for name in names:
        package, stem, registered = _EXTENSIONS[name]
        module = importlib.import_module(package)
        source = (
            Path(module.__file__ or "").parent / "extensions" / f"v{duckdb.__version__}" / f"{stem}.duckdb_extension"
        )
        if not source.exists():
            raise LakeError(
                f"{package} has no extension for DuckDB {duckdb.__version__} ({source}); "
                f"install {package}=={duckdb.__version__}"
            )
        con.execute(f"INSTALL {_literal(str(source))}")
        con.execute(f"LOAD {registered}")


def connect_lake(lake: Lake, *, memory_limit: str, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the lake attached as the default catalog."""
    extensions = extension_directory()
    extensions.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(
        config={
            "memory_limit": memory_limit,
            "extension_directory": str(extensions),
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
        }
    )
    try:
        needed = lake.needed_extensions()
        load_extensions(con, needed)
        secret = s3_secret_sql(os.environ) if "httpfs" in needed else None
        if secret is not None:
            con.execute(secret)
        _attach(con, lake.attach_sql(read_only=read_only))
        con.execute(f"USE {LAKE_ALIAS}")
    except duckdb.Error as exc:
        con.close()
        raise LakeError(f"cannot open the lake ducklake:{lake.catalog}: {str(exc).strip()}") from exc
    return con


def s3_secret_sql(environment: Mapping[str, str]) -> str | None:
    """A DuckDB S3 secret from the AWS variables in `environment` (None without AWS_ACCESS_KEY_ID)."""
    key_id = environment.get("AWS_ACCESS_KEY_ID")
    if not key_id:
        return None
    options = {"KEY_ID": _literal(key_id), "SECRET": _literal(environment.get("AWS_SECRET_ACCESS_KEY", ""))}
    if environment.get("AWS_SESSION_TOKEN"):
        options["SESSION_TOKEN"] = _literal(environment["AWS_SESSION_TOKEN"])
    region = environment.get("AWS_REGION") or environment.get("AWS_DEFAULT_REGION")
    if region:
        options["REGION"] = _literal(region)
    endpoint = environment.get("AWS_ENDPOINT_URL_S3") or environment.get("AWS_ENDPOINT_URL")
    if endpoint:
        parsed = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
        options["ENDPOINT"] = _literal(parsed.netloc)
        options["USE_SSL"] = "true" if parsed.scheme == "https" else "false"
        options["URL_STYLE"] = _literal("path")
    listed = ", ".join(f"{name} {value}" for name, value in options.items())
    return f"CREATE TEMPORARY SECRET usage_metering_s3 (TYPE S3, {listed})"


def _attach(con: duckdb.DuckDBPyConnection, attach_sql: str, attempts: int = 4) -> None:
    """ATTACH; nodes creating a new lake together race on DuckLake's own catalog tables, so the loser tries again."""
    for attempt in range(attempts):
        try:
            con.execute(attach_sql)
            return
        except duckdb.Error as exc:
            if attempt == attempts - 1 or "already exists" not in str(exc):
                raise
            time.sleep(0.1 * (attempt + 1))


@dataclass(frozen=True)
class _Schema:
    version: int
    statements: list[str]  # constraint-free DDL, tables before views
    seed_rows: dict[str, list[tuple[object, ...]]]  # rows the migrations insert (e.g. rollup_state's)


def _current_schema() -> _Schema:
    """The newest schema, read off an in-memory database the migrations built."""
    scratch = duckdb.connect()
    try:
        version = apply_migrations(scratch)
        columns = scratch.execute(
            "SELECT table_name, column_name, data_type, is_nullable FROM duckdb_columns() "
            "WHERE table_oid IN (SELECT table_oid FROM duckdb_tables() WHERE database_name = 'memory') "
            "ORDER BY table_name, column_index"
        ).fetchall()
        views = scratch.execute(
            "SELECT sql FROM duckdb_views() WHERE database_name = 'memory' AND NOT internal ORDER BY view_oid"
        ).fetchall()
        seed_rows = {
            table: scratch.execute(f'SELECT * FROM "{table}"').fetchall()
            for table in {table for table, *_ in columns} - {"schema_migrations"}
        }
    finally:
        scratch.close()
    tables: dict[str, list[str]] = {}
    for table, column, data_type, nullable in columns:
        tables.setdefault(table, []).append(f'"{column}" {data_type}' + ("" if nullable else " NOT NULL"))
    statements = [f'CREATE TABLE "{table}" ({", ".join(defs)})' for table, defs in tables.items()]
    return _Schema(version, statements + [sql for (sql,) in views], {t: rows for t, rows in seed_rows.items() if rows})


def _lake_version(con: duckdb.DuckDBPyConnection) -> int | None:
    found = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE database_name = ? AND table_name = 'schema_migrations'",
        [LAKE_ALIAS],
    ).fetchall()[0][0]
    if not found:
        return None
    return int(con.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchall()[0][0])


def check_lake_schema(con: duckdb.DuckDBPyConnection) -> int:
    """The schema version of a lake opened read-only; one without a schema is an error, not an empty answer."""
    version = _lake_version(con)
    if version is None:
        raise LakeError("the lake has no metering schema yet: a node (serve or consume with --lake) creates it")
    return version


def migrate_lake(con: duckdb.DuckDBPyConnection, attempts: int = 3) -> int:
    """Create the schema in an empty lake, or bring an older one to the newest version; returns it.

    Nodes starting together race to do it: the loser finds the tables made or its commit
    conflicts, rolls back, and looks again.
    """
    for attempt in range(attempts):
        try:
            return _migrate_lake_once(con)
        except (duckdb.TransactionException, duckdb.CatalogException):
            if attempt == attempts - 1:
                raise
    raise AssertionError("unreachable")


def _migrate_lake_once(con: duckdb.DuckDBPyConnection) -> int:
    newest = MIGRATIONS[-1][0]
    current = _lake_version(con)
    if current is None:
        schema = _current_schema()
        with transaction(con):
            for statement in schema.statements:
                con.execute(statement)
            for table, rows in schema.seed_rows.items():
                con.executemany(f'INSERT INTO "{table}" VALUES ({", ".join(["?"] * len(rows[0]))})', rows)
            con.execute("INSERT INTO schema_migrations VALUES (?, ?)", [schema.version, utc_now_naive()])
        return schema.version
    if current > newest:
        raise LakeError(
            f"the lake is at schema version {current}, newer than this version knows ({newest}): "
            "upgrade usage-metering on this node"
        )
    return apply_steps_after(con, current)
