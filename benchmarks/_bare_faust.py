"""A bare faust-streaming agent that does nothing per message: the Faust reference.

    python -m benchmarks._bare_faust --bootstrap H:P --topic T --expected N --out FILE

Consumes ``--topic`` (all its partitions, a fresh consumer group = ``--app-id``) with the
worker's consumer settings (``broker_rebalance_timeout=4``, ``broker_session_timeout=8``,
``broker_heartbeat_interval=1``, earliest offsets, raw values). The agent counts messages and
writes ``{"first": t, "last": t, "count": n, "cpu_first": c, "cpu_last": c}`` (wall time
and process CPU time at the first and the last message) to ``--out`` once it has seen
``--expected`` messages, so the rate excludes start-up and the group join. The parent stops
the process after that.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import faust


def build_app(
    app_id: str, bootstrap: str, topic: str, partitions: int, expected: int, out: Path
) -> faust.App:
    """The Faust app with one counting agent over ``topic``."""
    app = faust.App(
        app_id,
        broker=f"kafka://{bootstrap}",
        store="memory://",
        topic_partitions=partitions,
        topic_allow_declare=False,
        consumer_auto_offset_reset="earliest",
        broker_rebalance_timeout=4,
        broker_session_timeout=8,
        broker_heartbeat_interval=1,
        web_enabled=False,
        stream_wait_empty=False,
        datadir=out.parent / f"{app_id}-data",  # beside the output, not in the repo
    )
    source = app.topic(topic, value_serializer="raw", key_serializer="raw", partitions=partitions)
    state: dict[str, Any] = {"count": 0, "first": 0.0, "last": 0.0, "written": False}

    @app.agent(source, name="bare")
    async def bare(stream: faust.StreamT[bytes]) -> None:
        async for _ in stream:
            now = time.time()
            if not state["count"]:
                state["first"] = now
                state["cpu_first"] = time.process_time()
            state["count"] += 1
            state["last"] = now
            if state["count"] >= expected and not state["written"]:
                state["written"] = True
                state["cpu_last"] = time.process_time()
                tmp = out.with_suffix(".tmp")
                tmp.write_text(json.dumps(state))
                tmp.rename(out)

    return app


def main(argv: Sequence[str] | None = None) -> None:
    """Run the bare agent until stopped from outside."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--expected", type=int, required=True)
    ap.add_argument("--app-id", default="bench-bare-faust")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    app = build_app(
        args.app_id, args.bootstrap, args.topic, args.partitions, args.expected, args.out
    )
    worker = faust.Worker(app, loglevel="warning", quiet=True)
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise


if __name__ == "__main__":
    main()
