"""The care-action dispatcher against a real local HTTP receiver (aiohttp on 127.0.0.1).

The receiver verifies signatures with ``streams.dispatch.verify``, dedupes on the
Idempotency-Key (409 the second time, as the contract says) and can be scripted to fail.
Backoff sleeps are injected and recorded, so the whole file runs in about a second.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import re
import socket
import time
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any, TypeVar

import orjson
import pytest
from aiohttp import web

from streams.dispatch import (
    Dispatcher,
    Endpoints,
    backoff_delay,
    dead_letter_record,
    parse_endpoints,
    parse_retry_after,
    sign,
    verify,
)
from streams.metrics import REGISTRY

SECRET = b"whsec-test"


T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    """No asyncio plugin in this project: each test drives its own event loop."""
    return asyncio.run(coro)


def action(n: int = 1, kind: str = "sms") -> dict[str, Any]:
    return {
        "action_id": f"00000000-0000-5000-8000-{n:012d}",
        "pain_point_id": f"pp-{n}",
        "sequence": 0,
        "customer_id": f"C{n}",
        "tier": "A",
        "kind": kind,
        "template": "apology_sms",
        "priority": 1,
        "channel": "sms",
        "status": "sent",
        "due_at": "2026-03-01T10:00:00+00:00",
        "decided_at": "2026-03-01T10:00:00+00:00",
    }


# --- the receiver -----------------------------------------------------------------------------

#: One scripted answer: ``(status, headers)``, or ``("sleep", seconds)`` before answering 200.
Step = tuple[Any, Any]


@dataclass
class Receiver:
    """A webhook receiver as the contract describes it, plus a script of failures."""

    script: list[Step] = field(default_factory=list)
    delay: float = 0.0  # every request holds this long (to measure concurrency)
    requests: list[dict[str, Any]] = field(default_factory=list)
    processed: list[str] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        key = request.headers.get("Idempotency-Key", "")
        self.requests.append(
            {
                "key": key,
                "signature": request.headers.get("X-Touchpath-Signature", ""),
                "kind": request.headers.get("X-Touchpath-Action-Kind"),
                "content_type": request.headers.get("Content-Type"),
                "body": body,
            }
        )
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.script:
                what, arg = self.script.pop(0)
                if what == "sleep":
                    await asyncio.sleep(arg)
                else:
                    return web.Response(status=what, headers=arg or {})
            if not verify(SECRET, request.headers.get("X-Touchpath-Signature", ""), body):
                return web.Response(status=401)
            if orjson.loads(body)["idempotency_key"] != key:
                return web.Response(status=400)
            if key in self.processed:
                return web.Response(status=409)
            self.processed.append(key)
            return web.json_response({"ok": True})
        finally:
            self.in_flight -= 1


@asynccontextmanager
async def serve(receiver: Receiver) -> AsyncIterator[Receiver]:
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    receiver.url = f"http://{host}:{port}/hook"
    try:
        yield receiver
    finally:
        await runner.cleanup()


def closed_port_url() -> str:
    """A URL nobody listens on: connections are refused at once."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


@dataclass
class Sleeps:
    """Injected sleep: records the delays, returns at once."""

    delays: list[float] = field(default_factory=list)

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def dispatcher(url: str, sleeps: Sleeps | None = None, **kw: Any) -> Dispatcher:
    kw.setdefault("timeout", 1.0)
    kw.setdefault("rng", random.Random(7))
    return Dispatcher({"*": url}, SECRET, sleep=sleeps or Sleeps(), **kw)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


# --- signatures -------------------------------------------------------------------------------


def test_signature_verifies_and_rejects_tampering_wrong_secret_and_stale_timestamps():
    body = b'{"action_id":"a1"}'
    now = 1_770_000_000
    header = sign(SECRET, now, body)
    assert header.startswith(f"t={now},v1=")
    assert verify(SECRET, header, body, now=now + 299)
    assert not verify(SECRET, header, body + b" ", now=now)  # tampered body
    assert not verify(b"other", header, body, now=now)  # wrong secret
    assert not verify(SECRET, header, body, now=now + 301)  # stale: a replay
    assert not verify(SECRET, header, body, now=now - 301)  # from the future
    # the timestamp is inside the MAC: moving it forward breaks the signature
    assert not verify(SECRET, header.replace(f"t={now}", f"t={now + 60}"), body, now=now + 60)


@pytest.mark.parametrize("header", ["", "t=1", "v1=ab", "t=x,v1=ab", "garbage", "t=1,v1=é"])
def test_malformed_signature_headers_are_rejected_not_raised(header: str):
    assert not verify(SECRET, header, b"{}", now=1)


def test_any_v1_may_match_so_secrets_can_rotate():
    old = sign(b"old", 100, b"{}")
    new_v1 = sign(SECRET, 100, b"{}").split(",")[1]
    assert verify(SECRET, f"{old},{new_v1}", b"{}", now=100)


# --- endpoints --------------------------------------------------------------------------------


def test_parse_endpoints_accepts_spaces_trailing_comma_and_query_strings():
    spec = " sms = http://gw/sms?token=a=b , *=https://hooks.example/care, "
    assert parse_endpoints(spec) == {
        "sms": "http://gw/sms?token=a=b",
        "*": "https://hooks.example/care",
    }
    endpoints = Endpoints.parse(spec)
    assert endpoints.url_for("sms") == "http://gw/sms?token=a=b"
    assert endpoints.url_for("coupon") == "https://hooks.example/care"
    assert Endpoints({"sms": "http://gw/sms"}).url_for("coupon") is None


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "empty"),
        (" , ", "empty"),
        ("sms", "no '='"),
        ("=http://a/x", "empty kind"),
        ("sms=", "empty URL"),
        ("sms=ftp://a/x", "not an http(s) URL"),
        ("sms=http:///x", "not an http(s) URL"),
        ("smss=http://a/x", "unknown action kind 'smss'"),
        ("sms=http://a/x,sms=http://b/x", "twice"),
    ],
)
def test_parse_endpoints_errors_are_one_clear_line(spec: str, message: str):
    with pytest.raises(ValueError, match=re.escape(message)) as err:
        parse_endpoints(spec)
    assert "\n" not in str(err.value)
    assert "ftp://" not in str(err.value)  # URLs may hold tokens: never echoed


# --- backoff ----------------------------------------------------------------------------------


def test_backoff_is_full_jitter_capped_and_raised_to_retry_after():
    rng = random.Random(1)
    for retry in range(10):
        ceiling = min(30.0, 0.5 * 2**retry)
        delays = [backoff_delay(retry, 0.5, 30.0, rng) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8  # jitter spans the range
    assert backoff_delay(0, 0.5, 30.0, rng, retry_after=7) == 7
    assert backoff_delay(0, 0.5, 30.0, rng, retry_after=90) == 30  # bounded by the cap


def test_retry_after_seconds_and_http_date():
    now = 1_770_000_000.0
    assert parse_retry_after("3", now) == 3
    assert parse_retry_after(formatdate(now + 12, usegmt=True), now) == pytest.approx(12)
    assert parse_retry_after(formatdate(now - 12, usegmt=True), now) == 0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


# --- delivery ---------------------------------------------------------------------------------


def test_delivers_signed_json_with_idempotency_and_kind_headers():
    async def scenario() -> None:
        async with serve(Receiver()) as rx, dispatcher(rx.url) as d:
            before = sample(
                "touchpath_care_actions_delivered_total", kind="sms", status="delivered"
            )
            result = await d.deliver(action(1))
            assert result.status == "delivered"
            assert (result.attempts, result.http_status, result.error) == (1, 200, "")
            assert result.delivered_at is not None and result.latency_s >= 0
            (req,) = rx.requests
            assert req["key"] == action(1)["action_id"]
            assert req["kind"] == "sms" and req["content_type"] == "application/json"
            assert orjson.loads(req["body"]) == {**action(1), "idempotency_key": req["key"]}
            after = sample("touchpath_care_actions_delivered_total", kind="sms", status="delivered")
            assert after == before + 1

    run(scenario())


def test_500s_then_success_delivers_once_under_one_idempotency_key():
    async def scenario() -> None:
        rx = Receiver(script=[(500, None), (503, None)])
        sleeps = Sleeps()
        async with serve(rx), dispatcher(rx.url, sleeps) as d:
            retries = sample("touchpath_dispatch_retries_total", kind="sms")
            result = await d.deliver(action(2))
            assert (result.status, result.attempts, result.http_status) == ("delivered", 3, 200)
            assert [a.error for a in result.history] == ["HTTP 500", "HTTP 503", ""]
            assert len(sleeps.delays) == 2
            assert sample("touchpath_dispatch_retries_total", kind="sms") == retries + 2
            assert {r["key"] for r in rx.requests} == {action(2)["action_id"]}
            assert len({r["body"] for r in rx.requests}) == 1  # same bytes every time
            assert rx.processed == [action(2)["action_id"]]

            # a replay of the same action: the receiver answers 409, which is "delivered"
            again = await d.deliver(action(2))
            assert (again.status, again.http_status, again.attempts) == ("delivered", 409, 1)
            assert rx.processed == [action(2)["action_id"]]

    run(scenario())


def test_signature_timestamp_is_recomputed_per_attempt():
    async def scenario() -> None:
        rx = Receiver(script=[(500, None), (500, None)])
        ticks = itertools.count()
        start = time.time()
        async with serve(rx), dispatcher(rx.url, clock=lambda: start + 20 * next(ticks)) as d:
            assert (await d.deliver(action(3))).status == "delivered"
        stamps = [int(r["signature"].split(",")[0].removeprefix("t=")) for r in rx.requests]
        assert len(stamps) == 3 and stamps == sorted(set(stamps))

    run(scenario())


def test_timeout_then_success():
    async def scenario() -> None:
        rx = Receiver(script=[("sleep", 0.3)])
        async with serve(rx), dispatcher(rx.url, timeout=0.1) as d:
            result = await d.deliver(action(4))
        assert (result.status, result.attempts) == ("delivered", 2)
        assert result.history[0].outcome == "timeout"
        assert result.history[0].error == "timeout after 0.1s"
        assert result.history[0].http_status is None

    run(scenario())


def test_retry_after_is_honoured():
    async def scenario() -> None:
        rx = Receiver(
            script=[
                (429, {"Retry-After": "3"}),
                (503, {"Retry-After": formatdate(time.time() + 10, usegmt=True)}),
            ]
        )
        sleeps = Sleeps()
        async with serve(rx), dispatcher(rx.url, sleeps) as d:
            result = await d.deliver(action(5))
        assert (result.status, result.attempts) == ("delivered", 3)
        first, second = sleeps.delays
        assert first >= 3
        assert 8 <= second <= 10  # HTTP-date form, a little of it spent already

    run(scenario())


def test_400_is_dead_lettered_at_once():
    async def scenario() -> None:
        rx = Receiver(script=[(400, None)])
        sleeps = Sleeps()
        async with serve(rx), dispatcher(rx.url, sleeps) as d:
            result = await d.deliver(action(6))
        assert (result.status, result.attempts, result.http_status) == ("dead_lettered", 1, 400)
        assert result.error == "HTTP 400 (not retryable)"
        assert sleeps.delays == []
        record = dead_letter_record(action(6), result, now=result.history[0].started_at)
        assert record["action"] == action(6) and record["delivery"]["attempts"] == 1

    run(scenario())


def test_stale_clock_is_rejected_by_the_receiver_and_not_retried():
    async def scenario() -> None:
        def stale_clock() -> float:
            return time.time() - 1000  # beyond the receiver's 300 s tolerance

        async with serve(Receiver()) as rx, dispatcher(rx.url, clock=stale_clock) as d:
            result = await d.deliver(action(7))
        assert (result.status, result.http_status, result.attempts) == ("dead_lettered", 401, 1)
        assert rx.processed == []

    run(scenario())


def test_receiver_down_for_good_is_dead_lettered_after_max_attempts():
    async def scenario() -> None:
        sleeps = Sleeps()
        async with dispatcher(closed_port_url(), sleeps, max_attempts=4, timeout=0.5) as d:
            result = await asyncio.wait_for(d.deliver(action(8)), timeout=5)
        assert (result.status, result.attempts, result.http_status) == ("dead_lettered", 4, None)
        assert result.error == "gave up after 4 attempts: connection failed (ConnectError)"
        assert len(sleeps.delays) == 3
        assert all(0 <= d <= min(30, 0.5 * 2**i) for i, d in enumerate(sleeps.delays))

    run(scenario())


def test_retry_time_budget_stops_retrying():
    async def scenario() -> None:
        now = [0.0]

        async def sleep(delay: float) -> None:
            now[0] += delay

        class Ceiling:
            def uniform(self, a: float, b: float) -> float:
                return b

        d = Dispatcher(
            {"*": closed_port_url()},
            SECRET,
            max_attempts=50,
            max_retry_time=10,
            sleep=sleep,
            rng=Ceiling(),
            monotonic=lambda: now[0],
        )
        async with d:
            result = await d.deliver(action(9))
        # ceilings 0.5 + 1 + 2 + 4 = 7.5 s slept; the next 8 s would pass the 10 s budget
        assert (result.status, result.attempts) == ("dead_lettered", 5)
        assert result.error.startswith("retry time 10s used up after 5 attempts")

    run(scenario())


def test_deliver_many_bounds_concurrency_keeps_order_and_dedupes():
    async def scenario() -> None:
        rx = Receiver(delay=0.05)
        batch = [action(n, kind="email") for n in range(20)]
        async with serve(rx), dispatcher(rx.url, concurrency=4) as d:
            results = await d.deliver_many([*batch, action(3, kind="email")])
        assert rx.max_in_flight == 4
        assert [r.action_id for r in results] == [a["action_id"] for a in batch] + [
            batch[3]["action_id"]
        ]
        assert all(r.status == "delivered" for r in results)
        assert len(rx.requests) == 20  # the repeated action was sent once
        assert results[-1] is results[3]

    run(scenario())


def test_dry_run_sends_nothing():
    async def scenario() -> None:
        async with serve(Receiver()) as rx, dispatcher(rx.url, dry_run=True) as d:
            results = await d.deliver_many([action(10), action(11)])
        assert [r.status for r in results] == ["skipped", "skipped"]
        assert all(r.attempts == 0 and r.delivered_at is None for r in results)
        assert rx.requests == []

    run(scenario())


def test_no_endpoint_and_no_action_id_are_dead_lettered_without_sending():
    async def scenario() -> None:
        async with serve(Receiver()) as rx, Dispatcher({"sms": rx.url}, SECRET) as d:
            no_route, no_id = await d.deliver_many(
                [action(12, kind="coupon"), {**action(13), "action_id": ""}]
            )
        assert (no_route.status, no_route.error) == (
            "dead_lettered",
            "no endpoint for kind 'coupon'",
        )
        assert (no_id.status, no_id.attempts) == ("dead_lettered", 0)
        assert rx.requests == []

    run(scenario())


def test_close_interrupts_a_backoff_and_reports_failed_not_dead_lettered():
    async def scenario() -> None:
        class Ceiling:
            def uniform(self, a: float, b: float) -> float:
                return b

        backing_off = asyncio.Event()

        async def sleep(delay: float) -> None:
            backing_off.set()
            await asyncio.sleep(delay)  # a real 60 s sleep: only close can cut it short

        d = Dispatcher(
            {"*": closed_port_url()},
            SECRET,
            backoff_base=60,
            backoff_cap=60,
            rng=Ceiling(),
            sleep=sleep,
        )
        task = asyncio.create_task(d.deliver(action(14)))
        await asyncio.wait_for(backing_off.wait(), timeout=5)
        t0 = time.monotonic()
        await d.aclose()
        result = await task
        assert time.monotonic() - t0 < 1
        assert (result.status, result.attempts) == ("failed", 1)
        assert (await d.deliver(action(15))).status == "failed"

    run(scenario())


def test_close_lets_the_request_in_flight_finish_and_fails_the_queued_ones():
    async def scenario() -> None:
        rx = Receiver(delay=0.2)
        async with serve(rx):
            d = dispatcher(rx.url, concurrency=1)
            batch = asyncio.create_task(d.deliver_many([action(16), action(17), action(18)]))
            while not rx.requests:  # the first request is with the receiver
                await asyncio.sleep(0.01)
            await d.aclose()
            first, *queued = await batch
        assert (first.status, first.attempts) == ("delivered", 1)
        assert [(r.status, r.attempts) for r in queued] == [("failed", 0), ("failed", 0)]
        assert len(rx.requests) == 1

    run(scenario())


def test_constructor_rejects_bad_settings():
    with pytest.raises(ValueError, match="secret"):
        Dispatcher({"*": "http://h/x"}, b"")
    with pytest.raises(ValueError, match="no endpoints"):
        Dispatcher({}, SECRET)
    with pytest.raises(ValueError, match="max_attempts"):
        Dispatcher({"*": "http://h/x"}, SECRET, max_attempts=0)
