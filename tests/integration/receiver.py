"""A real HTTP care-action receiver for integration tests (stdlib server in a thread).

It behaves as docs/webhooks.md tells receivers to: verify the signature, process each
``Idempotency-Key`` once (409 on a repeat), and it can be scripted to fail (500 for the
next N requests), to be slow, or to hold every request until released.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

from streams.dispatch import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, verify


def _why_bad(secret: bytes, header: str, body: bytes) -> str:
    """Diagnosis of a failed signature: a stale timestamp or a MAC that does not match."""
    t = dict(p.partition("=")[::2] for p in header.split(",")).get("t", "")
    if t.isdigit() and verify(secret, header, body, now=float(t)):
        return f"stale: signed {time.time() - int(t):.0f} s ago"
    return f"MAC mismatch over {len(body)} bytes: {header[:40]!r}"


class Receiver:
    """Counts every request per idempotency key and processes each key once."""

    def __init__(self, secret: str) -> None:
        self.secret = secret.encode()
        self.requests: Counter[str] = Counter()
        #: 409 answers: a key that had been processed came again (a redelivery)
        self.refused: Counter[str] = Counter()
        self.processed: dict[str, dict[str, Any]] = {}
        self.bad_signatures = 0
        self.bad_reasons: list[str] = []  # why each bad signature was bad
        self.truncated = 0  # requests cut short by the sender dying
        self.fail_next = 0
        self.delay = 0.0
        self.waiting = 0  # requests held at the gate right now
        self.gate = threading.Event()
        self.gate.set()
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/care"

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.gate.set()
        self.server.shutdown()
        self.server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        rec = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length)
                if len(body) < length:
                    # The sender died mid-request (a kill -9 test): nothing to answer, and
                    # not a signature failure; the sender retries after its restart.
                    with rec.lock:
                        rec.truncated += 1
                    self.close_connection = True
                    return
                with rec.lock:
                    rec.waiting += 1
                rec.gate.wait(60)
                with rec.lock:
                    rec.waiting -= 1
                if rec.delay:
                    time.sleep(rec.delay)
                key = self.headers.get(IDEMPOTENCY_HEADER, "")
                with rec.lock:
                    rec.requests[key] += 1
                    header = self.headers.get(SIGNATURE_HEADER, "")
                    if not verify(rec.secret, header, body):
                        rec.bad_signatures += 1
                        rec.bad_reasons.append(_why_bad(rec.secret, header, body))
                        status = 401
                    elif rec.fail_next > 0:
                        rec.fail_next -= 1
                        status = 500
                    elif key in rec.processed:
                        rec.refused[key] += 1
                        status = 409
                    else:
                        rec.processed[key] = orjson.loads(body)
                        status = 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        return Handler
