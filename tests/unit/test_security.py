"""Transport security and PII keys: what the settings say reaches every client.

Kafka SASL/TLS settings must reach librdkafka (ingest, outputs, changelogs, topic admin) and
Faust's aiokafka clients alike; ClickHouse TLS/user/password must reach the server client;
the PII hashing key must come from the settings, never from code. No real TLS broker or
ClickHouse server can run here, so the clients are captured at their constructors.
"""

from __future__ import annotations

import ast
import hashlib
import hmac
import shutil
import ssl
import subprocess
from pathlib import Path
from typing import Any

import certifi
import orjson
import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

import sinks.clickhouse.client as ch_client
from schemas.customer import CustomerProfile
from schemas.pii import PiiHasher
from schemas.validation import Validator
from streams.config import DEV_PII_SECRET, Settings

ROOT = Path(__file__).resolve().parents[2]
PHONE = "+8613800000001"
CALL = {
    "event_id": "c-1",
    "channel": "call_centre",
    "type": "answered",
    "occurred_at": "2026-03-01T10:40:00+00:00",
    "identifiers": {"phone": PHONE},
}
CA = certifi.where()


@pytest.fixture(autouse=True)
def _no_touchpath_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Settings read only what each test gives them (no TOUCHPATH_* or .env from outside)."""
    import os

    for k in list(os.environ):
        if k.startswith("TOUCHPATH_"):
            monkeypatch.delenv(k)
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def client_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate and its key (PEM), for mutual TLS."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "client.pem", d / "client.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=touchpath-test",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


# --- PII: keyed hashing, the key from the settings -------------------------------------------


def _phone_hash_via_settings() -> str:
    tp = Validator.from_settings(Settings()).validate(orjson.dumps(CALL), _now())
    return tp.identifiers.phone_hash  # type: ignore[union-attr]


def _now():
    from datetime import UTC, datetime

    return datetime(2026, 3, 10, tzinfo=UTC)


def test_phone_hash_is_keyed_by_touchpath_pii_secret(monkeypatch):
    monkeypatch.setenv("TOUCHPATH_PII_SECRET", "key-a")
    a = _phone_hash_via_settings()
    monkeypatch.setenv("TOUCHPATH_PII_SECRET", "key-b")
    b = _phone_hash_via_settings()
    monkeypatch.delenv("TOUCHPATH_PII_SECRET")
    dev = _phone_hash_via_settings()
    assert len({a, b, dev}) == 3, "a different secret must give a different hash"
    assert a == hmac.new(b"key-a", b"phone:" + PHONE.encode(), hashlib.sha256).hexdigest()
    assert dev == PiiHasher(DEV_PII_SECRET).phone(PHONE)
    assert a != hashlib.sha256(PHONE.encode()).hexdigest()  # keyed, not a plain digest
    # profiles (the CRM feed) hash with the same key, so they link to the same events
    monkeypatch.setenv("TOUCHPATH_PII_SECRET", "key-a")
    hasher = Validator.from_settings(Settings()).hasher
    profile = CustomerProfile.model_validate(
        {"customer_id": "C1", "phone": PHONE}, context={"hasher": hasher}
    )
    assert profile.phone_hash == a


def test_the_pii_key_comes_from_settings_never_from_code():
    # no default key anywhere below the settings...
    with pytest.raises(TypeError):
        PiiHasher()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Validator()  # type: ignore[call-arg]
    # ...and no hasher or validator built from a literal in the shipped code
    offenders = []
    for pkg in ("schemas", "streams", "sinks", "replay"):
        for path in (ROOT / pkg).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if not isinstance(node, ast.Call) or not node.args:
                    continue
                name = getattr(node.func, "id", getattr(node.func, "attr", ""))
                if name in ("PiiHasher", "Validator") and isinstance(node.args[0], ast.Constant):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
            if "DEV_PII_SECRET" in path.read_text() and path.name not in ("config.py", "app.py"):
                offenders.append(f"{path.relative_to(ROOT)} uses DEV_PII_SECRET")
    assert not offenders, offenders


# --- Kafka: librdkafka clients -----------------------------------------------------------------


def _kafka(**kw: Any) -> Settings:
    return Settings(kafka_bootstrap="broker:9093", **kw)


def test_plaintext_is_the_default():
    assert Settings().kafka_client_config() == {"security.protocol": "PLAINTEXT"}
    assert Settings().faust_broker_credentials() is None


def test_sasl_ssl_reaches_librdkafka(client_cert):
    cert, key = client_cert
    s = _kafka(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="svc-touchpath",
        kafka_sasl_password="s3cret",
        kafka_ssl_cafile=CA,
        kafka_ssl_certfile=str(cert),
        kafka_ssl_keyfile=str(key),
    )
    assert s.kafka_client_config() == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "svc-touchpath",
        "sasl.password": "s3cret",
        "ssl.ca.location": CA,
        "ssl.certificate.location": str(cert),
        "ssl.key.location": str(key),
    }


@pytest.mark.parametrize(
    ("kw", "want"),
    [
        (
            {
                "kafka_security_protocol": "SASL_PLAINTEXT",
                "kafka_sasl_username": "u",
                "kafka_sasl_password": "p",
            },
            {
                "security.protocol": "SASL_PLAINTEXT",
                "sasl.mechanism": "PLAIN",
                "sasl.username": "u",
                "sasl.password": "p",
            },
        ),
        (
            {"kafka_security_protocol": "SSL", "kafka_ssl_cafile": CA},
            {"security.protocol": "SSL", "ssl.ca.location": CA},
        ),
        (  # TLS files are not passed to a plaintext connection
            {"kafka_security_protocol": "PLAINTEXT", "kafka_ssl_cafile": CA},
            {"security.protocol": "PLAINTEXT"},
        ),
    ],
)
def test_each_protocol_gives_its_librdkafka_config(kw, want):
    assert _kafka(**kw).kafka_client_config() == want


def test_librdkafka_accepts_the_config(client_cert):
    # Property names and files are checked when a client is created (no broker needed).
    from confluent_kafka import Consumer, Producer

    cert, key = client_cert
    s = _kafka(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_username="u",
        kafka_sasl_password="p",
        kafka_ssl_cafile=CA,
        kafka_ssl_certfile=str(cert),
        kafka_ssl_keyfile=str(key),
    )
    conf = {"bootstrap.servers": "127.0.0.1:1", "log_level": 0, **s.kafka_client_config()}
    Producer(conf).flush(0)
    Consumer({**conf, "group.id": "g"}).close()


class _Recorder:
    """Stands in for a confluent-kafka client class; records the config it was given."""

    configs: list[dict[str, Any]]

    def __init__(self, conf: dict[str, Any]) -> None:
        type(self).configs.append(conf)

    def __getattr__(self, name: str) -> Any:
        return lambda *a, **k: None


def _recorder() -> type[_Recorder]:
    return type("Rec", (_Recorder,), {"configs": []})


SASL = {
    "kafka_security_protocol": "SASL_SSL",
    "kafka_sasl_username": "u",
    "kafka_sasl_password": "p",
    "kafka_ssl_cafile": CA,
}
WANT = {
    "security.protocol": "SASL_SSL",
    "sasl.mechanism": "PLAIN",
    "sasl.username": "u",
    "sasl.password": "p",
    "ssl.ca.location": CA,
}


def test_every_worker_kafka_client_gets_the_security_settings(monkeypatch):
    import streams.ingest
    import streams.producer
    import streams.runtime
    from streams.ingest import Ingestor
    from streams.producer import WorkerProducer

    s = _kafka(**SASL)
    consumer, producer, out, admin = _recorder(), _recorder(), _recorder(), _recorder()
    monkeypatch.setattr(streams.ingest, "Consumer", consumer)
    monkeypatch.setattr(streams.ingest, "Producer", producer)
    monkeypatch.setattr(streams.producer, "Producer", out)
    monkeypatch.setattr(streams.runtime, "AdminClient", admin)

    Ingestor(s, "broker:9093", Validator.from_settings(s))  # raw topic in, valid + DLQ out
    WorkerProducer("broker:9093", s.kafka_client_config())  # agent outputs and changelogs
    from streams.worker import prepare_kafka

    with pytest.raises(Exception):  # noqa: B017 - the recorder is no real admin client
        prepare_kafka(s, "broker:9093")  # reachability check and topic creation
    for rec in (consumer, producer, out, admin):
        (conf,) = rec.configs
        assert WANT.items() <= conf.items(), (rec, conf)


# --- Kafka: Faust's aiokafka clients -------------------------------------------------------------


def test_sasl_ssl_reaches_aiokafka(client_cert):
    cert, key = client_cert
    s = _kafka(**SASL, kafka_ssl_certfile=str(cert), kafka_ssl_keyfile=str(key))
    auth = credentials_to_aiokafka_auth(s.faust_broker_credentials())
    assert auth["security_protocol"] == "SASL_SSL"
    assert auth["sasl_mechanism"] == "PLAIN"
    assert (auth["sasl_plain_username"], auth["sasl_plain_password"]) == ("u", "p")
    ctx = auth["ssl_context"]
    assert isinstance(ctx, ssl.SSLContext)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert ctx.get_ca_certs(), "the CA file is loaded"


@pytest.mark.parametrize(
    ("kw", "protocol"),
    [
        ({"kafka_security_protocol": "SSL", "kafka_ssl_cafile": CA}, "SSL"),
        (
            {
                "kafka_security_protocol": "SASL_PLAINTEXT",
                "kafka_sasl_username": "u",
                "kafka_sasl_password": "p",
                "kafka_sasl_mechanism": "SCRAM-SHA-256",
            },
            "SASL_PLAINTEXT",
        ),
    ],
)
def test_each_protocol_reaches_aiokafka(kw, protocol):
    s = _kafka(**kw)
    auth = credentials_to_aiokafka_auth(s.faust_broker_credentials())
    assert auth["security_protocol"] == protocol
    if protocol == "SASL_PLAINTEXT":
        assert auth["sasl_mechanism"] == "SCRAM-SHA-256" and auth["ssl_context"] is None


class _NoWarehouse:
    """create_app only registers agents with the warehouse; nothing calls it here."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"warehouse.{name} used while building the app")


def test_create_app_gives_faust_the_security_settings(monkeypatch):
    import streams.producer
    from streams.app import create_app

    monkeypatch.setattr(streams.producer, "Producer", _recorder())
    app = create_app(_kafka(**SASL), "broker:9093", _NoWarehouse())  # type: ignore[arg-type]
    auth = credentials_to_aiokafka_auth(app.conf.broker_credentials, app.conf.ssl_context)
    assert auth["security_protocol"] == "SASL_SSL"
    assert (auth["sasl_plain_username"], auth["sasl_plain_password"]) == ("u", "p")


def test_create_app_bounds_faust_stream_buffers_by_the_setting(monkeypatch):
    import streams.producer
    from streams.app import create_app

    monkeypatch.setattr(streams.producer, "Producer", _recorder())
    app = create_app(_kafka(stream_buffer_messages=32), "broker:9093", _NoWarehouse())  # type: ignore[arg-type]
    assert app.conf.stream_buffer_maxsize == 32
    default = create_app(_kafka(), "broker:9093", _NoWarehouse())  # type: ignore[arg-type]
    assert default.conf.stream_buffer_maxsize == Settings().stream_buffer_messages < 4096


# --- ClickHouse server client ---------------------------------------------------------------------


class _FakeClient:
    server_version = "25.8"
    database = ""

    def command(self, sql: str) -> None:
        self.last = sql

    def close(self) -> None:
        pass


def _capture_get_client(monkeypatch) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []

    def get_client(**kwargs: Any) -> _FakeClient:
        calls.append(kwargs)
        return _FakeClient()

    monkeypatch.setattr(ch_client.clickhouse_connect, "get_client", get_client)
    return calls


def test_clickhouse_tls_user_and_password_reach_the_client(monkeypatch, caplog):
    calls = _capture_get_client(monkeypatch)
    s = Settings(
        clickhouse_host="ch.example.com",
        clickhouse_port=8443,
        clickhouse_secure=True,
        clickhouse_user="touchpath",
        clickhouse_password="ch-p4ss",
        clickhouse_ca_cert=CA,
    )
    with caplog.at_level("DEBUG"):
        client = ch_client.connect(s)
    (kw,) = calls
    assert (kw["host"], kw["port"], kw["secure"], kw["verify"]) == (
        "ch.example.com",
        8443,
        True,
        True,
    )
    assert (kw["username"], kw["password"], kw["ca_cert"]) == ("touchpath", "ch-p4ss", CA)
    assert client.database == "touchpath"
    assert "ch-p4ss" not in caplog.text and "ch-p4ss" not in repr(s)


def test_clickhouse_defaults_are_plain_http_and_verified(monkeypatch):
    calls = _capture_get_client(monkeypatch)
    ch_client.connect(Settings(clickhouse_host="ch"))
    (kw,) = calls
    assert (kw["secure"], kw["verify"], kw["ca_cert"], kw["port"]) == (False, True, None, 8123)
    calls.clear()
    ch_client.connect(
        Settings(clickhouse_host="ch", clickhouse_secure=True, clickhouse_verify=False)
    )
    assert (calls[0]["secure"], calls[0]["verify"]) == (True, False)


def test_no_secret_shows_in_the_settings_repr():
    s = Settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_username="u",
        kafka_sasl_password="kafka-pw",
        kafka_ssl_key_password="key-pw",
        clickhouse_password="ch-pw",
        pii_secret="pii-key",
        care_signing_secret="hook-key",
    )
    text = repr(s) + str(s) + s.model_dump_json()
    for secret in ("kafka-pw", "key-pw", "ch-pw", "pii-key", "hook-key"):
        assert secret not in text
