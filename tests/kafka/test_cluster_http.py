"""Three `serve --lake --kafka-bootstrap-servers` nodes on 127.0.0.1-3: every node gives the same answers.

Each node consumes its share of the partitions and records itself as their
owner in the lake; a quota check asked of any node is answered by the owner of
the tenant's partition (forwarded) or, when the owner does not answer, from the
lake. Usage and billing read the lake. Real broker, PostgreSQL, processes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from support.lakes import LakeFactory
from support.nodes import SRC_DIR, free_port, request, wait_until_serving
from support.pipeline_helpers import TENANTS, group_offsets, produce_events
from usage_metering.kafka.topics import end_offsets


def _start_node(n: int, port: int, lake: Any, bootstrap: str, topic: str, tmp_path: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=str(SRC_DIR))
    argv = [sys.executable, "-m", "usage_metering", "--lake", lake.catalog, "--lake-data", str(lake.data_path),
            "--db", str(tmp_path / f"node-{n}"), "serve", "--host", f"127.0.0.{n + 1}", "--port", str(port),
            "--kafka-bootstrap-servers", bootstrap, "--kafka-topic", topic, "--maintenance-interval", "0",
            "--group-id", f"group-{topic}"]  # a group of this test's own: no member of an earlier run in it
    log = (tmp_path / f"node-{n}.log").open("ab")
    try:
        return subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=SRC_DIR.parent)
    finally:
        log.close()


def _ready(url: str) -> bool:
    return _get(f"{url}/readyz")[0] == 200


def _get(url: str) -> tuple[int, dict[str, str], Any]:
    return request("GET", url, timeout=30)


def test_every_node_answers_alike_and_quota_checks_go_to_the_owner(
    kafka_bootstrap: str, topic: str, lakes: LakeFactory, tmp_path: Path
) -> None:
    lake = lakes.new()
    ports = [free_port() for _ in range(3)]
    urls = [f"http://127.0.0.{n + 1}:{port}" for n, port in enumerate(ports)]
    nodes = [_start_node(n, ports[n], lake, kafka_bootstrap, topic, tmp_path) for n in range(3)]
    try:
        for url, node in zip(urls, nodes):
            wait_until_serving(url, node, timeout=90)
        expected = produce_events(kafka_bootstrap, topic, 6_000, duplicate_fraction=0.05, seed=31)
        ends = end_offsets(kafka_bootstrap, topic)
        deadline = time.monotonic() + 180
        # Every node consumed its share and is ready (owns partitions: what a load balancer waits for).
        while group_offsets(kafka_bootstrap, f"group-{topic}") != ends or not all(_ready(url) for url in urls):
            assert time.monotonic() < deadline, "the nodes did not consume everything"
            assert all(node.poll() is None for node in nodes)
            time.sleep(0.2)

        sources: dict[str, list[str]] = {}
        for tenant in TENANTS[:12]:
            want = expected.totals[(tenant, "api_calls")]
            answers = [_get(f"{url}/api/quota/{tenant}/api_calls") for url in urls]
            assert all(status == 200 for status, _h, _b in answers), answers
            assert [Decimal(body["used"]) for _s, _h, body in answers] == [want] * 3, (tenant, answers)
            sources[tenant] = [headers.get("x-quota-source", "") for _s, headers, _b in answers]
            # exactly one node owns the tenant; the two others asked it
            assert sorted(s.split()[0] for s in sources[tenant]) == ["counters", "owner", "owner"], sources[tenant]
            usage = [_get(f"{url}/api/usage/{tenant}/api_calls")[2] for url in urls]
            assert {Decimal(u["value"]) for u in usage} == {want}, usage
        bills = [request("POST", f"{url}/api/billing-report", json_body={"tenant_id": TENANTS[0]}, timeout=30)
                 for url in urls]
        assert all(status == 200 for status, _h, _b in bills)
        assert bills[0][2] == bills[1][2] == bills[2][2]

        # The owner of TENANTS[0] stops answering: the others answer from the lake, with the same figure.
        owner = next(i for i, source in enumerate(sources[TENANTS[0]]) if source == "counters")
        nodes[owner].send_signal(signal.SIGSTOP)
        try:
            other = (owner + 1) % 3
            status, headers, body = _get(f"{urls[other]}/api/quota/{TENANTS[0]}/api_calls")
            assert status == 200 and headers["x-quota-source"] == "lake", headers
            assert Decimal(body["used"]) == expected.totals[(TENANTS[0], "api_calls")] and body["as_of"]
        finally:
            nodes[owner].send_signal(signal.SIGCONT)
        for n, node in enumerate(nodes):
            node.terminate()
            assert node.wait(timeout=60) == 0, (tmp_path / f"node-{n}.log").read_text()[-3000:]
    finally:
        for node in nodes:
            if node.poll() is None:
                node.send_signal(signal.SIGCONT)
                node.kill()
