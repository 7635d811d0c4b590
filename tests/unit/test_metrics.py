"""The /metrics exposition: node_exporter's labels, bounded series, no leaks, event metrics."""

from __future__ import annotations

import dataclasses
import errno
import shutil
import subprocess
import time
from collections import Counter

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from lvsd.errors import IpvsError
from lvsd.metrics import DaemonMetrics, SnapshotRenderer
from lvsd.model import (
    AddDest,
    DeleteDest,
    DeleteService,
    DestKey,
    EditDest,
    Protocol,
    ServiceKey,
    SetTimeouts,
    Timeouts,
    parse_address,
)
from lvsd.snapshot import Snapshot, SyncStatus
from tests.unit.snapshot_builders import (
    DNS,
    MARKED,
    NOW,
    WEB,
    foreign,
    lab_snapshot,
    server,
    service,
)

BACKEND_LABELS = {"local_address", "local_port", "proto", "local_mark", "remote_address",
                  "remote_port"}


def samples(text: str) -> list[Sample]:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def render(snapshot: Snapshot, renderer: SnapshotRenderer | None = None) -> list[Sample]:
    return samples((renderer or SnapshotRenderer()).render(snapshot).decode())


def value(found: list[Sample], metric: str, /, **labels: str) -> float:
    matches = [s.value for s in found
               if s.name == metric and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(matches) == 1, (metric, labels, matches)
    return matches[0]


def series_per_backend(found: list[Sample]) -> Counter[tuple[str, str, str, str]]:
    return Counter((s.labels["local_address"], s.labels["local_mark"], s.labels["remote_address"],
                    s.labels["remote_port"]) for s in found if "remote_address" in s.labels)


def test_backend_series_carry_node_exporters_label_set() -> None:
    found = render(lab_snapshot())
    weight = [s for s in found if s.name == "lvsd_backend_weight"
              and s.labels["remote_address"] == "198.51.100.1"]
    assert weight == [Sample("lvsd_backend_weight", {
        "local_address": "192.0.2.10", "local_port": "80", "proto": "TCP", "local_mark": "",
        "remote_address": "198.51.100.1", "remote_port": "80"}, 10.0)]
    assert all(set(s.labels) == BACKEND_LABELS for s in found if s.name.startswith("lvsd_backend"))


def test_fwmark_service_uses_empty_address_port_zero_and_hex_mark() -> None:
    found = render(lab_snapshot())
    assert value(found, "lvsd_backend_health", remote_address="198.51.100.3") == 1
    labels = next(s.labels for s in found if s.name == "lvsd_backend_health"
                  and s.labels["remote_address"] == "198.51.100.3")
    assert labels["local_address"] == ""
    assert labels["local_port"] == "0"
    assert labels["proto"] == "FWM"
    assert labels["local_mark"] == "0000000A"
    assert labels["remote_port"] == "0"


def test_ipv6_and_udp_services_are_labelled_like_node_exporter() -> None:
    found = render(lab_snapshot())
    assert value(found, "lvsd_service_connections_total", local_address="2001:db8::53",
                 local_port="53", proto="UDP", local_mark="") == 100


def test_kernel_counters_and_gauges_match_the_snapshot() -> None:
    snapshot = lab_snapshot()
    found = render(snapshot)
    dest = snapshot.services[0].servers[0].kernel
    assert dest is not None
    rs = {"remote_address": "198.51.100.1"}
    assert value(found, "lvsd_backend_connections_total", **rs) == dest.stats.traffic.conns
    assert value(found, "lvsd_backend_incoming_packets_total", **rs) == dest.stats.traffic.inpkts
    assert value(found, "lvsd_backend_outgoing_packets_total", **rs) == dest.stats.traffic.outpkts
    assert value(found, "lvsd_backend_incoming_bytes_total", **rs) == dest.stats.traffic.inbytes
    assert value(found, "lvsd_backend_outgoing_bytes_total", **rs) == dest.stats.traffic.outbytes
    assert value(found, "lvsd_backend_connections_active", **rs) == dest.stats.active
    assert value(found, "lvsd_backend_connections_inactive", **rs) == dest.stats.inactive
    assert value(found, "lvsd_service_incoming_bytes_total", local_address="192.0.2.10") == 100_000


def test_health_and_weights_of_a_down_server() -> None:
    found = render(lab_snapshot())
    down = {"remote_address": "198.51.100.2"}
    assert value(found, "lvsd_backend_health", **down) == 0
    assert value(found, "lvsd_backend_weight", **down) == 0
    assert value(found, "lvsd_backend_configured_weight", **down) == 10
    assert value(found, "lvsd_backend_health", remote_address="198.51.100.1") == 1


@pytest.mark.parametrize(("health", "expected"),
                         [("up", 1), ("down", 0), ("unknown", 0), ("unchecked", 1)])
def test_health_value_per_state(health: str, expected: int) -> None:
    snapshot = Snapshot((service(WEB, "web", [server("198.51.100.1", health=health)]),),  # type: ignore[arg-type]
                        (), NOW, True, "x")
    assert value(render(snapshot), "lvsd_backend_health") == expected


def test_service_level_state() -> None:
    snapshot = Snapshot((service(WEB, "web", [server("198.51.100.1", health="down")], quorum=5,
                                 sorry_active=True),), (), NOW, True, "x")
    found = render(snapshot)
    assert value(found, "lvsd_service_healthy_weight") == 0
    assert value(found, "lvsd_service_quorum") == 5
    assert value(found, "lvsd_service_below_quorum") == 1
    assert value(found, "lvsd_service_sorry_active") == 1
    assert value(found, "lvsd_service_fail_open_active") == 0
    assert value(found, "lvsd_service_info", name="web") == 1


def test_ten_series_per_real_server_eleven_with_persistence() -> None:
    per_backend = series_per_backend(render(lab_snapshot()))
    assert per_backend == {
        ("192.0.2.10", "", "198.51.100.1", "80"): 10,
        ("192.0.2.10", "", "198.51.100.2", "80"): 10,
        ("", "0000000A", "198.51.100.3", "0"): 10,
        # A persistent service adds its persistence-template count and nothing else.
        ("2001:db8::53", "", "2001:db8::1", "53"): 11,
        # A foreign service's server: kernel series only.
        ("203.0.113.7", "", "198.51.100.99", "443"): 8,
    }


def test_persistent_count_only_for_persistent_services() -> None:
    found = render(lab_snapshot())
    persistent = [s.labels["remote_address"] for s in found
                  if s.name == "lvsd_backend_connections_persistent"]
    assert persistent == ["2001:db8::1"]


def test_foreign_services_get_traffic_and_weight_but_no_health() -> None:
    found = render(lab_snapshot())
    names = {s.name for s in found if s.labels.get("remote_address") == "198.51.100.99"}
    assert names == {
        "lvsd_backend_connections_total", "lvsd_backend_incoming_packets_total",
        "lvsd_backend_outgoing_packets_total", "lvsd_backend_incoming_bytes_total",
        "lvsd_backend_outgoing_bytes_total", "lvsd_backend_connections_active",
        "lvsd_backend_connections_inactive", "lvsd_backend_weight",
    }
    assert value(found, "lvsd_service_connections_total", local_address="203.0.113.7") == 7
    service_names = {s.name for s in found if s.name.startswith("lvsd_service_")
                     and s.labels["local_address"] == "203.0.113.7"}
    assert service_names == {
        "lvsd_service_connections_total", "lvsd_service_incoming_packets_total",
        "lvsd_service_outgoing_packets_total", "lvsd_service_incoming_bytes_total",
        "lvsd_service_outgoing_bytes_total",
    }


def test_server_missing_from_the_kernel_has_only_lvsd_series() -> None:
    snapshot = Snapshot((service(WEB, "web", [server("198.51.100.1", health="down",
                                                     in_kernel=False)]),), (), NOW, True, "x")
    names = {s.name for s in render(snapshot) if "remote_address" in s.labels}
    assert names == {"lvsd_backend_configured_weight", "lvsd_backend_health"}


def test_drain_deadline_only_while_draining() -> None:
    draining = server("198.51.100.5", role="draining", weight=0, health="unchecked",
                      drain_deadline=NOW + 300)
    snapshot = Snapshot((service(WEB, "web", [server("198.51.100.1"), draining]),), (), NOW,
                        True, "x")
    found = render(snapshot)
    deadlines = [s for s in found if s.name == "lvsd_backend_drain_deadline_timestamp_seconds"]
    assert [(s.labels["remote_address"], s.value) for s in deadlines] == [
        ("198.51.100.5", NOW + 300)]
    assert value(found, "lvsd_backend_configured_weight", remote_address="198.51.100.5") == 0


def test_no_series_left_for_a_server_that_went_away() -> None:
    renderer = SnapshotRenderer()
    before = lab_snapshot()
    assert any(s.labels.get("remote_address") == "198.51.100.2" for s in render(before, renderer))
    web = before.services[0]
    after = dataclasses.replace(
        before, services=(dataclasses.replace(web, servers=web.servers[:1]), *before.services[1:]))
    found = render(after, renderer)
    assert not [s for s in found if s.labels.get("remote_address") == "198.51.100.2"]
    assert value(found, "lvsd_backend_health", remote_address="198.51.100.1") == 1


def test_cached_labels_follow_new_values_and_new_key_objects() -> None:
    renderer = SnapshotRenderer()
    first = lab_snapshot()
    render(first, renderer)
    web = first.services[0]
    moved = dataclasses.replace(web.servers[0], key=DestKey(parse_address("198.51.100.77"), 80),
                                configured_weight=42)
    second = dataclasses.replace(
        first, services=(dataclasses.replace(web, servers=(moved,)), *first.services[1:]))
    found = render(second, renderer)
    assert value(found, "lvsd_backend_configured_weight", local_address="192.0.2.10") == 42
    assert value(found, "lvsd_backend_health", remote_address="198.51.100.77") == 1


def test_a_server_listed_twice_is_exported_once() -> None:
    twice = server("198.51.100.1")
    snapshot = Snapshot((service(WEB, "web", [twice, twice]),), (), NOW, True, "x")
    per_backend = series_per_backend(render(snapshot))
    assert list(per_backend.values()) == [10]


def test_service_name_is_escaped_in_label_values() -> None:
    name = 'we"b\\ \nfront'
    snapshot = Snapshot((service(WEB, name, [server("198.51.100.1")]),), (), NOW, True, "x")
    assert value(render(snapshot), "lvsd_service_info", name=name) == 1


def test_percent_signs_in_label_values_are_written_as_they_are() -> None:
    name = "100% web %s %d %%"
    scoped = "fe80::1%eth0"
    key = ServiceKey.virtual(Protocol.TCP, parse_address(scoped), 443)
    snapshot = Snapshot((service(key, name, [server("2001:db8::7")]),), (), NOW, True, "x")
    found = render(snapshot)
    assert value(found, "lvsd_service_info", name=name, local_address=scoped) == 1
    live = snapshot.services[0].servers[0].kernel
    assert live is not None
    assert value(found, "lvsd_backend_weight", local_address=scoped,
                 remote_address="2001:db8::7") == live.weight


def test_ready_and_snapshot_time() -> None:
    found = render(lab_snapshot(ready=False))
    assert value(found, "lvsd_ready") == 0
    assert value(found, "lvsd_snapshot_timestamp_seconds") == NOW - 0.5


def test_table_sync_is_three_series() -> None:
    in_sync = render(dataclasses.replace(lab_snapshot(), sync=SyncStatus(in_sync=True)))
    assert value(in_sync, "lvsd_table_in_sync") == 1
    assert value(in_sync, "lvsd_table_sync_failures") == 0
    assert value(in_sync, "lvsd_table_sync_failed_passes_total") == 0
    failing = dataclasses.replace(lab_snapshot(), sync=SyncStatus(
        False, 7, 9, "dump: Connection reset by peer (errno 104)", NOW - 1))
    found = render(failing)
    assert value(found, "lvsd_table_in_sync") == 0
    assert value(found, "lvsd_table_sync_failures") == 7
    assert value(found, "lvsd_table_sync_failed_passes_total") == 9
    assert sum(1 for s in found if s.name.startswith("lvsd_table_")) == 3


# --- event metrics ----------------------------------------------------------------------------


def event_samples(metrics: DaemonMetrics) -> list[Sample]:
    return samples(metrics.exposition(Snapshot((), (), 0.0, False, "")).decode())


def test_probe_counts_and_durations_by_type_and_result() -> None:
    metrics = DaemonMetrics()
    metrics.probe("http", True, 0.003, 0.0)
    metrics.probe("http", True, 0.2, 0.07)
    metrics.probe("tcp", False, 1.5, -0.001)
    found = event_samples(metrics)
    assert value(found, "lvsd_probes_total", check_type="http", result="ok") == 2
    assert value(found, "lvsd_probes_total", check_type="tcp", result="fail") == 1
    assert value(found, "lvsd_probe_duration_seconds_bucket", check_type="http", result="ok",
                 le="0.005") == 1
    assert value(found, "lvsd_probe_duration_seconds_count", check_type="tcp",
                 result="fail") == 1
    assert value(found, "lvsd_probe_lateness_seconds_bucket", le="0.05") == 2
    assert value(found, "lvsd_probe_lateness_seconds_count") == 3


def test_reconcile_counts_operations_and_errors_by_kind_and_errno() -> None:
    metrics = DaemonMetrics()
    dest = lab_snapshot().services[0].servers[0].kernel
    assert dest is not None
    ops = [AddDest(WEB, dest), AddDest(DNS, dest), EditDest(WEB, dest),
           DeleteDest(MARKED, dest.key), SetTimeouts(Timeouts())]
    errors = [IpvsError.of(AddDest(WEB, dest), errno.EEXIST, "destination already exists"),
              IpvsError("dump", "IPVS table", errno.ENOMEM, "cannot allocate memory")]
    metrics.reconcile(ops, errors, 0.004)
    found = event_samples(metrics)
    assert value(found, "lvsd_reconcile_operations_total", kind="add_dest") == 2
    assert value(found, "lvsd_reconcile_operations_total", kind="edit_dest") == 1
    assert value(found, "lvsd_reconcile_operations_total", kind="delete_dest") == 1
    assert value(found, "lvsd_reconcile_operations_total", kind="set_timeouts") == 1
    assert value(found, "lvsd_reconcile_operations_total", kind="add_service") == 0
    assert value(found, "lvsd_reconcile_errors_total", kind="add_dest", errno="EEXIST") == 1
    assert value(found, "lvsd_reconcile_errors_total", kind="dump", errno="ENOMEM") == 1
    assert value(found, "lvsd_reconcile_duration_seconds_count") == 1


def test_error_names_come_from_the_operation() -> None:
    key = ServiceKey.virtual(Protocol.TCP, "192.0.2.1", 80)
    assert IpvsError.of(DeleteService(key), 3, "").name == "delete_service"
    assert IpvsError("get info", "IPVS table", 1, "").name == "get_info"


def test_reload_success_and_failure() -> None:
    before = time.time()
    metrics = DaemonMetrics()
    found = event_samples(metrics)
    assert value(found, "lvsd_config_last_reload_successful") == 1
    assert value(found, "lvsd_config_last_reload_success_timestamp_seconds") >= before
    metrics.reload(True, NOW)
    found = event_samples(metrics)
    assert value(found, "lvsd_config_last_reload_successful") == 1
    assert value(found, "lvsd_config_last_reload_success_timestamp_seconds") == NOW
    metrics.reload(False, NOW + 10)
    found = event_samples(metrics)
    assert value(found, "lvsd_config_reloads_total", result="success") == 1
    assert value(found, "lvsd_config_reloads_total", result="failure") == 1
    assert value(found, "lvsd_config_last_reload_successful") == 0
    assert value(found, "lvsd_config_last_reload_success_timestamp_seconds") == NOW


def test_transitions_and_build_info() -> None:
    metrics = DaemonMetrics()
    metrics.transition("http", "down")
    metrics.transition("http", "down")
    found = event_samples(metrics)
    assert value(found, "lvsd_health_transitions_total", check_type="http", to="down") == 2
    info = next(s for s in found if s.name == "lvsd_build_info")
    assert set(info.labels) == {"version", "python", "pyroute2"}


def test_event_metrics_live_in_a_private_registry() -> None:
    from prometheus_client import REGISTRY

    DaemonMetrics()
    DaemonMetrics()  # a second instance would clash if both used the global registry
    assert "lvsd_probes" not in {m.name for m in REGISTRY.collect()}


# --- promtool -------------------------------------------------------------------------------


def promtool() -> str:
    path = shutil.which("promtool")
    assert path is not None, "promtool missing: apt-get install prometheus"
    return path


def test_promtool_accepts_the_whole_exposition() -> None:
    metrics = DaemonMetrics()
    metrics.probe("http", True, 0.01, 0.001)
    metrics.reconcile([], [IpvsError("add service", "x", errno.EEXIST, "")], 0.01)
    metrics.transition("tcp", "up")
    metrics.reload(True, NOW)
    snapshot = dataclasses.replace(lab_snapshot(), foreign=(foreign(),))
    result = subprocess.run([promtool(), "check", "metrics"], input=metrics.exposition(snapshot),
                            capture_output=True, timeout=30, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout + result.stderr == b""
