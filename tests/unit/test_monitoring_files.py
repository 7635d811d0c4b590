"""config/prometheus and config/grafana: valid for promtool, and built on metrics lvsd exports."""

from __future__ import annotations

import dataclasses
import errno
import ipaddress
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lvsd.consistent import MhTableStatus
from lvsd.errors import IpvsError
from lvsd.metrics import DaemonMetrics
from lvsd.overrides import Override
from lvsd.snapshot import Snapshot
from lvsd.splitbrain.book import VipStatus
from lvsd.weight import AdminState
from tests.unit.snapshot_builders import DNS, NOW, WEB, foreign, server, service

CONFIG = Path(__file__).resolve().parents[2] / "config"
PROMETHEUS = CONFIG / "prometheus"
DASHBOARD = CONFIG / "grafana" / "lvsd-dashboard.json"
METRIC_NAME = re.compile(r"(?<![\w$:])((?:lvsd|process)_[a-z0-9_]+|up)\b(?!\s*\()")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    path = shutil.which("promtool")
    assert path is not None, "promtool missing: apt-get install prometheus"
    return subprocess.run([path, *args], cwd=PROMETHEUS, capture_output=True, text=True,
                          timeout=60, check=False)


def exported_names() -> set[str]:
    """Every sample name in a full exposition, with every optional series present."""
    metrics = DaemonMetrics()
    metrics.probe("http", True, 0.01, 0.0)
    metrics.reconcile([], [IpvsError("add destination", "x", errno.EEXIST, "exists")], 0.01)
    metrics.transition("http", "down")
    metrics.reload(True, NOW)
    draining = server("198.51.100.9", role="draining", weight=0, health="unchecked",
                      drain_deadline=NOW + 60)
    drained = dataclasses.replace(server("198.51.100.2"), admin=Override(AdminState.DRAINED, 3))
    snapshot = Snapshot(
        (service(WEB, "web", [server("198.51.100.1"), draining, drained]),
         service(DNS, "dns", [server("2001:db8::1", 53)], persistent=True)),
        (foreign(),), NOW, True, "x",
        mh_tables=(MhTableStatus(WEB, "web", "0123456789abc", True, 4093),),
        vips=(VipStatus(ipaddress.ip_address("192.0.2.10"), "eth0", False),),
    )
    text = metrics.exposition(snapshot).decode()
    names = {s.name for family in text_string_to_metric_families(text) for s in family.samples}
    return names | {"up"}  # Prometheus's own series for each target


def metric_names(expr: str) -> set[str]:
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    without_ranges = re.sub(r"\[[^\]]*\]", "[]", without_strings)
    return set(METRIC_NAME.findall(without_ranges)) - {"by", "on"}


def dashboard_queries(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "definition") and isinstance(value, str):
                yield value
            else:
                yield from dashboard_queries(value)
    elif isinstance(node, list):
        for item in node:
            yield from dashboard_queries(item)


def alert_exprs() -> list[str]:
    text = (PROMETHEUS / "lvsd-alerts.yml").read_text(encoding="utf-8")
    return [line.split("expr:", 1)[1].strip() for line in text.splitlines()
            if line.strip().startswith("expr:")]


def test_promtool_checks_the_scrape_config_and_its_rules() -> None:
    result = promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout


def test_promtool_checks_the_alert_rules() -> None:
    result = promtool("check", "rules", "lvsd-alerts.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_alerts_fire_as_their_unit_tests_expect() -> None:
    result = promtool("test", "rules", "lvsd-alerts_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("alert", [
    "LvsdDown", "LvsdRealServerDown", "LvsdServiceBelowQuorum", "LvsdServiceEmpty",
    "LvsdSorryServerActive", "LvsdConfigReloadFailed", "LvsdProbesLate", "LvsdReconcileErrors",
    "LvsdTableOutOfSync", "LvsdProbeEngineOverloaded", "LvsdVipConflict", "LvsdMhTablesDiffer",
])
def test_the_issue_s_alerts_exist(alert: str) -> None:
    assert f"alert: {alert}\n" in (PROMETHEUS / "lvsd-alerts.yml").read_text(encoding="utf-8")


def test_alert_rules_use_only_exported_metrics() -> None:
    exported = exported_names()
    exprs = alert_exprs()
    assert len(exprs) == 14
    for expr in exprs:
        names = metric_names(expr)
        assert names, expr
        assert names <= exported, (expr, names - exported)


def test_dashboard_queries_use_only_exported_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exported = exported_names()
    queries = list(dashboard_queries(dashboard))
    assert len(queries) > 30
    used: set[str] = set()
    for query in queries:
        names = metric_names(query)
        assert names, query
        assert names <= exported, (query, names - exported)
        used |= names
    for wanted in ("lvsd_service_healthy_weight", "lvsd_backend_health", "lvsd_backend_weight",
                   "lvsd_backend_connections_active", "lvsd_backend_incoming_bytes_total",
                   "lvsd_probe_duration_seconds_bucket", "lvsd_reconcile_errors_total"):
        assert wanted in used


def test_dashboard_panels_are_laid_out_once() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert all({"x", "y", "w", "h"} <= set(panel["gridPos"]) for panel in dashboard["panels"])
    assert dashboard["uid"] == "lvsd-ipvs"


def test_metric_name_extraction() -> None:
    assert metric_names('sum by (le) (rate(lvsd_probe_x_bucket{a="lvsd_no"}[5m])) > up') == {
        "lvsd_probe_x_bucket", "up"}
