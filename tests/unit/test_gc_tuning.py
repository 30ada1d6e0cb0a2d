"""The garbage-collector tuning the worker and its ingest process apply once started:
start-up objects frozen out of collections, young collections every N new objects instead
of every 700 (full collections took 13% of a worker's time, docs/benchmarks.md)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from streams.config import Settings

# In a child: the test process's own collector stays as pytest left it.
SCRIPT = textwrap.dedent(
    """
    import gc, sys
    from streams.runtime import tune_gc
    built_at_start = [[i] for i in range(1000)]
    tune_gc(int(sys.argv[1]))
    walked = {id(o) for o in gc.get_objects()}
    frozen = sum(id(o) not in walked for o in built_at_start)
    collections_before = [s["collections"] for s in gc.get_stats()]
    batch = [[i] for i in range(20_000)]  # what one batch in flight allocates, about
    young = gc.get_stats()[0]["collections"] - collections_before[0]
    print(frozen, gc.get_threshold()[0], young)
    """
)


def _run(threshold: int) -> tuple[int, int, int]:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(threshold)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.split()
    frozen, set_to, young = (int(x) for x in out)
    return frozen, set_to, young


def test_start_up_objects_are_frozen_and_a_batch_triggers_no_young_collection() -> None:
    frozen, set_to, young = _run(100_000)
    assert frozen == 1000  # never walked by a collection again
    assert set_to == 100_000
    assert young == 0


def test_the_default_threshold_would_collect_many_times_in_one_batch() -> None:
    # the same allocations under CPython's default: what the tuning removes
    _, set_to, young = _run(700)
    assert set_to == 700
    assert young >= 20


def test_the_setting_defaults_far_above_cpythons_and_refuses_less() -> None:
    assert Settings(_env_file=None).gc_young_threshold >= 50_000
    with pytest.raises(ValueError, match="gc_young_threshold"):
        Settings(_env_file=None, gc_young_threshold=10)
