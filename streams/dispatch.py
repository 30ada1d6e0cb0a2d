"""Care-action dispatcher: signed webhook delivery with retries, independent of Faust.

A care action (a dict decided by the engine, see ``docs/webhooks.md``) is POSTed as JSON to
the URL configured for its ``kind``. Each request carries the action's ``action_id`` as
``Idempotency-Key`` and a Stripe-like HMAC-SHA256 signature over timestamp + body, so a
receiver can reject forgeries and replays. Transient failures (408/425/429/5xx, timeouts,
connection errors) are retried with capped exponential backoff and full jitter, honouring
``Retry-After``; permanent ones (other 4xx) and exhausted retries end as ``dead_lettered``,
which the caller publishes to ``care-actions.dlq``. A 409 means the receiver already
processed this key (an earlier attempt timed out on our side, or a replay), so it counts as
delivered.

The dispatcher knows nothing of Kafka: the agent calls :meth:`Dispatcher.deliver_many` on a
batch, records every :class:`DeliveryResult`, publishes the dead-lettered ones, then commits.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

import httpx
import orjson
from prometheus_client import Counter, Histogram

from streams.metrics import REGISTRY

log = logging.getLogger(__name__)

#: Action kinds the care policy can decide; ``*`` in an endpoint map is the fallback URL.
KINDS = frozenset({"sms", "email", "outbound_call", "manager_escalation", "coupon", "webhook"})
DEFAULT_KIND = "*"

SIGNATURE_HEADER = "X-Touchpath-Signature"
KIND_HEADER = "X-Touchpath-Action-Kind"
ATTEMPT_HEADER = "X-Touchpath-Attempt"
IDEMPOTENCY_HEADER = "Idempotency-Key"
USER_AGENT = "touchpath-dispatch/1"

#: Statuses that mean "try again later" (RFC 9110 / RFC 8470 / RFC 6585); plus every 5xx.
RETRYABLE_STATUSES = frozenset({408, 425, 429})

Status = Literal["delivered", "failed", "dead_lettered", "skipped"]

# --- metrics ----------------------------------------------------------------------------------
# Declared here rather than in streams/metrics.py so this module can be reviewed and shipped on
# its own; they live in the same REGISTRY, so /metrics exports them like every other metric.

DISPATCH_ATTEMPTS = Counter(
    "touchpath_dispatch_attempts_total",
    "HTTP delivery attempts of care actions, per kind and outcome "
    "(delivered, already_processed, retryable_status, rejected, timeout, network_error).",
    ["kind", "outcome"],
    registry=REGISTRY,
)
DISPATCH_SECONDS = Histogram(
    "touchpath_dispatch_seconds",
    "Time from first attempt to a successful delivery of one care action, retries included.",
    ["kind"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
    registry=REGISTRY,
)
DISPATCH_RETRIES = Counter(
    "touchpath_dispatch_retries_total",
    "Delivery attempts scheduled again after a transient failure, per kind.",
    ["kind"],
    registry=REGISTRY,
)
CARE_ACTIONS_DELIVERED = Counter(
    "touchpath_care_actions_delivered_total",
    "Care actions through the dispatcher, per kind and final status "
    "(delivered, failed, dead_lettered, skipped).",
    ["kind", "status"],
    registry=REGISTRY,
)


# --- endpoints --------------------------------------------------------------------------------


def _check_url(kind: str, url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        # The URL is not echoed: webhook URLs often embed a token.
        raise ValueError(f"endpoint for kind {kind!r} is not an http(s) URL with a host")


def _check_kind(kind: str) -> None:
    if kind != DEFAULT_KIND and kind not in KINDS:
        # A typo ("smss") would otherwise silently route to the fallback URL.
        known = ", ".join(sorted(KINDS))
        raise ValueError(f"unknown action kind {kind!r} in endpoints; known: {known}, or *")


def parse_endpoints(spec: str) -> dict[str, str]:
    """Parse the env-var form ``"sms=http://gw/sms,*=http://hooks/care"`` into ``{kind: url}``.

    Whitespace around items is ignored and a trailing comma is allowed; only the first ``=``
    of an item separates kind from URL, so URLs may carry query strings. Raises ValueError
    with a one-line message on an empty spec, an item without ``=``, an unknown or repeated
    kind, or a URL that is not http(s) with a host.
    """
    items = [item.strip() for item in spec.split(",")]
    if not any(items):
        raise ValueError(
            "endpoint spec is empty; expected kind=url[,kind=url...], e.g. *=http://h/care"
        )
    routes: dict[str, str] = {}
    for n, item in enumerate(items, start=1):
        if not item:
            continue
        kind, sep, url = (part.strip() for part in item.partition("="))
        if not sep:
            raise ValueError(f"endpoint spec item {n} has no '='; expected kind=url")
        if not kind:
            raise ValueError(f"endpoint spec item {n} has an empty kind; expected kind=url")
        if not url:
            raise ValueError(f"endpoint spec item {n} ({kind}) has an empty URL")
        _check_kind(kind)
        if kind in routes:
            raise ValueError(f"endpoint spec names kind {kind!r} twice")
        _check_url(kind, url)
        routes[kind] = url
    return routes


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Where each action kind is delivered: ``{kind: url}``, ``"*"`` for every other kind."""

    routes: Mapping[str, str]

    def __post_init__(self) -> None:
        if not self.routes:
            raise ValueError("no endpoints configured; give at least one kind=url or *=url")
        for kind, url in self.routes.items():
            _check_kind(kind)
            _check_url(kind, url)

    @classmethod
    def parse(cls, spec: str) -> Endpoints:
        """Build from the env-var form, see :func:`parse_endpoints`."""
        return cls(parse_endpoints(spec))

    def url_for(self, kind: str) -> str | None:
        """The URL for ``kind``, else the ``*`` fallback, else None."""
        return self.routes.get(kind) or self.routes.get(DEFAULT_KIND)


# --- signatures -------------------------------------------------------------------------------


def _digest(secret: bytes, timestamp: int, body: bytes) -> str:
    return hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """Signature header value ``t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "t." + body)>``.

    The timestamp is inside the MAC so a receiver can refuse old requests (replays) without
    keeping every idempotency key forever.
    """
    return f"t={timestamp},v1={_digest(secret, timestamp, body)}"


def verify(
    secret: bytes, header: str, body: bytes, now: float | None = None, tolerance: int = 300
) -> bool:
    """Receiver-side check of :data:`SIGNATURE_HEADER`: True iff a ``v1`` MAC matches and the
    timestamp is within ``tolerance`` seconds of ``now`` (default: the wall clock).

    Several ``v1=`` entries are accepted (any may match) so senders can rotate secrets. Never
    raises on malformed input; compares in constant time.
    """
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isascii() and value.isdigit():
            timestamp = int(value)
        elif key == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        return False
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        return False
    expected = _digest(secret, timestamp, body).encode()
    # Check every candidate (no early exit) so timing says nothing about which one matched.
    matched = False
    for candidate in candidates:
        matched |= hmac.compare_digest(expected, candidate.encode("utf-8", "replace"))
    return matched


# --- backoff ----------------------------------------------------------------------------------


class Uniform(Protocol):
    """What the dispatcher needs of a random source (``random.Random`` fits)."""

    def uniform(self, a: float, b: float) -> float: ...


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delay-seconds or HTTP-date), else None."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; be lenient with senders that omit it
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


def backoff_delay(
    retry: int, base: float, cap: float, rng: Uniform, retry_after: float | None = None
) -> float:
    """Delay before retry number ``retry`` (0 for the first): full jitter over
    ``min(cap, base * 2**retry)``, raised to ``Retry-After`` when the receiver asked for more,
    never above ``cap``.

    Full jitter spreads the retries of a batch that failed together, so a recovering receiver
    is not hit by all of them at once.
    """
    delay = rng.uniform(0.0, min(cap, base * 2.0**retry))
    if retry_after is not None:
        delay = max(delay, retry_after)
    return min(cap, delay)


# --- results ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Attempt:
    """One HTTP attempt: its number (1-based), outcome label, status and one-line error."""

    number: int
    outcome: str
    http_status: int | None
    error: str
    started_at: datetime
    duration_s: float
    retry_after: float | None = None  # seconds the receiver asked us to wait, if it did


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """What became of one care action.

    ``status``: ``delivered`` (2xx or 409), ``dead_lettered`` (given up: publish to
    ``care-actions.dlq``), ``failed`` (the dispatcher was closed mid-way: not given up, leave
    it uncommitted so it is redelivered), ``skipped`` (dry run, nothing sent). ``error`` is
    one line without PII, ``""`` when delivered; ``history`` holds every attempt in order.
    """

    action_id: str
    kind: str
    status: Status
    attempts: int
    http_status: int | None
    error: str
    latency_s: float
    delivered_at: datetime | None
    history: tuple[Attempt, ...] = field(default=())

    @property
    def ok(self) -> bool:
        """True when the receiver has the action (delivered now or before)."""
        return self.status == "delivered"


def dead_letter_record(
    action: Mapping[str, Any], result: DeliveryResult, now: datetime
) -> dict[str, Any]:
    """The record to publish on ``care-actions.dlq`` for a dead-lettered action.

    The action is kept whole so it can be re-driven as is (same ``action_id``, so a receiver
    that did get it dedupes); ``delivery`` says why it was given up.
    """
    return {
        "schema_version": 1,
        "action_id": result.action_id,
        "kind": result.kind,
        "action": dict(action),
        "delivery": {
            "status": result.status,
            "attempts": result.attempts,
            "http_status": result.http_status,
            "error": result.error,
            "latency_s": round(result.latency_s, 3),
        },
        "dead_lettered_at": now.isoformat(),
    }


# --- the dispatcher ---------------------------------------------------------------------------


class _Outcome:
    """Outcome labels of one attempt (metric label values, bounded)."""

    DELIVERED = "delivered"
    ALREADY_PROCESSED = "already_processed"
    RETRYABLE_STATUS = "retryable_status"
    REJECTED = "rejected"
    TIMEOUT = "timeout"
    NETWORK_ERROR = "network_error"


_RETRYABLE_OUTCOMES = frozenset(
    {_Outcome.RETRYABLE_STATUS, _Outcome.TIMEOUT, _Outcome.NETWORK_ERROR}
)


def _as_mapping(action: Mapping[str, Any] | Any) -> Mapping[str, Any]:
    # Accept pydantic models too, so the agent can pass a CareAction without dumping it.
    dump = getattr(action, "model_dump", None)
    if callable(dump):
        return dump(mode="json")
    return action


class Dispatcher:
    """Delivers care actions to their webhook endpoints; see the module docstring.

    ``timeout`` bounds each attempt (connect to last byte); ``max_attempts`` counts the first
    one; ``backoff_base``/``backoff_cap`` shape the jittered exponential delays;
    ``max_retry_time`` (None: no bound) stops retrying once the next delay would take the
    delivery past that many seconds since its first attempt, so one dead receiver cannot stall
    a batch for long; ``concurrency`` bounds requests in flight (a delivery waiting out a
    backoff holds no slot). ``client``, ``sleep``, ``rng``, ``clock`` (wall, for signatures
    and dates) and ``monotonic`` (for latency and the retry budget) are injectable for tests.
    An injected client is not closed by :meth:`aclose`.
    """

    def __init__(
        self,
        endpoints: Endpoints | Mapping[str, str],
        secret: bytes | str,
        *,
        timeout: float = 5.0,
        max_attempts: int = 6,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
        max_retry_time: float | None = 120.0,
        concurrency: int = 16,
        dry_run: bool = False,
        client: httpx.AsyncClient | None = None,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        rng: Uniform | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.endpoints = endpoints if isinstance(endpoints, Endpoints) else Endpoints(endpoints)
        self._secret = secret.encode() if isinstance(secret, str) else bytes(secret)
        if not self._secret:
            raise ValueError("webhook signing secret is empty")
        if timeout <= 0 or backoff_base < 0 or backoff_cap < 0:
            raise ValueError("timeout must be > 0 and backoff base/cap >= 0")
        if max_attempts < 1 or concurrency < 1:
            raise ValueError("max_attempts and concurrency must be >= 1")
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.max_retry_time = max_retry_time
        self.concurrency = concurrency
        self.dry_run = dry_run
        self._sleep = sleep
        self._rng: Uniform = rng if rng is not None else random.Random()
        self._clock = clock
        self._monotonic = monotonic
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            limits=httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
            follow_redirects=False,  # a redirect would re-send the signed body somewhere else
            headers={"User-Agent": USER_AGENT},
        )
        self._slots = asyncio.Semaphore(concurrency)
        self._closing = asyncio.Event()
        self._active = 0
        self._idle = asyncio.Event()
        self._idle.set()

    async def __aenter__(self) -> Dispatcher:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop: deliveries waiting out a backoff return ``failed`` at once, those mid-request
        after it ends (at most ``timeout``); then the owned HTTP client is closed."""
        self._closing.set()
        await self._idle.wait()
        if self._owns_client:
            await self._client.aclose()

    async def deliver_many(
        self, actions: Iterable[Mapping[str, Any] | Any]
    ) -> list[DeliveryResult]:
        """Deliver a batch concurrently (at most ``concurrency`` requests in flight); results
        are in input order. An ``action_id`` repeated in the batch is delivered once and its
        result given for each occurrence."""
        batch = [_as_mapping(a) for a in actions]
        tasks: dict[str, asyncio.Task[DeliveryResult]] = {}
        order: list[asyncio.Task[DeliveryResult]] = []
        async with asyncio.TaskGroup() as group:
            for action in batch:
                key = str(action.get("action_id") or "")
                task = tasks.get(key) if key else None
                if task is None:
                    task = group.create_task(self.deliver(action))
                    if key:
                        tasks[key] = task
                order.append(task)
        return [task.result() for task in order]

    async def deliver(self, action: Mapping[str, Any] | Any) -> DeliveryResult:
        """Deliver one action, retrying as configured.

        Delivery problems never raise: they are in the result. Only bugs do (e.g. a closed
        injected client), and ``deliver_many`` then cancels the rest of the batch so the
        caller does not commit it.
        """
        self._active += 1
        self._idle.clear()
        try:
            result = await self._deliver(_as_mapping(action))
        finally:
            self._active -= 1
            if self._active == 0:
                self._idle.set()
        CARE_ACTIONS_DELIVERED.labels(_label(result.kind), result.status).inc()
        if result.ok:
            DISPATCH_SECONDS.labels(_label(result.kind)).observe(result.latency_s)
        return result

    async def _deliver(self, action: Mapping[str, Any]) -> DeliveryResult:
        action_id = str(action.get("action_id") or "")
        kind = str(action.get("kind") or "")
        # What logs and headers show: ids and kinds come from data and must not inject lines.
        shown_id = action_id if _header_safe(action_id) else repr(action_id[:64])
        shown_kind = kind if _header_safe(kind) else "other"
        start = self._monotonic()

        def done(
            status: Status, error: str = "", history: Sequence[Attempt] = ()
        ) -> DeliveryResult:
            last = history[-1] if history else None
            delivered = status == "delivered"
            if not delivered and status != "skipped":
                level = logging.WARNING if status == "dead_lettered" else logging.INFO
                log.log(level, "care action %s (%s) %s: %s", shown_id, shown_kind, status, error)
            return DeliveryResult(
                action_id=action_id,
                kind=kind,
                status=status,
                attempts=len(history),
                http_status=last.http_status if last else None,
                error=error,
                latency_s=self._monotonic() - start,
                delivered_at=datetime.fromtimestamp(self._clock(), UTC) if delivered else None,
                history=tuple(history),
            )

        if not _header_safe(action_id):
            # Without a usable idempotency key a retry or replay could act twice: never send it.
            return done("dead_lettered", "action has no usable action_id")
        if self.dry_run:
            log.debug("dry run: care action %s (%s) not sent", action_id, shown_kind)
            return done("skipped")
        if self._closing.is_set():
            return done("failed", "dispatcher closed after 0 attempts")
        url = self.endpoints.url_for(kind)
        if url is None:
            return done("dead_lettered", f"no endpoint for kind {kind[:40]!r}")
        try:
            # Same bytes on every attempt: only the signature's timestamp changes.
            body = orjson.dumps({**action, "idempotency_key": action_id})
        except (orjson.JSONEncodeError, TypeError) as exc:
            return done("dead_lettered", f"action is not JSON-serialisable ({type(exc).__name__})")

        history: list[Attempt] = []
        while True:
            attempt = await self._attempt(url, body, action_id, shown_kind, len(history) + 1)
            if attempt is None:
                return done("failed", f"dispatcher closed after {len(history)} attempts", history)
            history.append(attempt)
            DISPATCH_ATTEMPTS.labels(_label(kind), attempt.outcome).inc()
            if attempt.outcome in (_Outcome.DELIVERED, _Outcome.ALREADY_PROCESSED):
                log.debug(
                    "care action %s (%s) delivered, attempt %d",
                    action_id,
                    shown_kind,
                    attempt.number,
                )
                return done("delivered", history=history)
            if attempt.outcome not in _RETRYABLE_OUTCOMES:
                return done("dead_lettered", f"{attempt.error} (not retryable)", history)
            if attempt.number >= self.max_attempts:
                return done(
                    "dead_lettered",
                    f"gave up after {attempt.number} attempts: {attempt.error}",
                    history,
                )
            delay = backoff_delay(
                attempt.number - 1,
                self.backoff_base,
                self.backoff_cap,
                self._rng,
                attempt.retry_after,
            )
            elapsed = self._monotonic() - start
            if self.max_retry_time is not None and elapsed + delay > self.max_retry_time:
                return done(
                    "dead_lettered",
                    f"retry time {self.max_retry_time:g}s used up after {attempt.number} "
                    f"attempts: {attempt.error}",
                    history,
                )
            log.info(
                "care action %s (%s) attempt %d: %s; retrying in %.2fs",
                action_id,
                shown_kind,
                attempt.number,
                attempt.error,
                delay,
            )
            DISPATCH_RETRIES.labels(_label(kind)).inc()
            if await self._pause(delay):
                error = f"dispatcher closed after {attempt.number} attempts: {attempt.error}"
                return done("failed", error, history)

    async def _pause(self, delay: float) -> bool:
        """Sleep ``delay`` (via the injected sleep) unless closed first; True if closed."""
        if self._closing.is_set():
            return True
        sleeper = asyncio.ensure_future(self._sleep(delay))
        closer = asyncio.ensure_future(self._closing.wait())
        try:
            await asyncio.wait({sleeper, closer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, closer):
                task.cancel()
        return self._closing.is_set()

    async def _attempt(
        self, url: str, body: bytes, action_id: str, kind: str, number: int
    ) -> Attempt | None:
        """One POST; None if the dispatcher closed while this attempt waited for a slot."""
        async with self._slots:
            if self._closing.is_set():
                return None
            # Signed per attempt and only once a slot is ours: a retry minutes later, or a
            # request queued behind a slow batch, must not look like a replay to the receiver.
            now = self._clock()
            timestamp = int(now)
            headers = {
                "Content-Type": "application/json",
                IDEMPOTENCY_HEADER: action_id,
                SIGNATURE_HEADER: sign(self._secret, timestamp, body),
                KIND_HEADER: kind,
                ATTEMPT_HEADER: str(number),
            }
            started_at = datetime.fromtimestamp(now, UTC)
            t0 = self._monotonic()
            status: int | None = None
            retry_after: float | None = None
            try:
                # httpx's timeout is per phase; asyncio.timeout bounds the whole exchange, so
                # a receiver trickling bytes cannot hold a slot past ``timeout``.
                async with asyncio.timeout(self.timeout):
                    response = await self._client.post(
                        url, content=body, headers=headers, timeout=self.timeout
                    )
                status = response.status_code
            except (httpx.TimeoutException, TimeoutError):
                outcome, error = _Outcome.TIMEOUT, f"timeout after {self.timeout:g}s"
            except httpx.UnsupportedProtocol:
                outcome, error = _Outcome.REJECTED, "unsupported URL scheme"
            except httpx.HTTPError as exc:
                # Connection refused/reset, protocol or decoding errors: the receiver may or may
                # not have the action, and the Idempotency-Key makes a retry safe either way.
                # Type name only: messages may carry the URL, and URLs may carry tokens.
                outcome, error = _Outcome.NETWORK_ERROR, f"connection failed ({type(exc).__name__})"
            else:
                outcome, error = _classify(status)
                if outcome == _Outcome.RETRYABLE_STATUS:
                    retry_after = parse_retry_after(
                        response.headers.get("Retry-After"), self._clock()
                    )
            duration = self._monotonic() - t0
        return Attempt(number, outcome, status, error, started_at, duration, retry_after)


def _classify(status: int) -> tuple[str, str]:
    if 200 <= status < 300:
        return _Outcome.DELIVERED, ""
    if status == 409:
        # The receiver already holds this Idempotency-Key: an earlier attempt (whose answer we
        # lost) or a replay got through. Re-sending cannot help and the customer was reached.
        return _Outcome.ALREADY_PROCESSED, ""
    if status in RETRYABLE_STATUSES or status >= 500:
        return _Outcome.RETRYABLE_STATUS, f"HTTP {status}"
    # Other 4xx (and 3xx, as redirects are not followed): the request itself is wrong; the
    # same bytes will be refused again, so retrying only delays the dead letter.
    return _Outcome.REJECTED, f"HTTP {status}"


def _header_safe(value: str) -> bool:
    # Values go into HTTP headers: control characters would make every attempt fail.
    return bool(value) and len(value) <= 200 and value.isascii() and value.isprintable()


def _label(kind: str) -> str:
    # Kinds come from data: clamp to the known set so a bad record cannot explode the series.
    return kind if kind in KINDS else "other"
