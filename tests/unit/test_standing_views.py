"""Slow start and agent in what operators read: the /status document and the metrics."""

from __future__ import annotations

import dataclasses

from prometheus_client.parser import text_string_to_metric_families

from lvsd.api import render_page, status_document
from lvsd.metrics import SnapshotRenderer
from lvsd.snapshot import AgentStatus, Snapshot
from tests.unit.snapshot_builders import NOW, WEB, lab_snapshot, server, service

AGENT = AgentStatus(True, "50% drain", "50% drain # deploy", 50, "drain", NOW - 5)


def standing_snapshot() -> Snapshot:
    ramping = dataclasses.replace(server("198.51.100.1", weight=100, kernel_weight=35),
                                  slow_start_until=NOW + 20, slow_start_share=0.35)
    agent = dataclasses.replace(server("198.51.100.2", kernel_weight=0), agent=AGENT)
    silent = dataclasses.replace(server("198.51.100.4"), agent=AgentStatus(False, "no answer",
                                                                           error="refused"))
    return dataclasses.replace(lab_snapshot(), services=(
        service(WEB, "web", [ramping, agent, silent, server("198.51.100.5")]),))


def test_status_shows_the_ramp_and_the_agent_per_server() -> None:
    servers = status_document(standing_snapshot(), NOW)["services"][0]["servers"]
    assert servers[0]["slow_start"] == {"until": NOW + 20, "share": 0.35}
    assert servers[0]["kernel_weight"] == 35 and servers[0]["agent"] is None
    assert servers[1]["agent"] == {"answering": True, "state": "50% drain",
                                   "line": "50% drain # deploy", "percent": 50,
                                   "command": "drain", "since": NOW - 5, "error": None}
    assert servers[2]["agent"]["answering"] is False and servers[2]["agent"]["error"] == "refused"
    assert servers[3]["slow_start"] is None and servers[3]["agent"] is None


def test_the_page_says_a_server_ramps_and_what_its_agent_said() -> None:
    page = render_page(standing_snapshot(), NOW)
    assert "slow start 35% (full in 20.0 s)" in page
    assert "agent: 50% drain" in page and "agent: no answer" in page


def series(snapshot: Snapshot) -> dict[tuple[str, str], float]:
    text = SnapshotRenderer().render(snapshot).decode()
    return {(sample.name, sample.labels["remote_address"]): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples
            if "slow_start" in sample.name or "agent" in sample.name}


def test_metrics_carry_the_ramp_and_the_agent_only_for_the_servers_they_concern() -> None:
    assert series(standing_snapshot()) == {
        ("lvsd_backend_slow_start_share", "198.51.100.1"): 0.35,
        ("lvsd_backend_slow_start_end_timestamp_seconds", "198.51.100.1"): NOW + 20,
        ("lvsd_backend_agent_answering", "198.51.100.2"): 1.0,
        ("lvsd_backend_agent_answering", "198.51.100.4"): 0.0,
        ("lvsd_backend_agent_percent", "198.51.100.2"): 50.0,
        ("lvsd_backend_agent_out", "198.51.100.2"): 1.0,
        ("lvsd_backend_agent_out", "198.51.100.4"): 0.0,
    }
    assert series(lab_snapshot()) == {}
