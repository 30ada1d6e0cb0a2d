"""Backtest: the external sort changes nothing (spilled or not, same bytes as the original
in-memory sort), and --compare runs variants in lockstep with a deterministic diff."""

from __future__ import annotations

import os
import random
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

import orjson
import pytest

from replay.backtest import (
    BacktestResult,
    Variant,
    backtest,
    backtest_variants,
    read_events,
    read_profiles,
    write_jsonl,
)
from replay.compare import diff_results
from replay.sort import ExternalSorter
from schemas.validation import Validator
from streams.engine.care import CareEngine, load_policy
from streams.engine.rules import RuleSet, builtin_rules
from streams.engine.runner import Runner
from streams.simulator import SimConfig, SimResult, simulate, write_outputs

VALIDATOR = Validator("backtest-test-secret")


@cache
def sim() -> SimResult:
    return simulate(SimConfig(customers=300, days=14, seed=5))


def sim_dir(tmp_path: Path) -> Path:
    write_outputs(sim(), tmp_path / "sim")
    return tmp_path / "sim"


def outputs(result: BacktestResult, out: Path) -> dict[str, bytes]:
    for name in ("pain_points", "journeys", "care_actions"):
        write_jsonl(out / f"{name}.jsonl", getattr(result, name))
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def original_backtest(d: Path) -> BacktestResult:
    """The backtest as it was before streaming: everything in memory, one sort."""
    result = BacktestResult([], [], 0)
    events = read_events([d / "events.jsonl.gz"], VALIDATOR, datetime.now(UTC), result)
    events.sort(key=lambda e: (e[0], e[1]))
    runner = Runner(builtin_rules(), None, partitions=4, care=CareEngine(load_policy()))
    for p in read_profiles(d / "customers.jsonl", VALIDATOR):
        runner.load_profile(p)
    for ts, _eid, ev, key in events:
        runner.process(ev, ts, key)
    out = runner.finish(None)
    result.pain_points = sorted(
        out.pain_points, key=lambda p: (p["detected_at"], p["pain_point_id"])
    )
    result.care_actions = sorted(
        out.care_actions, key=lambda a: (a["decided_at"], a["customer_id"], a["action_id"])
    )
    result.journeys = sorted(
        out.journeys.values(), key=lambda j: (j["customer_id"], j["started_at"], j["journey_id"])
    )
    return result


def run(d: Path, **kw: object) -> BacktestResult:
    return backtest(
        [d / "events.jsonl.gz"],
        builtin_rules(),
        validator=VALIDATOR,
        customers_path=d / "customers.jsonl",
        care=CareEngine(load_policy()),
        **kw,  # type: ignore[arg-type]
    )


def test_spilled_sort_gives_the_same_bytes_as_the_in_memory_one(tmp_path: Path) -> None:
    d = sim_dir(tmp_path)
    spilled = run(d, run_size=97)
    in_memory = run(d)
    assert spilled.spilled_runs > 10 and in_memory.spilled_runs == 0
    expected = outputs(original_backtest(d), tmp_path / "original")
    assert expected["pain_points.jsonl"] and expected["care_actions.jsonl"]
    assert outputs(spilled, tmp_path / "spilled") == expected
    assert outputs(in_memory, tmp_path / "in_memory") == expected
    assert (spilled.events, spilled.invalid) == (in_memory.events, in_memory.invalid)


def test_external_sort_is_stable_like_list_sort(tmp_path: Path) -> None:
    rng = random.Random(3)
    # few distinct keys: many ties, which must keep their input order
    items = [
        (float(rng.randrange(20)), f"e{rng.randrange(5)}", f"k{i}", {"i": i}) for i in range(2000)
    ]
    with ExternalSorter(run_size=64, tmp_dir=tmp_path) as s:
        for it in items:
            s.add(it)
        got = list(s.sorted())
        assert s.spilled_runs == 31
    assert got == sorted(items, key=lambda x: (x[0], x[1]))
    assert list(tmp_path.iterdir()) == []  # spilled runs are anonymous temporary files


def test_compare_runs_variants_in_lockstep_and_diffs_them(tmp_path: Path) -> None:
    d = sim_dir(tmp_path)
    base_rules = builtin_rules()
    without = RuleSet([r for r in base_rules if r.id != "checkout_failed"], source="test")
    base, other = backtest_variants(
        [d / "events.jsonl.gz"],
        [
            Variant(base_rules, CareEngine(load_policy())),
            Variant(without, CareEngine(load_policy())),
        ],
        validator=VALIDATOR,
        customers_path=d / "customers.jsonl",
        run_size=500,
    )
    alone = run(d)
    assert outputs(base, tmp_path / "a") == outputs(alone, tmp_path / "b")

    diff = diff_results(base, other)
    removed = sum(1 for p in base.pain_points if p["rule_id"] == "checkout_failed")
    pp = diff["pain_points"]
    assert removed > 0
    assert (pp["added"], pp["removed"]) == (0, removed)
    assert pp["by_rule"]["checkout_failed"]["removed"] == removed
    assert all(r["removed"] == 0 for k, r in pp["by_rule"].items() if k != "checkout_failed")
    assert diff["care_actions"]["by_group"]["checkout_failed"]["removed"] > 0
    assert diff["customers_affected"] >= 1
    example = pp["by_rule"]["checkout_failed"]["examples"]["removed"][0]
    assert example["rule_id"] == "checkout_failed" and example["customer_id"]
    # deterministic: the same inputs give the same bytes
    again = diff_results(
        *backtest_variants(
            [d / "events.jsonl.gz"],
            [
                Variant(base_rules, CareEngine(load_policy())),
                Variant(without, CareEngine(load_policy())),
            ],
            validator=VALIDATOR,
            customers_path=d / "customers.jsonl",
        )
    )
    assert orjson.dumps(again, option=orjson.OPT_SORT_KEYS) == orjson.dumps(
        diff, option=orjson.OPT_SORT_KEYS
    )


def test_cli_compare_writes_the_diff_and_keeps_the_base_outputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from streams.cli import app

    for k in [k for k in os.environ if k.startswith("TOUCHPATH_")]:
        monkeypatch.delenv(k)
    monkeypatch.setenv("TOUCHPATH_DATA_DIR", str(tmp_path / "data"))
    d = sim_dir(tmp_path)
    other = tmp_path / "rules-v2.yaml"
    other.write_text("extends: builtin\ndisabled: [opt_out, checkout_failed]\n")
    common = [str(d / "events.jsonl.gz"), "--customers", str(d / "customers.jsonl")]
    runner = CliRunner()
    plain = runner.invoke(app, ["backtest", *common, "--out", str(tmp_path / "plain")])
    assert plain.exit_code == 0, plain.output
    cmp = runner.invoke(
        app,
        [
            *["backtest", *common, "--out", str(tmp_path / "cmp")],
            *["--compare", str(other), "--sort-buffer", "500"],
        ],
    )
    assert cmp.exit_code == 0, cmp.output
    for name in ("pain_points.jsonl", "journeys.jsonl", "care_actions.jsonl"):
        assert (tmp_path / "cmp" / name).read_bytes() == (tmp_path / "plain" / name).read_bytes()
        assert (tmp_path / "cmp" / "compare" / name).exists()
    diff = orjson.loads((tmp_path / "cmp" / "diff.json").read_bytes())
    removed = {r for r, v in diff["pain_points"]["by_rule"].items() if v["removed"]}
    assert removed == {"opt_out", "checkout_failed"} and diff["pain_points"]["added"] == 0
    assert "customers affected" in cmp.output


def test_invalid_crm_profiles_are_skipped_and_counted_like_live(tmp_path: Path) -> None:
    """The live worker skips an invalid CRM profile (counted, logged); so does the backtest:
    the other profiles still link, and each bad line is named by file:line."""
    d = sim_dir(tmp_path)
    lines = (d / "customers.jsonl").read_bytes().splitlines()
    bad = tmp_path / "customers.jsonl"
    bad.write_bytes(b"\n".join([lines[0], b"not json", b'{"customer_id": 5}', *lines[1:]]) + b"\n")
    base = run(d)
    got = backtest(
        [d / "events.jsonl.gz"],
        builtin_rules(),
        validator=VALIDATOR,
        customers_path=bad,
        care=CareEngine(load_policy()),
    )
    assert got.invalid_profiles == 2
    assert [e.split(": ", 1)[0] for e in got.invalid_profile_examples] == [
        f"{bad}:2",
        f"{bad}:3",
    ]
    assert all("\n" not in e for e in got.invalid_profile_examples)
    assert base.invalid_profiles == 0
    assert [p["pain_point_id"] for p in got.pain_points] == [
        p["pain_point_id"] for p in base.pain_points
    ]
