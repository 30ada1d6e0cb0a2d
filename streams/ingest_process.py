"""Ingest in a child process of the worker, off the worker's GIL.

Ingest (read raw records, validate, route, forward, commit) shares nothing with the agents
but the broker, and in a thread of the worker it took a fifth of the one core the worker's
GIL allows (``py-spy --gil``: 20%). ``ingest_mode=process`` (the default) runs the same
:class:`~streams.ingest.Ingestor` loop in a child process instead:

* the worker starts ``python -m streams.ingest_process`` with the kernel's promise to kill it
  when the worker dies (``PR_SET_PDEATHSIG``: a ``kill -9`` of the worker leaves no orphan
  consuming raw records), and hands it the settings through its stdin;
* the child writes its ingest metrics (:func:`streams.metrics.snapshot`) as one JSON line
  on stdout every ``SNAPSHOT_SECONDS`` and when it stops; the worker mirrors them into its
  own registry, so ``/metrics`` stays one page; its logs go to the worker's stderr;
* SIGTERM stops it after the batch in hand (flushed and committed), leaving the consumer
  group cleanly; a child that dies otherwise is started again and counted in
  ``touchpath_agent_errors_total{agent="ingest"}`` (ingest commits only what it has
  forwarded, so its successor re-reads the rest).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import signal
import sys
import time
from typing import IO, Any

import mode
import orjson

from schemas.validation import Validator
from streams import faults, metrics
from streams.config import Settings
from streams.ingest import Ingestor
from streams.runtime import die_with_parent, setup_logging, tune_gc

log = logging.getLogger(__name__)

#: How often the child reports its metrics.
SNAPSHOT_SECONDS = 0.25
#: How long a stopping child may take to finish its batch and leave the group.
STOP_TIMEOUT = 20.0
#: Longest report line the worker reads (bytes).
REPORT_LIMIT = 1 << 24
#: Wait before starting a child again after it died.
RESTART_DELAY = 1.0


# --- the child ------------------------------------------------------------------------------
def _report(out: IO[bytes]) -> None:
    out.write(orjson.dumps(metrics.snapshot()) + b"\n")
    out.flush()


def main() -> None:
    """Entry point of the child: settings from stdin, metrics to stdout, until SIGTERM."""
    settings, bootstrap = pickle.load(sys.stdin.buffer)  # from the worker that started us
    # stdout carries metrics only: anything else printing to fd 1 would go to stderr
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    setup_logging(settings.log_level)
    faults.configure(settings.fault_hold_at)
    stopping = False

    def stop(*_: Any) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the worker decides when we stop
    ingestor = Ingestor(settings, bootstrap, Validator.from_settings(settings))
    log.info("ingest process %d consuming %s", os.getpid(), ingestor.raw_topic)
    tune_gc(settings.gc_young_threshold)
    reported = 0.0
    while not stopping:
        if not ingestor.run_guarded():
            time.sleep(1.0)
        if time.monotonic() - reported >= SNAPSHOT_SECONDS:
            _report(out)
            reported = time.monotonic()
    ingestor.close()
    _report(out)


# --- the worker's side ----------------------------------------------------------------------
class IngestProcessService(mode.Service):
    """Runs ingest in a child process for as long as the worker runs (module docstring)."""

    settings: Settings
    bootstrap: str

    def __post_init__(self) -> None:
        self._proc: asyncio.subprocess.Process | None = None
        self._mirror = metrics.Mirror()

    async def on_start(self) -> None:
        await self._start_child()

    async def _start_child(self) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "streams.ingest_process",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            # a report's size grows with the raw partitions owned (their lag): no 64 KiB cap
            limit=REPORT_LIMIT,
            # its own session: a terminal's Ctrl-C reaches the worker, which stops it
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )
        assert self._proc.stdin is not None
        self._proc.stdin.write(pickle.dumps((self.settings, self.bootstrap)))
        await self._proc.stdin.drain()
        self._proc.stdin.close()
        self._mirror.reset()
        log.info("ingest runs in process %d", self._proc.pid)

    @mode.Service.task
    async def _supervise(self) -> None:
        while not self.should_stop:
            proc = self._proc
            if proc is None or proc.stdout is None:
                await self.sleep(0.05)
                continue
            line = await proc.stdout.readline()
            if line:
                self._apply(line)
                continue
            code = await proc.wait()
            if self.should_stop:
                return
            metrics.AGENT_ERRORS.labels(agent="ingest").inc()
            log.error("ingest process %d exited with %s; starting it again", proc.pid, code)
            await self.sleep(RESTART_DELAY)
            if not self.should_stop:
                await self._start_child()

    def _apply(self, line: bytes) -> None:
        try:
            report = orjson.loads(line)
        except orjson.JSONDecodeError:
            log.warning("ingest process wrote a line that is not a report: %r", line[:200])
            return
        self._mirror.apply(report)

    async def on_stop(self) -> None:
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT)
        except TimeoutError:
            log.warning("ingest process %d did not stop in %.0f s: killed", proc.pid, STOP_TIMEOUT)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


if __name__ == "__main__":
    main()
