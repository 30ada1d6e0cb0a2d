"""The ClickHouse ``touchpoints`` table as a replay / backtest source, on embedded chDB.

Rows are landed exactly as the worker lands them (``streams.agents.land.touchpoint_rows``
over an ingest micro-batch), so this checks what can be reconstructed from the table:
a backtest of the table equals the backtest of the log it came from.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path

import orjson
import pytest
from clickhouse_connect.driver import Client

from replay.backtest import BacktestResult, backtest, write_jsonl
from replay.publisher import KEY_ORDER, Replayer, ReplayOptions, new_state
from replay.sources import TableQuery, TableSource, iter_touchpoints
from schemas.validation import Rejection, Validator
from sinks.clickhouse import TABLE_COLUMNS, connect, migrate
from streams import microbatch
from streams.agents.land import touchpoint_rows
from streams.config import Settings
from streams.engine.care import CareEngine, load_policy
from streams.engine.rules import builtin_rules
from streams.simulator import SimConfig, SimResult, simulate, write_outputs
from tests.unit.test_replay_publisher import FakeProducer

VALIDATOR = Validator("ch-test-secret")
NOW = datetime(2026, 4, 1, tzinfo=UTC)


@cache
def sim() -> SimResult:
    return simulate(SimConfig(customers=200, days=10, seed=9))


@pytest.fixture(scope="module")
def ch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=tmp_path_factory.mktemp("chdb-replay"),
        clickhouse_host=None,
        clickhouse_database="replay_test",
    )
    client = connect(settings)
    migrate(client, "replay_test")
    valid = [VALIDATOR.validate(r, NOW) for r in sim().records]
    items = [
        {"tp": tp.model_dump(mode="json", exclude_none=True), "k": tp.identity_key, "p": 0, "o": i}
        for i, tp in enumerate(valid)
        if not isinstance(tp, Rejection)
    ]
    cols = TABLE_COLUMNS["touchpoints"]
    for at, chunk in ((NOW, items), (NOW + timedelta(hours=1), items[:100])):  # a re-landing
        rows = touchpoint_rows(microbatch.encode(chunk, at.isoformat()))
        client.insert("touchpoints", [[r[c] for c in cols] for r in rows], column_names=cols)
    yield client
    client.close()


def n_valid() -> int:
    return sum(1 for r in sim().records if not isinstance(VALIDATOR.validate(r, NOW), Rejection))


def test_rows_come_once_in_event_time_order(ch: Client) -> None:
    rows = list(iter_touchpoints(ch, TableQuery()))
    assert len(rows) == n_valid()  # FINAL: the re-landed rows count once
    assert [(t, e) for t, e, _ in rows] == sorted((t, e) for t, e, _ in rows)
    assert TableSource(ch).count() == len(rows)
    # resume after a cursor: exactly the rest
    cursor = rows[1000][:2]
    assert list(iter_touchpoints(ch, TableQuery(), after=cursor)) == rows[1001:]


def test_time_channel_and_customer_filters_are_pushed_down(ch: Client) -> None:
    rows = [orjson.loads(p) for _, _, p in iter_touchpoints(ch, TableQuery())]
    start = datetime(2026, 3, 3, tzinfo=UTC)
    end = datetime(2026, 3, 5, tzinfo=UTC)
    in_window = [r for r in rows if start <= datetime.fromisoformat(r["occurred_at"]) < end]
    customer = Counter(
        r["identifiers"].get("customer_id") for r in in_window if r["channel"] == "web"
    ).most_common(2)[-1][0]
    q = TableQuery(start, end, ("web", "sms"), (customer,))
    got = [orjson.loads(p) for _, _, p in iter_touchpoints(ch, q)]
    want = [
        r
        for r in in_window
        if r["channel"] in ("web", "sms") and r["identifiers"].get("customer_id") == customer
    ]
    assert got == want and got and customer


def test_backtest_of_the_table_equals_backtest_of_the_log(ch: Client, tmp_path: Path) -> None:
    write_outputs(sim(), tmp_path / "sim")
    kw = {
        "validator": VALIDATOR,
        "customers_path": tmp_path / "sim" / "customers.jsonl",
    }
    from_log = backtest(
        [tmp_path / "sim" / "events.jsonl.gz"],
        builtin_rules(),
        care=CareEngine(load_policy()),
        **kw,
    )
    from_table = backtest(
        [], builtin_rules(), care=CareEngine(load_policy()), table=TableSource(ch), **kw
    )

    def files(r: BacktestResult, d: Path) -> list[bytes]:
        for name in ("pain_points", "journeys", "care_actions"):
            write_jsonl(d / f"{name}.jsonl", getattr(r, name))
        return [p.read_bytes() for p in sorted(d.iterdir())]

    assert from_table.events == from_log.events and not from_table.invalid
    assert files(from_table, tmp_path / "t") == files(from_log, tmp_path / "l")
    assert from_log.pain_points


def test_replay_from_the_table_and_resume_by_cursor(ch: Client) -> None:
    src = TableSource(ch)
    p1 = FakeProducer()
    s1 = Replayer(
        p1,
        src,
        ReplayOptions(topic="raw", limit=700, epoch_records=100, flush_timeout=0),
        validator=VALIDATOR,
        state=(state := new_state("k", "raw", ["clickhouse"], {})),
        now=NOW,
    ).run()
    assert s1.sent == 700 and s1.limit_reached and not s1.bad
    assert state.position is not None  # [occurred_at, event_id] of the last acknowledged row
    for _, value, key, *_ in p1.produced:
        ids = orjson.loads(value)["identifiers"]
        assert key == next(ids[k] for k in KEY_ORDER if ids.get(k))
    p2 = FakeProducer()
    s2 = Replayer(
        p2,
        src,
        ReplayOptions(topic="raw", flush_timeout=0),
        validator=VALIDATOR,
        state=state,
        now=NOW,
    ).run()
    assert s2.complete and s2.totals["sent"] == n_valid()
    ids = [orjson.loads(v)["event_id"] for _, v, *_ in p1.produced + p2.produced]
    assert len(ids) == len(set(ids)) == n_valid()  # the limit stopped cleanly: no re-send
