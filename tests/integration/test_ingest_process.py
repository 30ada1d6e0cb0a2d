"""Ingest in its own process (``ingest_mode=process``, the default): the worker mirrors its
metrics, starts it again when it dies without losing a record, and never leaves it behind."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from streams.simulator import SimConfig, simulate
from tests.integration.conftest import WorkerHandle, wait_until
from tests.integration.helpers import counter, publish_customers, publish_records

pytestmark = pytest.mark.integration


def _ingest_pids(worker_pid: int) -> list[int]:
    """Child processes of the worker that run ``streams.ingest_process``."""
    pids = []
    for task in Path(f"/proc/{worker_pid}/task").glob("*/children"):
        for pid in task.read_text().split():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"streams.ingest_process" in cmd:
                pids.append(int(pid))
    return pids


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"  # a zombie runs nothing


def _one_ingest(worker: WorkerHandle) -> int:
    wait_until(lambda: len(_ingest_pids(worker.proc.pid)) == 1, 30, "one ingest process", worker)
    return _ingest_pids(worker.proc.pid)[0]


def test_a_killed_ingest_process_is_replaced_and_nothing_is_lost(worker_factory):
    sim = simulate(SimConfig(customers=120, days=6, seed=83))
    half = len(sim.records) // 2
    worker = worker_factory()
    first = _one_ingest(worker)
    publish_customers(worker, sim.customers)
    publish_records(worker, sim.records[:half])
    wait_until(
        lambda: counter(worker, "touchpath_events_in_total") >= half, 60, "first half in", worker
    )
    os.kill(first, signal.SIGKILL)
    wait_until(
        lambda: counter(worker, "touchpath_agent_errors_total") >= 1, 30, "death counted", worker
    )
    second = _one_ingest(worker)
    assert second != first
    publish_records(worker, sim.records[half:])
    valid, malformed = sim.manifest["events_valid"], sim.manifest["events_malformed"]

    def landed() -> bool:
        t = worker.query("landed_totals")[0]
        return t["touchpoints"] >= valid and t["dead_letters"] >= malformed

    wait_until(landed, 120, "landing", worker)
    totals = worker.query("landed_totals")[0]
    assert (totals["touchpoints"], totals["dead_letters"]) == (valid, malformed)
    # the mirrored counters go on from the dead process's last report (at least once: a
    # batch read but not yet committed when it died is read again)
    wait_until(
        lambda: counter(worker, "touchpath_events_in_total") >= len(sim.records),
        30,
        "all records counted",
        worker,
    )
    assert worker.alive()


def test_the_ingest_process_dies_with_a_killed_worker(worker_factory):
    worker = worker_factory()
    pid = _one_ingest(worker)
    os.kill(worker.proc.pid, signal.SIGKILL)
    worker.proc.wait(10)
    deadline = time.monotonic() + 10
    while not _gone(pid):
        assert time.monotonic() < deadline, "the ingest process outlived its worker"
        time.sleep(0.1)


def test_a_stopped_worker_stops_its_ingest_process(worker_factory):
    worker = worker_factory()
    pid = _one_ingest(worker)
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.proc.wait(40) is not None
    assert _gone(pid)
    assert "did not stop" not in worker.log()
