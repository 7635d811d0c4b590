"""Prometheus metrics: event metrics the daemon records, and the IPVS table from the snapshot.

Two parts make one ``/metrics`` body:

* ``DaemonMetrics`` owns a private ``CollectorRegistry`` of the event metrics (probes,
  transitions, reconcile passes, reloads, build info), rendered by prometheus_client.
* ``SnapshotRenderer`` writes the per-service and per-real-server series straight from the
  latest ``Snapshot`` in the text exposition format, at scrape time. It keeps no metric object
  per server, so nothing is left behind when a server goes away, and it is ~10x faster than
  building prometheus_client metric families for 100k samples (P6).

Labels follow node_exporter's ipvs collector so its dashboards port over: ``local_address``,
``local_port``, ``proto`` (TCP/UDP/SCTP/FWM), ``local_mark`` (8-digit uppercase hex for a fwmark
service, whose local_address is "" and local_port "0"; "" otherwise), ``remote_address``,
``remote_port``.
"""

from __future__ import annotations

import errno
import importlib.metadata
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    generate_latest,
)

import lvsd
from lvsd.errors import IpvsError
from lvsd.model import (
    OP_NAMES,
    Dest,
    DestKey,
    Op,
    Protocol,
    Service,
    ServiceKey,
    ServiceStats,
)
from lvsd.snapshot import ServerStatus, ServiceStatus, Snapshot

# The classic text format: every Prometheus release and promtool read it.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

PROBE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
LATENESS_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
RECONCILE_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)

def errno_name(code: int) -> str:
    return errno.errorcode.get(code, str(code))


def _package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return ""


class DaemonMetrics:
    """The event metrics, in a registry of their own (never the process-global one)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.renderer = SnapshotRenderer()
        reg = self.registry
        self._probes = Counter(
            "lvsd_probes", "Health probes finished, by check type and result (ok, fail).",
            ["check_type", "result"], registry=reg,
        )
        self._probe_duration = Histogram(
            "lvsd_probe_duration_seconds",
            "How long health probes took, by check type and result.",
            ["check_type", "result"], buckets=PROBE_BUCKETS, registry=reg,
        )
        self._lateness = Histogram(
            "lvsd_probe_lateness_seconds",
            "How late probes started after their scheduled time.",
            buckets=LATENESS_BUCKETS, registry=reg,
        )
        self._transitions = Counter(
            "lvsd_health_transitions",
            "Health state changes of checked servers, by check type and new state.",
            ["check_type", "to"], registry=reg,
        )
        self._operations = Counter(
            "lvsd_reconcile_operations",
            "IPVS table operations lvsd sent to the kernel, by kind.",
            ["kind"], registry=reg,
        )
        self._errors = Counter(
            "lvsd_reconcile_errors",
            "IPVS table operations the kernel refused, by kind and errno name.",
            ["kind", "errno"], registry=reg,
        )
        self._reconcile_duration = Histogram(
            "lvsd_reconcile_duration_seconds",
            "How long one reconcile pass took (plan and apply).",
            buckets=RECONCILE_BUCKETS, registry=reg,
        )
        self._reloads = Counter(
            "lvsd_config_reloads", "Configuration reloads, by result (success, failure).",
            ["result"], registry=reg,
        )
        self._last_reload_ok = Gauge(
            "lvsd_config_last_reload_successful",
            "1 if the last configuration reload succeeded, 0 if it failed "
            "(the previous configuration keeps running).",
            registry=reg,
        )
        self._last_reload_success = Gauge(
            "lvsd_config_last_reload_success_timestamp_seconds",
            "When the configuration was last loaded successfully (Unix time).",
            registry=reg,
        )
        build = Info("lvsd_build", "lvsd build information.", registry=reg)
        build.info({
            "version": lvsd.__version__,
            "python": platform.python_version(),
            "pyroute2": _package_version("pyroute2"),
        })
        ProcessCollector(registry=reg)
        for kind in OP_NAMES:
            self._operations.labels(kind)
        for result in ("success", "failure"):
            self._reloads.labels(result)
        # The daemon builds its metrics once its configuration has loaded: that load counts.
        self._last_reload_ok.set(1)
        self._last_reload_success.set(time.time())
        # Children cached per label set: .labels() costs more than the increment (P1 budget).
        self._probe_children: dict[tuple[str, bool], tuple[Counter, Histogram]] = {}

    def probe(self, check_type: str, ok: bool, duration: float, lateness: float) -> None:
        children = self._probe_children.get((check_type, ok))
        if children is None:
            result = "ok" if ok else "fail"
            children = (
                self._probes.labels(check_type, result),
                self._probe_duration.labels(check_type, result),
            )
            self._probe_children[(check_type, ok)] = children
        children[0].inc()
        children[1].observe(duration)
        self._lateness.observe(max(lateness, 0.0))

    def transition(self, check_type: str, to: str) -> None:
        self._transitions.labels(check_type, to).inc()

    def reconcile(
        self, ops: Sequence[Op], errors: Sequence[IpvsError], duration: float
    ) -> None:
        counts: dict[str, int] = {}
        for op in ops:
            counts[op.name] = counts.get(op.name, 0) + 1
        for kind, count in counts.items():
            self._operations.labels(kind).inc(count)
        for error in errors:
            self._errors.labels(error.name, errno_name(error.errno)).inc()
        self._reconcile_duration.observe(duration)

    def reload(self, ok: bool, at: float) -> None:
        self._reloads.labels("success" if ok else "failure").inc()
        self._last_reload_ok.set(1 if ok else 0)
        if ok:
            self._last_reload_success.set(at)

    def exposition(self, snapshot: Snapshot) -> bytes:
        """The whole ``/metrics`` body: the snapshot's series, then the event metrics."""
        return b"".join(self.exposition_chunks(snapshot))

    def exposition_chunks(self, snapshot: Snapshot) -> list[bytes]:
        chunks = self.renderer.render_chunks(snapshot)
        chunks.append(generate_latest(self.registry))
        return chunks


# --- the snapshot part, rendered by hand -------------------------------------------------------

PROTO_LABEL = {
    Protocol.TCP: "TCP",
    Protocol.UDP: "UDP",
    Protocol.SCTP: "SCTP",
    Protocol.FWMARK: "FWM",
}


def service_labels(key: ServiceKey) -> str:
    """``local_address="…",local_port="…",proto="…",local_mark="…"`` as node_exporter writes."""
    if key.is_fwmark:
        return f'local_address="",local_port="0",proto="FWM",local_mark="{key.fwmark:08X}"'
    return (
        f'local_address="{key.address}",local_port="{key.port}",'
        f'proto="{PROTO_LABEL[key.protocol]}",local_mark=""'
    )


def escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


_TRAFFIC: tuple[tuple[str, str, Callable[[ServiceStats], int]], ...] = (
    ("connections_total", "Connections scheduled (kernel counter).", lambda s: s.conns),
    ("incoming_packets_total", "Packets from clients (kernel counter).", lambda s: s.inpkts),
    ("outgoing_packets_total", "Packets to clients through the director (kernel counter; "
     "0 when replies bypass it, as with direct routing).", lambda s: s.outpkts),
    ("incoming_bytes_total", "Bytes from clients (kernel counter).", lambda s: s.inbytes),
    ("outgoing_bytes_total", "Bytes to clients through the director (kernel counter; "
     "0 when replies bypass it, as with direct routing).", lambda s: s.outbytes),
)


def _health_value(server: ServerStatus) -> int:
    # A server without a check is served as healthy; one not yet checked is not.
    return 1 if server.health in ("up", "unchecked") else 0


@dataclass(slots=True)
class _Rows:
    """The backends of one render as parallel lists: no tuple per row for the GC to walk."""

    labels: list[str]
    kernel: list[Dest | None]  # None when the server is not in the kernel
    persistent: list[bool]
    status: list[ServerStatus | None]  # None for a foreign service's destination


class SnapshotRenderer:
    """Writes the snapshot's series in the text format.

    Label strings are cached by the identity of the key objects (the daemon reuses its
    configured keys from one snapshot to the next): hashing or formatting ``ipaddress``
    objects costs more than the rest of a row. The cache holds the keys it was built from, so
    an id cannot be reused by another object while its entry exists; each render keeps only
    the entries it used.
    """

    def __init__(self) -> None:
        self._labels: dict[int, str] = {}
        self._keys: list[object] = []

    def render(self, snapshot: Snapshot) -> bytes:
        return b"".join(self.render_chunks(snapshot))

    def render_chunks(self, snapshot: Snapshot) -> list[bytes]:
        """The exposition in pieces, one or two per family: a server streams or compresses
        them without first copying 15 MB into one buffer."""
        # ``old_keys`` keeps the objects behind ``old``'s ids alive for this whole render, even
        # if another thread's render replaces them meanwhile.
        old, old_keys = self._labels, self._keys
        labels_by_id: dict[int, str] = {}
        keys: list[object] = []
        rows = _Rows([], [], [], [])

        def service_row(key: ServiceKey) -> str:
            labels = old.get(id(key))
            if labels is None:
                labels = service_labels(key)
            labels_by_id[id(key)] = labels
            keys.append(key)
            return labels

        def backend_rows(key: ServiceKey, prefix: str, dest_keys: Sequence[DestKey],
                         dests: Sequence[Dest | None], persistent: bool,
                         statuses: Sequence[ServerStatus | None]) -> None:
            service_id = id(key) << 64
            labels = []
            for dest_key in dest_keys:
                identity = service_id | id(dest_key)
                cached = old.get(identity)
                if cached is None:
                    cached = (f'{prefix},remote_address="{dest_key.address}",'
                              f'remote_port="{dest_key.port}"')
                labels_by_id[identity] = cached
                labels.append(cached)
            keys.extend(dest_keys)
            if len(set(labels)) < len(labels):
                # A server listed twice still gets one series per label set.
                first = {label: index for index, label in reversed(list(enumerate(labels)))}
                kept = sorted(first.values())
                labels = [labels[i] for i in kept]
                dests = [dests[i] for i in kept]
                statuses = [statuses[i] for i in kept]
            rows.labels.extend(labels)
            rows.kernel.extend(dests)
            rows.persistent.extend([persistent] * len(labels))
            rows.status.extend(statuses)

        kernel_services: list[tuple[str, Service]] = []
        own_services: list[tuple[str, ServiceStatus]] = []
        for service in snapshot.services:
            prefix = service_row(service.key)
            own_services.append((prefix, service))
            persistent = service.kernel is not None and service.kernel.persistence is not None
            if service.kernel is not None:
                kernel_services.append((prefix, service.kernel))
            servers = service.servers
            backend_rows(service.key, prefix, [s.key for s in servers],
                         [s.kernel for s in servers], persistent, servers)
        for vs in snapshot.foreign:
            prefix = service_row(vs.key)
            kernel_services.append((prefix, vs.service))
            backend_rows(vs.key, prefix, [d.key for d in vs.dests], vs.dests,
                         vs.service.persistence is not None, [None] * len(vs.dests))
        self._labels, self._keys = labels_by_id, keys
        del old_keys

        out: list[bytes] = []
        _global_families(out, snapshot)
        _service_families(out, own_services, kernel_services)
        _backend_families(out, rows)
        return out


def _emit(out: list[bytes], header: str, lines: list[str]) -> None:
    if lines:
        out.append(header.encode())
        out.append("".join(lines).encode())


def _family_header(name: str, kind: str, help_text: str) -> tuple[str, str]:
    return f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n", name + "{"


def _global_families(out: list[bytes], snapshot: Snapshot) -> None:
    for name, help_text, value in (
        ("lvsd_ready", "1 once the configuration is loaded and the first reconcile is done.",
         1 if snapshot.ready else 0),
        ("lvsd_snapshot_timestamp_seconds",
         "When lvsd last read the IPVS table from the kernel (Unix time).", snapshot.taken_at),
        ("lvsd_table_in_sync",
         "0 while the kernel table may differ from lvsd's plan: the last pass's dump or writes "
         "failed (retried with backoff).", 1 if snapshot.table_sync.in_sync else 0),
        ("lvsd_table_sync_failures",
         "Reconcile passes in a row that failed to read or write the kernel table "
         "(0 when in sync).", snapshot.table_sync.consecutive_failures),
    ):
        out.append(f"# HELP {name} {help_text}\n# TYPE {name} gauge\n{name} {value}\n".encode())


def _service_families(
    out: list[bytes],
    own: Sequence[tuple[str, ServiceStatus]],
    kernel_services: Sequence[tuple[str, Service]],
) -> None:
    for suffix, help_text, value_of in _TRAFFIC:
        header, p = _family_header(f"lvsd_service_{suffix}", "counter",
                                   f"Virtual service: {help_text}")
        _emit(out, header, [f"{p}{lab}}} {value_of(svc.stats)}\n"
                            for lab, svc in kernel_services])
    header, p = _family_header("lvsd_service_info", "gauge",
                               "A virtual service lvsd manages, with its configured name.")
    _emit(out, header, [f'{p}{lab},name="{escape_label_value(s.name)}"}} 1\n'
                        for lab, s in own])
    header, p = _family_header(
        "lvsd_service_healthy_weight", "gauge",
        "Sum of the configured weights of the service's healthy real servers.")
    _emit(out, header, [f"{p}{lab}}} {s.healthy_weight}\n" for lab, s in own])
    header, p = _family_header("lvsd_service_quorum", "gauge",
                               "The healthy weight the service needs (configured quorum).")
    _emit(out, header, [f"{p}{lab}}} {s.quorum}\n" for lab, s in own])
    header, p = _family_header("lvsd_service_below_quorum", "gauge",
                               "1 while the healthy weight is below the quorum.")
    _emit(out, header, [f"{p}{lab}}} {int(s.below_quorum)}\n" for lab, s in own])
    header, p = _family_header("lvsd_service_sorry_active", "gauge",
                               "1 while the sorry server takes the service's traffic.")
    _emit(out, header, [f"{p}{lab}}} {int(s.sorry_active)}\n" for lab, s in own])
    header, p = _family_header(
        "lvsd_service_fail_open_active", "gauge",
        "1 while every real server is down and all are kept in (fail-open).")
    _emit(out, header, [f"{p}{lab}}} {int(s.fail_open_active)}\n" for lab, s in own])


def _backend_families(out: list[bytes], rows: _Rows) -> None:
    live_labels = [lab for lab, d in zip(rows.labels, rows.kernel, strict=True) if d is not None]
    live = [d for d in rows.kernel if d is not None]
    traffic = [d.stats.traffic for d in live]
    for suffix, help_text, value_of in _TRAFFIC:
        header, p = _family_header(f"lvsd_backend_{suffix}", "counter",
                                   f"Real server: {help_text}")
        _emit(out, header, [f"{p}{lab}}} {value_of(t)}\n"
                            for lab, t in zip(live_labels, traffic, strict=True)])
    header, p = _family_header("lvsd_backend_connections_active", "gauge",
                               "Active connections to the real server (kernel).")
    _emit(out, header, [f"{p}{lab}}} {d.stats.active}\n"
                        for lab, d in zip(live_labels, live, strict=True)])
    header, p = _family_header("lvsd_backend_connections_inactive", "gauge",
                               "Inactive connections to the real server (kernel).")
    _emit(out, header, [f"{p}{lab}}} {d.stats.inactive}\n"
                        for lab, d in zip(live_labels, live, strict=True)])
    header, p = _family_header(
        "lvsd_backend_connections_persistent", "gauge",
        "Persistence templates pointing at the real server (kernel); only for services "
        "with persistence.")
    _emit(out, header, [f"{p}{lab}}} {d.stats.persistent}\n"
                        for lab, d, persistent in zip(rows.labels, rows.kernel, rows.persistent,
                                                      strict=True)
                        if d is not None and persistent])
    header, p = _family_header("lvsd_backend_weight", "gauge",
                               "The real server's weight in the kernel (0: no new connections).")
    _emit(out, header, [f"{p}{lab}}} {d.weight}\n"
                        for lab, d in zip(live_labels, live, strict=True)])
    own_labels = [lab for lab, s in zip(rows.labels, rows.status, strict=True) if s is not None]
    own = [s for s in rows.status if s is not None]
    header, p = _family_header(
        "lvsd_backend_configured_weight", "gauge",
        "The real server's weight in lvsd's configuration (0 while draining).")
    _emit(out, header, [f"{p}{lab}}} {s.configured_weight}\n"
                        for lab, s in zip(own_labels, own, strict=True)])
    header, p = _family_header(
        "lvsd_backend_health", "gauge",
        "1 when the real server's check passes (or it has none), 0 when it is down or not "
        "yet checked.")
    _emit(out, header, [f"{p}{lab}}} {_health_value(s)}\n"
                        for lab, s in zip(own_labels, own, strict=True)])
    header, p = _family_header(
        "lvsd_backend_drain_deadline_timestamp_seconds", "gauge",
        "Present only while the real server is drained: when lvsd removes it even if "
        "connections remain (Unix time).")
    _emit(out, header, [f"{p}{lab}}} {s.drain_deadline}\n"
                        for lab, s in zip(own_labels, own, strict=True)
                        if s.drain_deadline is not None])
