"""Ground truth: the simulator injects pain points and says exactly which ones a correct
engine finds; the backtest (validation, identity, journeys, rules, the built-in library)
must find exactly those — recall 1.0 and precision 1.0 — and nothing on clean customers.

Run with ``pytest -s`` to see the figures per seed.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from tempfile import TemporaryDirectory

import pytest

from replay.backtest import BacktestResult, backtest, write_jsonl
from schemas.validation import Validator
from streams.engine.rules import builtin_rules
from streams.simulator import SimConfig, SimResult, simulate, write_outputs

SEEDS = (7, 2024, 31337)
Triple = tuple[str, str, str]


@cache
def _simulated(seed: int) -> tuple[SimResult, Path]:
    result = simulate(SimConfig(customers=2000, days=30, seed=seed))
    out = Path(_tmp().name) / f"sim-{seed}"
    write_outputs(result, out)
    return result, out


@cache
def _tmp() -> TemporaryDirectory[str]:
    return TemporaryDirectory(prefix="touchpath-truth-")


def _backtest(seed: int, until: bool = False) -> BacktestResult:
    _, out = _simulated(seed)
    cfg = SimConfig(customers=2000, days=30, seed=seed)
    return backtest(
        [out / "events.jsonl.gz"],
        builtin_rules(),
        validator=Validator("truth-test-secret"),
        customers_path=out / "customers.jsonl",
        until=cfg.end if until else None,
    )


@cache
def _backtest_cached(seed: int) -> BacktestResult:
    return _backtest(seed)


def _triples(rows: list[dict[str, str]]) -> set[Triple]:
    return {(r["customer_id"], r["rule_id"], r["anchor_event_id"]) for r in rows}


@pytest.mark.parametrize("seed", SEEDS)
def test_backtest_finds_exactly_the_ground_truth(seed: int) -> None:
    sim, _ = _simulated(seed)
    result = _backtest_cached(seed)
    truth, found = _triples(sim.ground_truth), _triples(result.pain_points)
    hit = len(truth & found)
    recall, precision = hit / len(truth), hit / len(found) if found else 0.0
    print(
        f"seed={seed} events={result.events} ground_truth={len(truth)} found={len(found)} "
        f"recall={recall:.4f} precision={precision:.4f}"
    )
    assert (recall, precision, sorted(truth - found)[:5], sorted(found - truth)[:5]) == (
        1.0,
        1.0,
        [],
        [],
    )


@pytest.mark.parametrize("seed", SEEDS)
def test_no_pain_point_on_clean_customers(seed: int) -> None:
    sim, _ = _simulated(seed)
    result = _backtest_cached(seed)
    with_truth = {g["customer_id"] for g in sim.ground_truth}
    clean = {c["customer_id"] for c in sim.customers} - with_truth
    flagged = {p["customer_id"] for p in result.pain_points}
    assert (len(clean), sorted(flagged & clean)) == (sim.manifest["clean_customers"], [])


@pytest.mark.parametrize("seed", SEEDS)
def test_backtest_bookkeeping(seed: int) -> None:
    """Every malformed record is rejected for a counted reason, nothing is late or
    duplicated in a time-sorted log, and every pain point is listed on its journey."""
    sim, _ = _simulated(seed)
    result = _backtest_cached(seed)
    journeys = {j["journey_id"]: j for j in result.journeys}
    unlisted = [
        p["pain_point_id"]
        for p in result.pain_points
        if p["pain_point_id"] not in journeys.get(p["journey_id"], {}).get("pain_point_ids", [])
    ]
    assert (
        sum(result.invalid.values()),
        result.events,
        result.late,
        result.duplicates,
        unlisted,
    ) == (sim.manifest["events_malformed"], sim.manifest["events_valid"], 0, 0, [])


def test_output_files_are_byte_identical_across_runs(tmp_path: Path) -> None:
    """Two independent backtests of the same log write the same bytes."""
    seed = SEEDS[0]
    files = []
    for run, result in (("a", _backtest_cached(seed)), ("b", _backtest(seed))):
        write_jsonl(tmp_path / run / "pain_points.jsonl", result.pain_points)
        write_jsonl(tmp_path / run / "journeys.jsonl", result.journeys)
        files.append(
            [(tmp_path / run / n).read_bytes() for n in ("pain_points.jsonl", "journeys.jsonl")]
        )
    sizes = [len(b) for b in files[0]]
    assert (files[0] == files[1], min(sizes) > 0) == (True, True)


def test_until_the_end_of_the_period_changes_no_pain_point() -> None:
    """Finishing at the period's end instead of where the events leave the clock finds the
    same pain points: the simulator's last-day SMS already moved the clock past every
    deadline."""
    seed = SEEDS[0]
    assert _triples(_backtest(seed, until=True).pain_points) == _triples(
        _backtest_cached(seed).pain_points
    )
