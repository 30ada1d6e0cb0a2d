"""Raw phone numbers and e-mail addresses never leave ingest: not in ClickHouse, not on any
topic after ingest, not in the worker's log, its metrics or the webhooks it sends.

Events and CRM profiles carry distinctive raw PII (as identifiers, as stray top-level keys,
inside records that fail validation); the pipeline runs until pain points and care actions
exist; then everything the worker wrote is dumped and grepped.
"""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import httpx
import orjson
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

from schemas.dead_letter import DeadLetter
from schemas.pii import PiiHasher, normalize_email, normalize_phone
from streams.runtime import stop_process
from tests.integration.conftest import wait_until
from tests.integration.helpers import counter, publish_customers, read_topics
from tests.integration.receiver import Receiver

pytestmark = pytest.mark.integration

PII_SECRET = "pii-test-secret-7f3a91"
SIGNING_SECRET = "pii-test-signing-secret"
N = 30  # customers


def _phone(i: int) -> str:
    return f"+86 139-0077-{i:04d}"


def _email(i: int) -> str:
    return f"PII.Probe.{i}@Example.NET"


def _needles() -> dict[bytes, str]:
    """Every form a raw identifier could leak in -> what it is."""
    out: dict[bytes, str] = {}
    for i in range(N + 5):
        p = _phone(i)
        for form in (p, normalize_phone(p), normalize_phone(p).removeprefix("+86")):
            out[form.encode()] = f"phone {i}"
        e = _email(i)
        for form in (e, normalize_email(e), e.split("@")[0].lower()):
            out[form.lower().encode()] = f"email {i}"
    out[PII_SECRET.encode()] = "the PII secret"
    out[SIGNING_SECRET.encode()] = "the webhook signing secret"
    return out


NEEDLES = _needles()


def _leaks(blob: bytes) -> list[str]:
    low = blob.lower()
    return sorted({what for needle, what in NEEDLES.items() if needle.lower() in low})


def _midday_zone(now: datetime) -> str:
    """An IANA zone where it is around noon now (quiet hours must not hold every action)."""
    n = (12 - now.hour + 12) % 24 - 12  # UTC offset in hours, -12..11
    return "UTC" if n == 0 else f"Etc/GMT{'+' if n < 0 else '-'}{abs(n)}"


def _records(now: datetime) -> tuple[list[bytes], int, int]:
    """(raw records, valid count, invalid count): raw PII everywhere a producer may put it."""
    t = (now - timedelta(hours=1)).isoformat()
    valid: list[dict] = []
    for i in range(N):
        phone, email = _phone(i), _email(i)
        valid += [
            # a long queue, by phone only: linked to the customer through the CRM profile
            {"event_id": f"pii-call-{i}", "channel": "call_centre", "type": "answered",
             "occurred_at": t, "identifiers": {"phone": phone}, "call_id": f"k{i}",
             "wait_seconds": 900},
            # a bad survey score, by phone and e-mail, the phone also as a stray top-level key
            {"event_id": f"pii-sms-{i}", "channel": "sms", "type": "reply", "occurred_at": t,
             "identifiers": {"phone": phone, "email": email}, "score": 1, "phone": phone},
            # a failed checkout, by e-mail only, with e-mail in free attributes
            {"event_id": f"pii-web-{i}", "channel": "web", "type": "checkout_failed",
             "occurred_at": t, "identifiers": {"email": email, "anonymous_id": f"a{i}"},
             "attributes": {"contact": {"email": email, "Phone": phone}}},
            # anonymous and never identified: lands as anonymous, hashed
            {"event_id": f"pii-anon-{i}", "channel": "web", "type": "page_view",
             "occurred_at": t, "identifiers": {"phone": _phone(N + i % 5)}},
        ]  # fmt: skip
    invalid = []
    for i in range(10):
        phone, email = _phone(i), _email(i)
        base = {"event_id": f"pii-bad-{i}", "channel": "call_centre", "type": "answered",
                "occurred_at": t, "identifiers": {"phone": phone, "email": email}}  # fmt: skip
        invalid += [
            orjson.dumps({**base, "type": "teleport"}),  # unknown type
            orjson.dumps({**base, "channel": phone}),  # the phone where the channel goes
            orjson.dumps({**base, "note": email})[:-7],  # truncated JSON
            orjson.dumps({**base, "wait_seconds": -1, "phone": phone.replace(" ", "")}),
            orjson.dumps({**base, "identifiers": {"phone": 8613900770000 + i}}),
            f'{{"phone":"{phone}","email":"{email}"'.encode() + b"\xff}",  # not UTF-8
        ]
    return [orjson.dumps(r) for r in valid] + invalid, len(valid), len(invalid)


def _all_topics_after_ingest(bootstrap: str, settings, app_id: str) -> dict[str, list]:
    """Every record of every topic this worker wrote (all but its two input topics)."""
    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
    inputs = {settings.topic(settings.topic_raw), settings.topic(settings.topic_customers)}
    names = sorted(
        t
        for t in md.topics
        if (t.startswith(settings.topic_prefix) or t.startswith(app_id)) and t not in inputs
    )
    return read_topics(bootstrap, names)


_DUMP = """
import sys
from pathlib import Path
from streams.config import Settings
from sinks.clickhouse.client import connect

client = connect(Settings(data_dir=Path(sys.argv[1])))
out = open(sys.argv[2], "wb")
tables = client.query(
    "SELECT name FROM system.tables WHERE database = currentDatabase() ORDER BY name"
).result_rows
for (name,) in tables:
    out.write(b"== " + name.encode() + b"\\n")
    out.write(client.raw_query(f"SELECT * FROM `{name}` FORMAT TabSeparatedRaw"))
print(len(tables))
"""


def test_raw_pii_never_leaves_ingest(worker_factory, tmp_path):
    now = datetime.now(UTC)
    zone = _midday_zone(now)
    hasher = PiiHasher(PII_SECRET)
    with Receiver(SIGNING_SECRET) as rec:
        worker = worker_factory(
            TOUCHPATH_PII_SECRET=PII_SECRET,
            TOUCHPATH_CARE_ENDPOINTS=f"*={rec.url}",
            TOUCHPATH_CARE_SIGNING_SECRET=SIGNING_SECRET,
            TOUCHPATH_LOG_LEVEL="debug",  # the chattiest log must be clean too
            TOUCHPATH_IDLE_ADVANCE_SECONDS="1",  # care is decided once the clock moves on
        )
        s, bootstrap = worker.settings, worker.env["TOUCHPATH_KAFKA_BOOTSTRAP"]
        profiles = [
            {"customer_id": f"PII{i}", "tier": "ABC"[i % 3], "phone": _phone(i),
             "email": _email(i), "timezone": zone,
             "consents": {"sms": True, "email": True, "call": True}}
            for i in range(N)
        ]  # fmt: skip
        publish_customers(worker, profiles)
        records, n_valid, n_bad = _records(now)
        p = Producer({"bootstrap.servers": bootstrap})
        for r in records:
            p.produce(s.topic(s.topic_raw), r)
        assert p.flush(10) == 0

        def done() -> bool:
            t = worker.query("landed_totals")[0]
            return (
                t["touchpoints"] >= n_valid
                and t["dead_letters"] >= n_bad
                and len(worker.query("pain_point_ids")) >= 2 * N
                and counter(worker, "touchpath_care_actions_total") > 0
                and len(rec.processed) > 0
            )

        wait_until(done, 90, "events, dead letters, pain points and care actions", worker)
        time.sleep(2.0)  # let the last outputs settle
        metrics_text = httpx.get(f"{worker.base_url}/metrics", timeout=5).content
        webhooks = orjson.dumps(rec.processed)
    assert worker.query("landed_totals")[0]["dead_letters"] == n_bad
    stop_process(worker.proc, timeout=15)  # frees the chDB directory for the dump

    # --- every topic after ingest -------------------------------------------------------------
    app_id = worker.env["TOUCHPATH_APP_ID"]
    topics = _all_topics_after_ingest(bootstrap, s, app_id)
    found: dict[str, list[str]] = {}
    for topic, recs in topics.items():
        blobs = []
        for key, value, headers, _, _ in recs:
            blobs += [key or b"", value or b""] + [v or b"" for _, v in headers or []]
            if topic == s.topic(s.topic_dlq) and value:
                blobs.append(DeadLetter.model_validate_json(value).raw)  # raw is base64 there
        leaks = _leaks(b"\n".join(blobs))
        if leaks:
            found[f"topic {topic}"] = leaks
    n_records = {t: len(r) for t, r in topics.items()}
    assert n_records[s.topic(s.topic_dlq)] >= n_bad
    assert n_records[s.topic(s.topic_valid)] > 0
    assert n_records[s.topic(s.topic_care_actions)] > 0
    assert any(t.endswith("-changelog") and n for t, n in n_records.items()), n_records

    # --- every ClickHouse table (chDB allows one process per directory: dump in a child) ------
    dump = tmp_path / "clickhouse.tsv"
    r = subprocess.run(
        [sys.executable, "-c", _DUMP, str(s.data_dir), str(dump)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    tables = dump.read_bytes()
    assert int(r.stdout.split()[-1]) >= 5
    if leaks := _leaks(tables):
        found["ClickHouse"] = leaks

    # --- the log, the metrics, the webhooks ---------------------------------------------------
    log = worker.log_path.read_bytes()
    for what, blob in (("worker log", log), ("/metrics", metrics_text), ("webhooks", webhooks)):
        if leaks := _leaks(blob):
            found[what] = leaks
    assert not found, f"raw PII or secrets leaked: {found}"

    # positive control: the keyed hashes are there, so the greps did look at real data
    phone_hash = hasher.phone(_phone(0)).encode()
    assert phone_hash in tables
    assert phone_hash in b"".join(r.value or b"" for r in topics[s.topic(s.topic_valid)])
    assert hasher.email(_email(0)).encode() in tables
    assert len(log) > 100_000, "the debug log should be long enough to mean something"
