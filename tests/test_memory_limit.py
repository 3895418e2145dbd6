"""DuckDB's buffer pool is the node's memory knob: `--memory-limit` on every command, 512MB by default."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from usage_metering.cli import cli
from usage_metering.metering import Metering
from usage_metering.node import server
from usage_metering.node.config import NodeConfig
from usage_metering.store.database import DEFAULT_MEMORY_LIMIT

pytestmark = pytest.mark.unit


class Opened(Exception):
    """Raised by the stand-in for Metering.open: the node got as far as opening its store."""


def configs_of_serve(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *options: str) -> list[NodeConfig]:
    started: list[NodeConfig] = []

    def run_node(config: NodeConfig) -> int:
        started.append(config)
        return 0

    monkeypatch.setattr(server, "run_node", run_node)
    result = CliRunner().invoke(cli, ["--db", str(tmp_path / "m.duckdb"), *options, "serve"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return started


def test_serve_hands_the_memory_limit_to_the_node(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert [c.memory_limit for c in configs_of_serve(monkeypatch, tmp_path)] == [DEFAULT_MEMORY_LIMIT]
    assert [c.memory_limit for c in configs_of_serve(monkeypatch, tmp_path, "--memory-limit", "2GB")] == ["2GB"]
    monkeypatch.setenv("USAGE_METERING_MEMORY_LIMIT", "300MB")
    assert [c.memory_limit for c in configs_of_serve(monkeypatch, tmp_path)] == ["300MB"]


def test_a_local_command_opens_the_file_with_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def open_store(path: Path, **options: Any) -> None:
        raise Opened(options["memory_limit"])

    monkeypatch.setattr(Metering, "open", open_store)
    with pytest.raises(Opened, match="^300MB$"):
        CliRunner().invoke(cli, ["--db", str(tmp_path / "m.duckdb"), "--memory-limit", "300MB", "plans", "list"],
                           catch_exceptions=False)


@pytest.mark.parametrize("value", ["lots", "512", "-1GB", "1 parsec"])
def test_a_memory_limit_that_is_not_a_size_is_a_usage_error(tmp_path: Path, value: str) -> None:
    db = tmp_path / "m.duckdb"
    result = CliRunner().invoke(cli, ["--db", str(db), "--memory-limit", value, "plans", "list"])
    assert result.exit_code == 2
    assert "--memory-limit" in result.output and "512MB or 4GB" in result.output
    assert not db.exists()  # refused before anything was opened


def test_the_node_opens_its_store_with_it(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def open_store(path: Path, **options: Any) -> None:
        raise Opened(options["memory_limit"])

    monkeypatch.setattr(server.Metering, "open", open_store)
    with pytest.raises(Opened, match="^300MB$"):
        server.run_node(NodeConfig(db_path=tmp_path / "m.duckdb", memory_limit="300MB", http=None))
