"""Three `consume --lake` processes in one consumer group over one DuckLake: exact across kill -9 and a zombie.

A real broker, a real PostgreSQL catalog, Parquet data, real processes. One
member is killed with SIGKILL and restarted; another is paused with SIGSTOP for
longer than the group's session timeout (its partitions move to the others),
then resumed: its batch in flight must fail on the partition's offsets, not be
counted twice. Then the broker restarts mid-stream. Every node runs a lake
maintenance pass every 3 s meanwhile.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

from support import kafka_broker
from support.lakes import LakeFactory
from support.pipeline_helpers import (
    assert_exact,
    group_offsets,
    produce_events,
    start_consumer_process,
    stored_state,
    terminate,
    wait_for_group_offsets,
    wait_for_log,
)
from usage_metering.kafka.topics import end_offsets

SESSION_TIMEOUT_SECONDS = 6  # the broker's group.min.session.timeout.ms


def _wait_for_progress(bootstrap: str, group: str, beyond: int, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while sum(group_offsets(bootstrap, group).values()) <= beyond:
        assert time.monotonic() < deadline, "the group made no progress"
        time.sleep(0.1)


def test_three_nodes_count_exactly_once_through_kill_9_and_a_paused_zombie(
    kafka_bootstrap: str, topic: str, lakes: LakeFactory, tmp_path: Path
) -> None:
    lake = lakes.new()
    group = f"cluster-{topic}"
    logs = [tmp_path / f"node-{n}.log" for n in range(3)]

    def start(n: int) -> object:
        return start_consumer_process(kafka_bootstrap, tmp_path / f"node-{n}", topic, group,
                                      "--max-poll-records", "200", "--session-timeout-ms",
                                      str(SESSION_TIMEOUT_SECONDS * 1000), "--maintenance-interval", "3",
                                      log_path=logs[n], lake=lake)

    expected = produce_events(kafka_bootstrap, topic, 20_000, duplicate_fraction=0.05, seed=21)
    nodes = [start(n) for n in range(3)]
    try:
        for n in range(3):
            wait_for_log(logs[n], "assigned [", process=nodes[n])
        _wait_for_progress(kafka_bootstrap, group, 0)

        nodes[0].kill()  # kill -9 mid-stream, then back
        nodes[0].wait(timeout=30)
        produce_events(kafka_bootstrap, topic, 20_000, duplicate_fraction=0.05, seed=22, expected=expected)
        nodes[0] = start(0)

        nodes[1].send_signal(signal.SIGSTOP)  # a zombie: its partitions go to the others meanwhile
        produce_events(kafka_bootstrap, topic, 20_000, duplicate_fraction=0.05, seed=23, expected=expected)
        time.sleep(SESSION_TIMEOUT_SECONDS + 5)
        nodes[1].send_signal(signal.SIGCONT)

        # The broker restarts while a fourth round is produced (one event per record, 20k records).
        assert kafka_broker._source == "local", "the cluster test restarts the local script broker"
        restarts: list[threading.Thread] = []

        def restart_at(n: int) -> None:
            if n == 5_000:
                restarts.append(threading.Thread(target=kafka_broker.restart_local_broker))
                restarts[-1].start()

        produce_events(kafka_bootstrap, topic, 20_000, duplicate_fraction=0.05, seed=24, expected=expected,
                       between=restart_at, max_batch_events=1)
        for thread in restarts:
            thread.join(timeout=180)
        assert restarts, "the broker was not restarted"

        ends = end_offsets(kafka_bootstrap, topic)
        wait_for_group_offsets(kafka_bootstrap, group, ends, timeout=240)
        time.sleep(2)  # let a resumed zombie try its stale batch and rejoin
        for n, node in enumerate(nodes):
            assert terminate(node) == 0, logs[n].read_text()[-3000:]
    finally:
        for node in nodes:
            if node.poll() is None:
                node.send_signal(signal.SIGCONT)
                node.kill()
    assert_exact(tmp_path / "check", expected, lake)
    assert stored_state(tmp_path / "check", lake)[3] == ends
