"""The embedded runtime against a real Tansu broker: start/stop, topics, no orphans."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource

from streams import runtime
from streams.runtime import (
    EmbeddedBroker,
    RuntimeStartError,
    ensure_topics,
    free_port,
    wait_for_kafka,
)

pytestmark = pytest.mark.integration

TopicFactory = Callable[..., str]


def pid_alive(pid: int) -> bool:
    """True if ``pid`` runs; a zombie (dead, not yet reaped by init) counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    return not pid_alive(pid)


def test_round_trip_1000_messages_over_4_partitions(
    broker: EmbeddedBroker, topic_factory: TopicFactory
) -> None:
    topic = topic_factory(partitions=4)
    n = 1000
    producer = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5})
    for i in range(n):
        producer.produce(topic, key=f"k{i % 37}".encode(), value=str(i).encode())
    assert producer.flush(10) == 0

    consumer = Consumer(
        {
            "bootstrap.servers": broker.bootstrap,
            "group.id": f"g-{topic}",
            "enable.auto.commit": False,
        }
    )
    # Assign explicitly (no group join delay) and read until every message is in: Tansu's
    # high watermark undercounts, so it must not decide completion.
    consumer.assign([TopicPartition(topic, p, 0) for p in range(4)])
    by_key: dict[bytes, list[int]] = defaultdict(list)
    partitions_seen: set[int] = set()
    got = 0
    deadline = time.monotonic() + 15
    try:
        while got < n and time.monotonic() < deadline:
            for msg in consumer.consume(500, timeout=0.5):
                assert msg.error() is None, msg.error()
                by_key[msg.key()].append(int(msg.value()))
                partitions_seen.add(msg.partition())
                got += 1
    finally:
        consumer.close()

    assert got == n
    assert sorted(v for vs in by_key.values() for v in vs) == list(range(n))
    assert partitions_seen == {0, 1, 2, 3}
    for values in by_key.values():  # per-key order survives (one key -> one partition)
        assert values == sorted(values)


def test_ensure_topics_is_idempotent(broker: EmbeddedBroker) -> None:
    name = f"idem-{os.getpid()}-{time.monotonic_ns()}"
    compacted = f"{name}-compact"
    specs = [(name, 3, {}), (compacted, 2, {"cleanup.policy": "compact"})]
    assert sorted(ensure_topics(broker.bootstrap, specs)) == sorted([name, compacted])
    assert ensure_topics(broker.bootstrap, specs) == []
    assert ensure_topics(broker.bootstrap, {name: 3}) == []

    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    md = admin.list_topics(timeout=5)
    assert len(md.topics[name].partitions) == 3
    assert len(md.topics[compacted].partitions) == 2
    # Tansu keeps the compact policy (it just never compacts in memory).
    res = ConfigResource(ConfigResource.Type.TOPIC, compacted)
    configs = admin.describe_configs([res])[res].result(5)
    assert configs["cleanup.policy"].value == "compact"

    with pytest.raises(RuntimeStartError, match="exists with 3 partitions, expected 5"):
        ensure_topics(broker.bootstrap, {name: 5}, timeout=3)


def test_ensure_topics_rejects_zero_partitions(broker: EmbeddedBroker) -> None:
    with pytest.raises(ValueError, match="partitions must be >= 1"):
        ensure_topics(broker.bootstrap, {"never-created": 0})


def test_stop_leaves_no_process(tmp_path: Path) -> None:
    b = EmbeddedBroker(log_dir=tmp_path).start()
    pid, proc = b.pid, b._proc
    assert pid is not None and proc is not None and pid_alive(pid)
    wait_for_kafka(b.bootstrap, timeout=2)
    ensure_topics(b.bootstrap, {"stop-test": 1})
    client = Producer({"bootstrap.servers": b.bootstrap})  # a client still connected
    client.produce("stop-test", b"x")
    client.flush(5)
    # Tansu exits at once on SIGINT; on SIGTERM it lingers 5 s and would be killed here.
    b.stop(timeout=3)
    assert proc.returncode == 0, f"broker did not exit by itself: {proc.returncode}"
    assert not pid_alive(pid)
    assert pid not in runtime._live
    assert not b.running
    b.stop()  # idempotent
    assert b.log_path is not None and "listening on" in b.log_path.read_text()


def test_no_orphan_when_parent_is_killed(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import time
        from streams.runtime import EmbeddedBroker
        b = EmbeddedBroker(log_dir={str(tmp_path)!r}).start()
        print(b.pid, flush=True)
        time.sleep(60)
        """
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    tansu_pid = None
    try:
        ready, _, _ = select.select([parent.stdout], [], [], 20)
        assert ready, "child script did not report the broker pid"
        assert parent.stdout is not None
        line = parent.stdout.readline().decode().strip()
        assert line.isdigit(), (line, parent.stderr.read().decode() if parent.stderr else "")
        tansu_pid = int(line)
        assert pid_alive(tansu_pid)

        parent.send_signal(signal.SIGKILL)  # no atexit, no finally: only the kernel can help
        parent.wait(5)
        assert wait_gone(tansu_pid, 5), f"tansu pid {tansu_pid} outlived its parent"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        if tansu_pid is not None and pid_alive(tansu_pid):
            os.kill(tansu_pid, signal.SIGKILL)


def test_broker_started_from_short_lived_thread_survives_it(tmp_path: Path) -> None:
    # PR_SET_PDEATHSIG fires on the death of the spawning *thread*; spawn() must not let a
    # broker started from e.g. asyncio.to_thread die with that thread.
    b = EmbeddedBroker(log_dir=tmp_path)
    t = threading.Thread(target=b.start)
    t.start()
    t.join(20)
    try:
        assert b.pid is not None
        time.sleep(0.3)
        assert b.running
        wait_for_kafka(b.bootstrap, timeout=2)
    finally:
        b.stop()


def test_wait_for_kafka_on_closed_port_fails_fast_with_one_line() -> None:
    port = free_port()
    start = time.monotonic()
    with pytest.raises(RuntimeStartError) as info:
        wait_for_kafka(f"127.0.0.1:{port}", timeout=1.0)
    elapsed = time.monotonic() - start
    assert elapsed < 2.5
    msg = str(info.value)
    assert msg.startswith(f"cannot reach Kafka at 127.0.0.1:{port}: ")
    assert "\n" not in msg


def test_missing_binary_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeStartError, match="not executable"):
        EmbeddedBroker(binary=tmp_path / "no-such-tansu").start(timeout=2)


def test_broker_dying_during_start_says_so(tmp_path: Path) -> None:
    fake = tmp_path / "fake-tansu"
    fake.write_text("#!/bin/sh\necho 'boom: cannot open storage'\nexit 3\n")
    fake.chmod(0o755)
    b = EmbeddedBroker(binary=fake, log_dir=tmp_path)
    with pytest.raises(RuntimeStartError) as info:
        b.start(timeout=5)
    msg = str(info.value)
    assert "exited with code 3" in msg and "boom: cannot open storage" in msg
    assert "\n" not in msg
    assert not b.running


def test_taken_fixed_port_is_reported(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        b = EmbeddedBroker(port, log_dir=tmp_path)
        with pytest.raises(RuntimeStartError, match=f"could not bind 127.0.0.1:{port}"):
            b.start(timeout=5)
        assert not b.running
