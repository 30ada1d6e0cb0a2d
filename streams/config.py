"""touchpath settings: one pydantic-settings class, built once by the CLI and passed down.

Every field can be set through the environment with the ``TOUCHPATH_`` prefix
(``TOUCHPATH_KAFKA_BOOTSTRAP=broker:9092``) or a ``.env`` file. Secrets are
``SecretStr`` so they never show up in reprs or logs.
"""

from __future__ import annotations

import re
import ssl
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, FilePath, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from streams import faults

#: The PII key used when none is configured. Fine for the embedded demo; a real
#: deployment must set ``TOUCHPATH_PII_SECRET`` (the worker warns when it is not).
DEV_PII_SECRET = "touchpath-dev-only-secret"

#: One bootstrap server: host (name, IPv4 or [IPv6]) and an optional port.
_BROKER = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.\-]+)(?::(\d{1,5}))?")
#: A ClickHouse database name (it is pasted into DDL).
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class Settings(BaseSettings):
    """All configuration of a touchpath process."""

    model_config = SettingsConfigDict(
        env_prefix="TOUCHPATH_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    # --- Kafka -----------------------------------------------------------------------------
    kafka_bootstrap: str | None = Field(
        default=None,
        description="Kafka bootstrap servers (host:port,...). Unset: start the embedded broker.",
    )
    topic_prefix: str = Field(default="", description="Prefix prepended to every topic name.")
    topic_raw: str = "touchpoints.raw"
    topic_dlq: str = "touchpoints.dlq"
    topic_valid: str = Field(
        default="touchpoints.valid",
        description="Internal topic of validated micro-batches, partitioned by identity key.",
    )
    topic_customers: str = "customers"
    topic_links: str = Field(
        default="identity.links", description="Internal: identity links, keyed by identity key."
    )
    topic_journey_events: str = Field(
        default="journey.events", description="Internal: identified events, keyed by customer."
    )
    topic_pain_points: str = "pain-points"
    topic_journeys: str = Field(default="journeys", description="Journey records (micro-batches).")
    topic_care_actions: str = Field(
        default="care-actions",
        description="The care outbox: every care decision (micro-batches keyed by customer).",
    )
    topic_care_dlq: str = Field(
        default="care-actions.dlq", description="Care actions that could not be delivered."
    )
    partitions: int = Field(default=4, ge=1, description="Partitions of topics touchpath creates.")
    app_id: str = Field(default="touchpath", description="Faust app id / consumer group prefix.")
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        default=None, description="SASL mechanism (default PLAIN with a SASL protocol)."
    )
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = Field(
        default=None, validate_default=True, description="Required with a SASL protocol."
    )
    kafka_ssl_cafile: FilePath | None = Field(
        default=None, description="CA bundle (PEM) to verify the brokers (default: system CAs)."
    )
    kafka_ssl_certfile: FilePath | None = Field(
        default=None, description="Client certificate (PEM) for mutual TLS."
    )
    kafka_ssl_keyfile: FilePath | None = Field(
        default=None, description="Private key (PEM) of the client certificate."
    )
    kafka_ssl_key_password: SecretStr | None = None

    # --- ClickHouse ------------------------------------------------------------------------
    clickhouse_host: str | None = Field(
        default=None, description="ClickHouse server host. Unset: embedded chDB in data_dir."
    )
    clickhouse_port: int = Field(default=8123, ge=1, le=65535, description="8443 for HTTPS.")
    clickhouse_user: str = "default"
    clickhouse_password: SecretStr = SecretStr("")
    clickhouse_secure: bool = Field(default=False, description="HTTPS to the ClickHouse server.")
    clickhouse_verify: bool = Field(
        default=True, description="Verify the server's TLS certificate (with secure)."
    )
    clickhouse_ca_cert: FilePath | None = Field(
        default=None, description="CA bundle (PEM) to verify the server (default: certifi)."
    )
    clickhouse_database: str = "touchpath"

    # --- local state -----------------------------------------------------------------------
    data_dir: Path = Field(
        default=Path(".touchpath"), description="Embedded chDB data and run files live here."
    )

    # --- privacy ---------------------------------------------------------------------------
    pii_secret: SecretStr = Field(
        default=SecretStr(DEV_PII_SECRET),
        description="HMAC-SHA256 key for phone/email hashing. Set it in production.",
    )

    # --- ingest / validation ---------------------------------------------------------------
    ingest_mode: Literal["process", "thread"] = Field(
        default="process",
        description="process: ingest (read, validate, route raw records) runs in a child "
        "process, off the worker's GIL; thread: in a thread of the worker process.",
    )
    batch_max_events: int = Field(default=500, ge=1, description="Events per micro-batch.")
    journey_cache_customers: int = Field(
        default=10_000,
        ge=0,
        description="Customer states the journey stage keeps decoded between batches "
        "(memory for speed; 0: decode every touched state from the table per batch).",
    )
    batch_max_ms: int = Field(default=50, ge=1, description="Max wait to fill a batch (ms).")
    stream_buffer_messages: int = Field(
        default=128,
        ge=8,
        description="Messages each agent may hold fetched but unprocessed (Faust's "
        "stream_buffer_maxsize; each message a micro-batch of up to TOUCHPATH_BATCH_MAX_EVENTS "
        "events). A backlog beyond it waits in Kafka instead of in memory.",
    )
    gc_young_threshold: int = Field(
        default=100_000,
        ge=700,
        description="New container objects (dicts, lists, states) the worker and its ingest "
        "process allocate between young garbage collections (CPython's default: 700, which "
        "pushed each batch's objects into costly full collections). Objects built at start "
        "are frozen out of collections either way.",
    )
    max_record_bytes: int = Field(default=1_000_000, ge=1024)
    max_string_chars: int = Field(default=8192, ge=16)
    max_depth: int = Field(default=8, ge=2, description="Max JSON nesting depth of a record.")
    max_future_days: float = Field(default=7.0, ge=0)

    # --- journey engine ---------------------------------------------------------------------
    rules_file: Path | None = Field(
        default=None, description="Pain-point rules YAML (default: the built-in library)."
    )
    lateness_hours: float = Field(default=24.0, ge=0, description="Allowed event lateness.")
    inactivity_gap_hours: float = Field(default=72.0, gt=0, description="Journey inactivity gap.")
    max_steps_per_customer: int = Field(default=500, ge=10)
    max_held_per_identifier: int = Field(default=200, ge=1)
    max_held_age_days: float = Field(default=7.0, gt=0)
    watermark_align_seconds: float = Field(
        default=3600.0,
        gt=0,
        description="Ingest pauses a raw partition whose event time runs this far ahead of the "
        "slowest one (watermark alignment): a backlog is read evenly in event time, so "
        "downstream state and reorder buffers stay bounded.",
    )
    idle_advance_seconds: float = Field(
        default=30.0,
        gt=0,
        description="Live mode: a partition idle this long (wall time) has its stream clock "
        "advanced by the wall time that passed.",
    )
    end_grace_seconds: float = Field(
        default=3.0,
        ge=0,
        description="A raw partition read to its end keeps holding event time back this long "
        "after it said so, unless it delivers meanwhile (a producer's next batch for it may "
        "be older than the other partitions' progress, and the embedded broker can report "
        "an end early).",
    )

    # --- care actions ----------------------------------------------------------------------
    care_policy_file: Path | None = Field(
        default=None, description="Care policy YAML (default: the built-in policy)."
    )
    care_endpoints: str = Field(
        default="",
        description="Where care actions are delivered: 'kind=URL,...' with '*' as the default "
        "(e.g. 'sms=http://gw/sms,*=http://hooks/care'). Empty: decide and record, deliver "
        "nothing.",
    )
    care_signing_secret: SecretStr = Field(
        default=SecretStr("touchpath-dev-webhook-secret"),
        description="HMAC-SHA256 key of the X-Touchpath-Signature header. Set it in production.",
    )
    care_timeout_seconds: float = Field(default=5.0, gt=0, description="Per HTTP attempt.")
    care_max_attempts: int = Field(default=6, ge=1, description="Attempts before the DLQ.")
    care_backoff_cap_seconds: float = Field(default=30.0, gt=0)
    care_dry_run: bool = Field(
        default=False, description="Decide and record care actions but deliver none."
    )

    # --- testing ---------------------------------------------------------------------------
    fault_clickhouse_file: Path | None = Field(
        default=None,
        description="Testing only: every ClickHouse call fails while this file exists "
        "(outage tests; embedded chDB cannot be made unreachable otherwise).",
    )

    fault_hold_at: str | None = Field(
        default=None,
        description="Testing only: POINT[@N] where the worker stops for good the N-th time it "
        "gets there, so that a kill -9 lands inside that window (streams/faults.py).",
    )

    # --- worker ----------------------------------------------------------------------------
    web_host: str = "127.0.0.1"
    web_port: int = Field(default=6066, ge=0, le=65535)
    log_level: Literal["debug", "info", "warn", "error"] = "info"

    @field_validator("pii_secret")
    @classmethod
    def _pii_secret_set(cls, v: SecretStr) -> SecretStr:
        if not v.get_secret_value():
            raise ValueError("must not be empty (unset it to use the development key)")
        return v

    @field_validator("fault_hold_at")
    @classmethod
    def _fault_point(cls, v: str | None) -> str | None:
        if v:
            faults.parse(v)
        return v or None

    @field_validator("kafka_bootstrap", "clickhouse_host", mode="before")
    @classmethod
    def _empty_is_none(cls, v: object) -> object:
        return None if v == "" else v

    @field_validator(
        "kafka_sasl_mechanism", "kafka_sasl_username", "kafka_ssl_cafile", "kafka_ssl_certfile",
        "kafka_ssl_keyfile", "kafka_ssl_key_password", "clickhouse_ca_cert", mode="before",
    )  # fmt: skip
    @classmethod
    def _unset_if_empty(cls, v: object) -> object:
        # compose files and CI pass unset variables as ""
        return None if v == "" else v

    @field_validator("kafka_bootstrap")
    @classmethod
    def _bootstrap(cls, v: str | None) -> str | None:
        if v is None:
            return v
        parts = [p.strip() for p in v.split(",")]
        for part in parts:
            m = _BROKER.fullmatch(part)
            if m is None or (m.group(2) and not 0 < int(m.group(2)) < 65536):
                raise ValueError(
                    f"{part[:80]!r} is not host:port (e.g. broker1:9092,broker2:9092; "
                    "no scheme: TLS/SASL are TOUCHPATH_KAFKA_SECURITY_PROTOCOL)"
                )
        return ",".join(parts)

    @field_validator("clickhouse_database")
    @classmethod
    def _database_name(cls, v: str) -> str:
        if not _IDENTIFIER.fullmatch(v):
            raise ValueError(f"{v[:80]!r} is not a plain identifier (letters, digits, _)")
        return v

    @field_validator("kafka_sasl_password")
    @classmethod
    def _sasl_credentials(cls, v: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        protocol = info.data.get("kafka_security_protocol", "")
        if protocol.startswith("SASL_") and (v is None or not info.data.get("kafka_sasl_username")):
            raise ValueError(
                f"TOUCHPATH_KAFKA_SECURITY_PROTOCOL={protocol} needs "
                "TOUCHPATH_KAFKA_SASL_USERNAME and TOUCHPATH_KAFKA_SASL_PASSWORD"
            )
        return v

    @field_validator("care_endpoints")
    @classmethod
    def _endpoints(cls, v: str) -> str:
        if v:
            from streams.dispatch import parse_endpoints

            parse_endpoints(v)  # ValueError with a one-line reason
        return v

    def topic(self, name: str) -> str:
        """Full topic name with the configured prefix."""
        return f"{self.topic_prefix}{name}"

    @property
    def embedded_kafka(self) -> bool:
        return self.kafka_bootstrap is None

    @property
    def embedded_clickhouse(self) -> bool:
        return self.clickhouse_host is None

    @property
    def chdb_path(self) -> Path:
        return (self.data_dir / "chdb").resolve()

    @property
    def kafka_sasl(self) -> bool:
        return self.kafka_security_protocol.startswith("SASL_")

    @property
    def kafka_tls(self) -> bool:
        return self.kafka_security_protocol in ("SSL", "SASL_SSL")

    def kafka_client_config(self) -> dict[str, str]:
        """librdkafka (confluent-kafka) security settings, passed through as given.

        Used by every confluent-kafka client of the worker (ingest, outputs, changelogs, topic
        admin); :meth:`faust_broker_credentials` gives the same to Faust's aiokafka clients.
        """
        conf: dict[str, str] = {"security.protocol": self.kafka_security_protocol}
        if self.kafka_sasl:
            conf["sasl.mechanism"] = self.kafka_sasl_mechanism or "PLAIN"
            conf["sasl.username"] = self.kafka_sasl_username or ""
            if self.kafka_sasl_password is not None:
                conf["sasl.password"] = self.kafka_sasl_password.get_secret_value()
        if self.kafka_tls:
            if self.kafka_ssl_cafile:
                conf["ssl.ca.location"] = str(self.kafka_ssl_cafile)
            if self.kafka_ssl_certfile:
                conf["ssl.certificate.location"] = str(self.kafka_ssl_certfile)
            if self.kafka_ssl_keyfile:
                conf["ssl.key.location"] = str(self.kafka_ssl_keyfile)
            if self.kafka_ssl_key_password is not None:
                conf["ssl.key.password"] = self.kafka_ssl_key_password.get_secret_value()
        return conf

    def kafka_ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context of Faust's (aiokafka's) connections, or None without TLS."""
        if not self.kafka_tls:
            return None
        ctx = ssl.create_default_context(
            cafile=str(self.kafka_ssl_cafile) if self.kafka_ssl_cafile else None
        )
        if self.kafka_ssl_certfile:
            ctx.load_cert_chain(
                str(self.kafka_ssl_certfile),
                str(self.kafka_ssl_keyfile) if self.kafka_ssl_keyfile else None,
                self.kafka_ssl_key_password.get_secret_value()
                if self.kafka_ssl_key_password
                else None,
            )
        return ctx

    def faust_broker_credentials(self) -> Any:
        """``broker_credentials`` for :class:`faust.App`: the same security as
        :meth:`kafka_client_config`, for Faust's aiokafka consumer, producer and admin
        client. None for PLAINTEXT."""
        import faust  # lazily: only the worker needs it

        ctx = self.kafka_ssl_context()
        if self.kafka_sasl:
            return faust.SASLCredentials(
                username=self.kafka_sasl_username,
                password=self.kafka_sasl_password.get_secret_value()
                if self.kafka_sasl_password
                else None,
                mechanism=self.kafka_sasl_mechanism or "PLAIN",
                ssl_context=ctx,
            )
        if ctx is not None:
            return faust.SSLCredentials(ctx)
        return None
