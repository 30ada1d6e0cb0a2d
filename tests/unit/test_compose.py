"""docker-compose.yml, checked structurally: the services fit together as deployed.

No Docker here: the file is parsed and its parts are checked against each other and against
the repository (host paths it mounts, the Grafana provisioning it loads, the ports the worker
and Prometheus use).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = REPO / "docker-compose.yml"
GRAFANA = REPO / "dashboards" / "grafana"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def env(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a dict, whichever form the file uses."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) if "=" in item else (item, "") for item in raw)
    return {str(k): str(v) for k, v in raw.items()}


def published(service: dict[str, Any]) -> dict[int, int]:
    """Container port -> host port of a service's published ports."""
    out: dict[int, int] = {}
    for port in service.get("ports") or []:
        if isinstance(port, dict):
            out[int(port["target"])] = int(port.get("published", port["target"]))
            continue
        parts = str(port).split("/")[0].split(":")
        out[int(parts[-1])] = int(parts[-2]) if len(parts) > 1 else int(parts[-1])
    return out


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> source (host path or volume name) of a service's volumes."""
    out: dict[str, str] = {}
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            out[volume["target"]] = volume.get("source", "")
            continue
        source, target = str(volume).split(":")[:2]
        out[target] = source
    return out


def test_the_stack_has_its_services(services: dict[str, Any]) -> None:
    assert {"kafka", "clickhouse", "worker", "prometheus", "grafana"} <= set(services)
    assert "zookeeper" not in services


def test_kafka_runs_in_kraft_mode(services: dict[str, Any]) -> None:
    kafka = env(services["kafka"])
    assert set(kafka["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert kafka["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(kafka["KAFKA_NODE_ID"] + "@kafka:")
    assert "CONTROLLER" in kafka["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert not any("ZOOKEEPER" in key for key in kafka)
    assert "PLAINTEXT://kafka:9092" in kafka["KAFKA_ADVERTISED_LISTENERS"]
    assert "/var/lib/kafka/data" in mounts(services["kafka"])


def test_clickhouse_server_has_the_touchpath_user_and_ports(services: dict[str, Any]) -> None:
    ch = services["clickhouse"]
    assert str(ch["image"]).startswith("clickhouse/clickhouse-server")
    assert {8123, 9000} <= set(published(ch))
    assert env(ch)["CLICKHOUSE_USER"] == "touchpath"
    assert env(ch)["CLICKHOUSE_PASSWORD"] == "touchpath"
    assert "/var/lib/clickhouse" in mounts(ch)
    assert "healthcheck" in ch


def test_worker_talks_to_the_compose_kafka_and_clickhouse(services: dict[str, Any]) -> None:
    worker = services["worker"]
    assert "build" in worker
    e = env(worker)
    assert e["TOUCHPATH_KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert e["TOUCHPATH_CLICKHOUSE_HOST"] == "clickhouse"
    assert e["TOUCHPATH_CLICKHOUSE_PORT"] == "8123"
    ch = env(services["clickhouse"])
    assert e["TOUCHPATH_CLICKHOUSE_USER"] == ch["CLICKHOUSE_USER"]
    assert e["TOUCHPATH_CLICKHOUSE_PASSWORD"] == ch["CLICKHOUSE_PASSWORD"]
    assert e["TOUCHPATH_WEB_HOST"] == "0.0.0.0"
    assert {"kafka", "clickhouse"} <= set(worker["depends_on"])
    assert 6066 in published(worker)


def test_prometheus_scrapes_the_workers(services: dict[str, Any]) -> None:
    prom = services["prometheus"]
    source = mounts(prom)["/etc/prometheus/prometheus.yml"]
    config = yaml.safe_load((REPO / source).read_text(encoding="utf-8"))
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    sd = job["dns_sd_configs"][0]
    assert sd["names"] == ["worker"] and sd["port"] == 6066
    assert 9090 in published(prom)


def test_grafana_loads_the_clickhouse_plugin_and_the_provisioning(
    services: dict[str, Any],
) -> None:
    grafana = services["grafana"]
    assert str(grafana["image"]).startswith("grafana/grafana")
    assert "grafana-clickhouse-datasource" in env(grafana)["GF_INSTALL_PLUGINS"].split(",")
    assert published(grafana) == {3000: 3000}
    m = mounts(grafana)
    assert (REPO / m["/etc/grafana/provisioning"]).resolve() == (GRAFANA / "provisioning")
    provider = yaml.safe_load(
        (GRAFANA / "provisioning" / "dashboards" / "touchpath.yaml").read_text(encoding="utf-8")
    )["providers"][0]
    dashboards_dir = provider["options"]["path"]
    assert (REPO / m[dashboards_dir]).resolve() == (GRAFANA / "dashboards")
    assert (GRAFANA / "dashboards" / "touchpath.json").is_file()
    assert "clickhouse" in grafana["depends_on"]


def test_grafana_datasource_is_the_compose_clickhouse(services: dict[str, Any]) -> None:
    config = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "clickhouse.yaml").read_text(encoding="utf-8")
    )
    (ds,) = config["datasources"]
    assert ds["type"] == "grafana-clickhouse-datasource"
    data = ds["jsonData"]
    assert data["host"] in services
    assert data["host"] == "clickhouse"
    assert int(data["port"]) in published(services["clickhouse"])
    ch = env(services["clickhouse"])
    assert data["username"] == ch["CLICKHOUSE_USER"]
    assert ds["secureJsonData"]["password"] == ch["CLICKHOUSE_PASSWORD"]


def test_every_host_path_exists_and_every_named_volume_is_declared(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    declared = set(compose.get("volumes") or {})
    for name, service in services.items():
        for target, source in mounts(service).items():
            if source.startswith((".", "/")):
                assert (REPO / source).exists(), f"{name}: {source} (for {target}) is missing"
            else:
                assert source in declared, f"{name}: volume {source!r} is not declared"
