"""Files written by the earlier version (DuckDB 2.0.1) are refused with a message, then converted without loss.

A real DuckDB 2.0.1 (installed from PyPI into the cache, as `upgrade-file`
does) writes the file in a child process; this process runs DuckDB 1.5.5.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from usage_metering import Metering
from usage_metering.store import NewerFileFormatError
from usage_metering.store.file_format import BACKUP_SUFFIX, NEWER_READER_VERSION, newer_reader

SRC = Path(__file__).resolve().parent.parent / "src"

# Runs under DuckDB 2.0.1: the demo plus a few events through the library, and the answers to compare.
WRITE_WITH_NEWER = """
import json, sys, duckdb
from usage_metering import Metering
from usage_metering.node.demo import init_demo
assert duckdb.__version__ == sys.argv[2], duckdb.__version__
with Metering.open(sys.argv[1]) as metering:
    init_demo(metering)
    for i in range(5):
        metering.record({"tenant_id": "tenant_acme", "metric": "api_calls", "quantity": "1.5", "event_id": f"old-{i}"})
    answers = {
        "usage": metering.usage("tenant_acme", "api_calls").to_json_dict(),
        "report": [invoice.to_json_dict() for invoice in metering.billing_report()],
        "keys": len(metering.list_api_keys()),
    }
print(json.dumps(answers))
"""


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    return subprocess.run([sys.executable, "-m", "usage_metering", *args], capture_output=True, text=True, env=env,
                          timeout=600)


@pytest.fixture(scope="module")
def newer_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("duckdb2") / "metering.duckdb"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(newer_reader()), str(SRC)])}
    done = subprocess.run([sys.executable, "-c", WRITE_WITH_NEWER, str(path), NEWER_READER_VERSION],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return path, json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.unit
def test_this_version_runs_duckdb_1_5_5() -> None:
    assert duckdb.__version__ == "1.5.5"


@pytest.mark.unit
def test_duckdb_memory_is_capped_so_it_does_not_follow_history(tmp_path: Path) -> None:
    def limit(metering: Metering) -> str:
        return metering.database.cursor().execute("SELECT current_setting('memory_limit')").fetchall()[0][0]

    with Metering.open(tmp_path / "default.duckdb") as metering:
        assert limit(metering) == "488.2 MiB"  # DEFAULT_MEMORY_LIMIT, 512MB; DuckDB's own default is 80% of RAM
    with Metering.open(tmp_path / "small.duckdb", memory_limit="200MB") as metering:
        assert limit(metering) == "190.7 MiB"


@pytest.mark.integration
def test_a_newer_file_is_refused_with_the_command_that_converts_it(newer_file: tuple[Path, dict]) -> None:
    path, _answers = newer_file
    before = path.read_bytes()
    with pytest.raises(NewerFileFormatError) as refused:
        Metering.open(path)
    assert "upgrade-file" in str(refused.value) and str(path) in str(refused.value)
    shown = cli("--db", str(path), "usage", "tenant_acme", "api_calls")
    assert shown.returncode == 1 and "upgrade-file" in shown.stderr and "Traceback" not in shown.stderr
    assert path.read_bytes() == before  # refused, not reset


@pytest.mark.integration
def test_upgrade_file_converts_without_losing_anything(newer_file: tuple[Path, dict]) -> None:
    path, answers = newer_file
    done = cli("--db", str(path), "--format", "json", "upgrade-file")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["backup"] == f"{path}{BACKUP_SUFFIX}" and Path(summary["backup"]).exists()
    assert summary["rows"] > 0
    with Metering.open(path) as metering:
        assert metering.usage("tenant_acme", "api_calls").to_json_dict() == answers["usage"]
        assert [invoice.to_json_dict() for invoice in metering.billing_report()] == answers["report"]
        again = metering.record({"tenant_id": "tenant_acme", "metric": "api_calls", "quantity": "1.5",
                                 "event_id": "old-0"})
        assert again.status == "duplicate"  # dedup state came across
    again = cli("--db", str(path), "upgrade-file")
    assert again.returncode == 0 and "nothing to convert" in again.stderr
