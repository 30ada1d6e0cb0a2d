"""The command line as a user meets it: demo end to end, Ctrl-C, validate, clear errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from streams.runtime import free_port

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "streams.cli"]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOUCHPATH_")}
    return {**env, "TOUCHPATH_DATA_DIR": str(tmp_path / "data"), **extra}


def _descendants(pid: int) -> set[int]:
    """All live descendants of ``pid`` (from /proc, no psutil needed)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = set(), [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.add(c)
            todo.append(c)
    return out


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_demo_runs_end_to_end_and_counts_match(tmp_path):
    r = subprocess.run(
        [*CLI, "demo", "--customers", "300", "--days", "10", "--duration", "0"],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "all counts match" in r.stdout
    assert "valid touchpoints" in r.stdout


def test_ctrl_c_on_demo_leaves_no_process_behind(tmp_path):
    log = tmp_path / "demo.out"
    with open(log, "wb") as out:
        demo = subprocess.Popen(
            [*CLI, "demo", "--customers", "300", "--days", "10", "--duration", "60"],
            env=_env(tmp_path),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 90
        # rich shows no live bars off a terminal: the worker line says the pipeline is up
        while b"worker   :" not in log.read_bytes():
            assert demo.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.3)
        kids = _descendants(demo.pid)
        assert len(kids) >= 2, "expected a broker and a worker under the demo"
        os.killpg(demo.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        stopping = time.monotonic()
        demo.wait(timeout=60)
        assert time.monotonic() - stopping < 20, "Ctrl-C took too long"
        out_text = log.read_bytes()
        assert b"pipeline drained" not in out_text, "Ctrl-C did not interrupt the demo"
        assert b"interrupted" in out_text
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in kids) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [p for p in kids if _alive(p)], "orphans after Ctrl-C"
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)


def test_validate_counts_simulator_output(tmp_path):
    out_dir = tmp_path / "sim"
    r = subprocess.run(
        [*CLI, "simulate", "--customers", "100", "--days", "10", "--out", str(out_dir)],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    manifest = orjson.loads((out_dir / "manifest.json").read_bytes())
    r = subprocess.run(
        [*CLI, "validate", str(out_dir / "events.jsonl.gz"), "--json"],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1  # the simulator injects malformed records on purpose
    got = orjson.loads(r.stdout)
    assert got["valid"] == manifest["events_valid"]
    assert got["invalid"] == manifest["events_malformed"]
    assert got["reasons"] == manifest["malformed_by_reason"]
    # human output names file:line of the first examples
    r = subprocess.run(
        [*CLI, "validate", str(out_dir / "events.jsonl.gz")],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
    )
    assert "events.jsonl.gz:" in r.stdout and "invalid" in r.stdout


def test_validate_clean_file_exits_zero(tmp_path):
    f = tmp_path / "ok.jsonl"
    f.write_text(
        '{"event_id":"s-1","channel":"store","type":"visit","occurred_at":"2026-03-01T10:00:00Z",'
        '"identifiers":{"loyalty_id":"L1"}}\n'
    )
    r = subprocess.run(
        [*CLI, "validate", str(f), "--json"], env=_env(tmp_path), capture_output=True, text=True
    )
    assert r.returncode == 0
    assert orjson.loads(r.stdout) == {"valid": 1, "invalid": 0, "reasons": {}}


@pytest.mark.parametrize(
    ("env", "args", "needle"),
    [
        (
            {"TOUCHPATH_KAFKA_BOOTSTRAP": f"127.0.0.1:{free_port()}"},
            ["worker"],
            "cannot reach Kafka",
        ),
        ({"TOUCHPATH_PARTITIONS": "many"}, ["worker"], "TOUCHPATH_PARTITIONS"),
        ({}, ["validate", "/nonexistent.jsonl"], "no such file"),
        ({"TOUCHPATH_RULES_FILE": "BAD_RULES"}, ["worker"], "rule 'long_queue'"),
        ({}, ["backtest", "/dev/null", "--rules", "BAD_RULES"], "rule 'long_queue'"),
        ({}, ["backtest", "/dev/null", "--out", "/dev/null/out"], "cannot write there"),
        ({}, ["simulate", "--days", "1", "--out", "/dev/null/out"], "cannot write there"),
        ({}, ["schemas", "--out", "/dev/null/out"], "cannot write there"),
        ({}, ["simulate", "--to-kafka", "--out", "NOT_WRITTEN"], "nothing was written"),
        ({}, ["validate", "EMPTY_DIR"], "no .jsonl or .jsonl.gz files"),
    ],
)
def test_expected_failures_are_one_line_and_fast(tmp_path, env, args, needle):
    bad_rules = tmp_path / "rules.yaml"
    bad_rules.write_text(
        "rules:\n  - id: long_queue\n    kind: threshold\n    severity: 3\n"
        "    match: {channel: call_centre, type: answered,"
        " where: [{field: wait_seconds, op: greater, value: 300}]}\n"
    )
    (tmp_path / "empty").mkdir()
    paths = {
        "BAD_RULES": str(bad_rules),
        "EMPTY_DIR": str(tmp_path / "empty"),
        "NOT_WRITTEN": str(tmp_path / "sim"),
    }
    env = {k: paths.get(v, v) for k, v in env.items()}
    args = [paths.get(a, a) for a in args]
    t0 = time.monotonic()
    r = subprocess.run(
        [*CLI, *args], env=_env(tmp_path, **env), capture_output=True, text=True, timeout=30
    )
    assert r.returncode == 2
    assert needle in r.stderr
    assert "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert time.monotonic() - t0 < 15
    assert not (tmp_path / "sim").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["simulate", "--customers", "-5"],
        ["simulate", "--days", "0"],
        ["demo", "--customers", "0"],
        ["demo", "--duration", "-1"],
        ["simulate", "--rate", "-5"],
    ],
)
def test_out_of_range_numbers_are_usage_errors(tmp_path, args):
    r = subprocess.run(
        [*CLI, *args], env=_env(tmp_path), capture_output=True, text=True, timeout=30
    )
    assert r.returncode == 2
    assert "Invalid value for" in r.stderr and "greater than" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "data").exists()  # the demo's directory was not touched


def test_schemas_command_writes_json_schemas(tmp_path):
    r = subprocess.run(
        [*CLI, "schemas", "--out", str(tmp_path / "js")],
        env=_env(tmp_path),
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0
    names = sorted(p.name for p in (tmp_path / "js").iterdir())
    assert names == ["customer.schema.json", "dead_letter.schema.json", "touchpoint.schema.json"]


# --- every wrong worker setting: one clear line naming it, exit 2, within seconds -------------
BAD_CARE = """version: 1
care:
  - rule: long_queue
    tiers:
      A: {kind: carrier_pigeon, template: x}
"""
_CLOSED = str(free_port())  # nothing listens there
WORKER_CONFIG_ERRORS = [
    # bad broker URLs, an unreachable broker with TLS/SASL (plain: see the test above)
    # (a malformed address is a settings error at once, not a connection attempt)
    (
        {"TOUCHPATH_KAFKA_BOOTSTRAP": "kafka://127.0.0.1:9092"},
        "bad setting TOUCHPATH_KAFKA_BOOTSTRAP",
    ),
    ({"TOUCHPATH_KAFKA_BOOTSTRAP": "127.0.0.1:99999"}, "bad setting TOUCHPATH_KAFKA_BOOTSTRAP"),
    (
        {
            "TOUCHPATH_KAFKA_BOOTSTRAP": f"127.0.0.1:{_CLOSED}",
            "TOUCHPATH_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "TOUCHPATH_KAFKA_SASL_USERNAME": "u",
            "TOUCHPATH_KAFKA_SASL_PASSWORD": "p",
        },
        "_SECURITY_PROTOCOL",
    ),
    # transport security settings
    ({"TOUCHPATH_KAFKA_SECURITY_PROTOCOL": "TLS"}, "TOUCHPATH_KAFKA_SECURITY_PROTOCOL"),
    ({"TOUCHPATH_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "TOUCHPATH_KAFKA_SASL_PASSWORD"),
    ({"TOUCHPATH_KAFKA_SASL_MECHANISM": "GSSAPI"}, "TOUCHPATH_KAFKA_SASL_MECHANISM"),
    ({"TOUCHPATH_KAFKA_SSL_CAFILE": "/nonexistent/ca.pem"}, "TOUCHPATH_KAFKA_SSL_CAFILE"),
    ({"TOUCHPATH_CLICKHOUSE_CA_CERT": "/nonexistent/ca.pem"}, "TOUCHPATH_CLICKHOUSE_CA_CERT"),
    # an unreachable or malformed ClickHouse server
    (
        {"TOUCHPATH_CLICKHOUSE_HOST": "127.0.0.1", "TOUCHPATH_CLICKHOUSE_PORT": _CLOSED},
        "TOUCHPATH_CLICKHOUSE_HOST",
    ),
    ({"TOUCHPATH_CLICKHOUSE_HOST": "no such host"}, "TOUCHPATH_CLICKHOUSE_HOST"),
    ({"TOUCHPATH_CLICKHOUSE_PORT": "http"}, "TOUCHPATH_CLICKHOUSE_PORT"),
    ({"TOUCHPATH_CLICKHOUSE_DATABASE": "db; DROP"}, "TOUCHPATH_CLICKHOUSE_DATABASE"),
    # files: the line names the file
    ({"TOUCHPATH_RULES_FILE": "/nonexistent/rules.yaml"}, "/nonexistent/rules.yaml"),
    ({"TOUCHPATH_CARE_POLICY_FILE": "/nonexistent/care.yaml"}, "/nonexistent/care.yaml"),
    ({"TOUCHPATH_CARE_POLICY_FILE": "BAD_CARE"}, "carrier_pigeon"),
    # care endpoints
    ({"TOUCHPATH_CARE_ENDPOINTS": "sms=ftp://gateway"}, "TOUCHPATH_CARE_ENDPOINTS"),
    # wrong value types and ranges
    ({"TOUCHPATH_WEB_PORT": "99999"}, "TOUCHPATH_WEB_PORT"),
    ({"TOUCHPATH_LOG_LEVEL": "loud"}, "TOUCHPATH_LOG_LEVEL"),
    ({"TOUCHPATH_CLICKHOUSE_SECURE": "maybe"}, "TOUCHPATH_CLICKHOUSE_SECURE"),
    ({"TOUCHPATH_LATENESS_HOURS": "a day"}, "TOUCHPATH_LATENESS_HOURS"),
    ({"TOUCHPATH_PII_SECRET": ""}, "TOUCHPATH_PII_SECRET"),
    # a data directory that cannot be created: the line names the path
    ({"TOUCHPATH_DATA_DIR": "A_FILE/data"}, "A_FILE/data"),
]


@pytest.mark.parametrize(("env", "needle"), WORKER_CONFIG_ERRORS)
def test_every_wrong_worker_setting_is_one_clear_line(tmp_path, env, needle):
    (tmp_path / "care.yaml").write_text(BAD_CARE)
    (tmp_path / "a_file").write_text("not a directory")
    subst = {"BAD_CARE": str(tmp_path / "care.yaml"), "A_FILE": str(tmp_path / "a_file")}
    env = {
        k: v.replace("A_FILE", subst["A_FILE"]) if v.startswith("A_FILE") else subst.get(v, v)
        for k, v in env.items()
    }
    needle = needle.replace("A_FILE", subst["A_FILE"])
    t0 = time.monotonic()
    r = subprocess.run(
        [*CLI, "worker"],
        env=_env(tmp_path, **{"TOUCHPATH_WEB_PORT": str(free_port()), **env}),
        capture_output=True,
        text=True,
        timeout=60,
    )
    elapsed = time.monotonic() - t0
    assert r.returncode == 2, r.stderr[-3000:]
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, r.stderr[-3000:]
    assert r.stderr.strip().splitlines()[-1] == errors[0]  # the last word, after any log
    assert needle in errors[0], errors[0]
    assert elapsed < 20, f"took {elapsed:.1f}s"
