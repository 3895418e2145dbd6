"""Database files written by DuckDB 2.x: recognised on open, and converted (never reset) on request.

This version runs DuckDB 1.5.5 (see docs/architecture.md for why). The version
before it ran DuckDB 2.0.1, whose files (storage version 69 and up) 1.5.5
cannot open. Opening one raises `NewerFileFormatError`, whose message names
the command that converts it: `usage-metering upgrade-file`, i.e.
`convert_newer_file()`:

1. DuckDB 2.0.1 is installed from PyPI into a cache directory (not into the
   running environment) and, in a child process, checkpoints the file and
   exports every table, view and sequence (`EXPORT DATABASE ... FORMAT parquet`).
2. DuckDB 1.5.5 imports that export into a new file next to the original.
3. The row count of every table must match; only then is the original renamed
   to `<file>.duckdb-2.0.1` and the new file moved into its place. On any
   failure the original is left exactly where and as it was.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import duckdb

NEWER_READER_VERSION = "2.0.1"
BACKUP_SUFFIX = f".duckdb-{NEWER_READER_VERSION}"
CACHE_ENV = "USAGE_METERING_CACHE"


class NewerFileFormatError(RuntimeError):
    """The file was written by a newer DuckDB than this version runs."""

    def __init__(self, path: Path, detail: str) -> None:
        super().__init__(
            f"{path} was written by DuckDB 2.x, which this version (DuckDB {duckdb.__version__}) cannot read "
            f"({detail.strip().splitlines()[0]}). Nothing was changed. Convert it once with "
            f"`usage-metering --db {path} upgrade-file` (the original is kept as {path}{BACKUP_SUFFIX})."
        )
        self.path = path


def is_newer_format_error(error: duckdb.Error) -> bool:
    text = str(error)
    return "version number" in text and "can only read versions" in text


@dataclass(frozen=True)
class Conversion:
    path: Path
    backup: Path
    rows: dict[str, int]  # per table, equal before and after


def cache_dir() -> Path:
    base = os.environ.get(CACHE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "usage-metering"
    )
    return Path(base)


def newer_reader() -> Path:
    """A directory holding DuckDB 2.0.1 for a child process's PYTHONPATH (installed from PyPI once)."""
    target = cache_dir() / f"duckdb-{NEWER_READER_VERSION}"
    if not (target / "duckdb").is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".duckdb-install-", dir=target.parent))
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                "--disable-pip-version-check",
                "--target",
                str(staging),
                f"duckdb=={NEWER_READER_VERSION}",
            ],
            check=True,
        )
        if (target / "duckdb").is_dir():  # another process won the race
            shutil.rmtree(staging)
        else:
            shutil.rmtree(target, ignore_errors=True)
            os.replace(staging, target)
    return target


# Runs under DuckDB 2.0.1: checkpoint, export, and print each table's row count.
_EXPORT_WITH_NEWER = """
import json, sys, duckdb
assert duckdb.__version__ == sys.argv[3], duckdb.__version__
con = duckdb.connect(sys.argv[1])
con.execute("CHECKPOINT")
con.execute("EXPORT DATABASE '" + sys.argv[2].replace("'", "''") + "' (FORMAT parquet)")
tables = [r[0] for r in con.execute(
    "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() AND NOT temporary"
).fetchall()]
print(json.dumps({t: con.execute('SELECT count(*) FROM "' + t + '"').fetchone()[0] for t in tables}))
"""


def table_rows(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    tables = [
        row[0]
        for row in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() AND NOT temporary"
        ).fetchall()
    ]
    return {table: int(con.execute(f'SELECT count(*) FROM "{table}"').fetchall()[0][0]) for table in tables}


def readable_here(path: Path) -> bool:
    """True if this DuckDB opens the file; False if a newer DuckDB wrote it; raises for anything else."""
    try:
        duckdb.connect(str(path), read_only=True).close()
    except duckdb.Error as exc:
        if is_newer_format_error(exc):
            return False
        raise
    return True


def convert_newer_file(path: str | Path) -> Conversion | None:
    """Convert a DuckDB 2.x file in place (see the module docstring); None if it needs no conversion.

    Raises, leaving the file untouched, on any failure.
    """
    path = Path(path)
    if readable_here(path):
        return None
    backup = Path(f"{path}{BACKUP_SUFFIX}")
    if backup.exists():
        raise FileExistsError(f"{backup} exists already: move it away before converting {path} again")
    reader = newer_reader()
    with tempfile.TemporaryDirectory(prefix=".upgrade-", dir=path.parent) as work:
        export_dir = Path(work) / "export"
        env = {**os.environ, "PYTHONPATH": str(reader)}
        done = subprocess.run(
            [sys.executable, "-c", _EXPORT_WITH_NEWER, str(path), str(export_dir), NEWER_READER_VERSION],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"exporting {path} with DuckDB {NEWER_READER_VERSION} failed:\n{done.stderr}")
        before = json.loads(done.stdout.strip().splitlines()[-1])
        converted = Path(work) / path.name
        con = duckdb.connect(str(converted))
        try:
            con.execute(f"IMPORT DATABASE '{str(export_dir).replace(chr(39), chr(39) * 2)}'")
            con.execute("CHECKPOINT")
            after = table_rows(con)
        finally:
            con.close()
        if after != before:
            raise RuntimeError(f"the converted copy of {path} differs: rows {before} before, {after} after")
        os.replace(path, backup)
        os.replace(converted, path)
    return Conversion(path, backup, after)
