"""The HTTP API: /metrics, /healthz, /readyz, /status (JSON) and / (the status page).

Every handler reads a frozen ``Snapshot`` from the daemon and never its mutable state. The
``/metrics`` body is rendered and compressed in a worker thread: at 10,000 real servers that is
tens of milliseconds the event loop (and the probe scheduler on it) does not wait for.

The API is served before the daemon first reads the kernel: until the snapshot is ready,
handlers answer from it as it is (``/readyz`` 503) and never ask for a fresh kernel dump.
A malformed request or a client that goes away is the client's problem, logged at debug.
"""

from __future__ import annotations

import asyncio
import errno
import html
import logging
import os
import socket
import time
import zlib
from collections.abc import Callable, Container, Iterable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

import lvsd
from lvsd.consistent import MhTableStatus
from lvsd.durations import ago, duration, until
from lvsd.errors import ListenError
from lvsd.ipvsadm.names import FORWARD_NAMES
from lvsd.metrics import CONTENT_TYPE, DaemonMetrics
from lvsd.model import (
    Dest,
    Service,
    ServiceKey,
    ServiceStats,
    VirtualService,
)
from lvsd.overrides import Override, admin_json
from lvsd.snapshot import (
    AgentStatus,
    AnnounceStatus,
    ServerStatus,
    ServiceStatus,
    Snapshot,
    SnapshotSource,
)
from lvsd.splitbrain.book import VipStatus
from lvsd.tablejson import key_json, stats_json
from lvsd.weight import AdminState

FRESHNESS = 1.0  # seconds: counters served by /metrics, /status and / are at most this old
DEFAULT_REFRESH = 2  # seconds between reloads of the status page
GZIP_LEVEL = 1  # level 1 compresses the exposition 20-45x at half of level 6's cost

SOURCE_KEY = web.AppKey("source", SnapshotSource)
METRICS_KEY = web.AppKey("metrics", DaemonMetrics)
CLOCK_KEY: web.AppKey[Callable[[], float]] = web.AppKey("clock")
RENDER_LOCK_KEY = web.AppKey("render_lock", asyncio.Lock)


def create_app(
    source: SnapshotSource,
    metrics: DaemonMetrics,
    *,
    clock: Callable[[], float] = time.time,
) -> web.Application:
    app = web.Application()
    app[SOURCE_KEY] = source
    app[METRICS_KEY] = metrics
    app[CLOCK_KEY] = clock
    app[RENDER_LOCK_KEY] = asyncio.Lock()
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/status", _status)
    app.router.add_get("/", _page)
    return app


async def start_api(app: web.Application, host: str, port: int) -> web.AppRunner:
    """Serve ``app`` on host:port; the caller awaits ``runner.cleanup()`` to stop.

    Raises ``ListenError`` (with the address) when the port is taken, the address is not
    this host's, or the host name does not resolve."""
    runner = web.AppRunner(app, access_log=None, logger=ClientFaultsAtDebug(SERVER_LOG))
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ListenError(host, port, _socket_reason(exc)) from None
    except BaseException:
        await runner.cleanup()
        raise
    return runner


def _socket_reason(exc: OSError) -> str:
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host ({exc.strerror})"
    reasons = {
        errno.EADDRINUSE: "the port is already in use",
        errno.EADDRNOTAVAIL: "the address is not on this host",
        errno.EACCES: "permission denied",
    }
    if exc.errno in reasons:
        return reasons[exc.errno]
    return exc.strerror or os.strerror(exc.errno or 0) or str(exc)


SERVER_LOG = logging.getLogger("aiohttp.server")


def is_client_fault(exc: BaseException | None) -> bool:
    """A malformed request (bad HTTP, absurd headers) or a client that went away."""
    return isinstance(exc, HttpProcessingError | ConnectionError)


class ClientFaultsAtDebug(logging.LoggerAdapter[logging.Logger]):
    """aiohttp's server logger, with its ERROR-and-traceback for a client's mistake (a
    malformed request, a reset connection) turned into one debug line: any client could
    otherwise fill ``journalctl -p warning``. An error in lvsd's own handlers stays ERROR."""

    def log(self, level: int, msg: object, *args: object, exc_info: Any = None,
            **kwargs: Any) -> None:
        fault = exc_info if isinstance(exc_info, BaseException) else None
        if is_client_fault(fault):
            detail = " ".join(str(getattr(fault, "message", None) or fault).split())[:200]
            self.logger.debug("%s: %s: %s", str(msg) % args, type(fault).__name__, detail)
            return
        super().log(level, msg, *args, exc_info=exc_info, **kwargs)


def accepts_gzip(header: str) -> bool:
    """Whether an Accept-Encoding header allows gzip (``gzip;q=0`` refuses it)."""
    for item in header.split(","):
        name, _, params = item.strip().partition(";")
        if name.strip().lower() not in ("gzip", "*"):
            continue
        quality = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality > 0:
            return True
    return False


def _exposition(metrics: DaemonMetrics, snapshot: Snapshot, compress: bool) -> list[bytes]:
    chunks = metrics.exposition_chunks(snapshot)
    if not compress:
        return chunks
    # wbits 31: a gzip stream. zlib releases the GIL while it works.
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)
    parts = [compressor.compress(chunk) for chunk in chunks]
    parts.append(compressor.flush())
    return [b"".join(parts)]


async def _latest(app: web.Application) -> Snapshot:
    return await latest_snapshot(app[SOURCE_KEY])


async def latest_snapshot(source: SnapshotSource) -> Snapshot:
    """The snapshot to answer with: fresh counters once the daemon is ready; before that the
    daemon has not read the kernel yet, and a request must not make the first dump."""
    if not source.ready:
        return source.snapshot()
    return await source.fresh_snapshot(FRESHNESS)


async def _metrics(request: web.Request) -> web.StreamResponse:
    app = request.app
    snapshot = await _latest(app)
    compress = accepts_gzip(request.headers.get("Accept-Encoding", ""))
    loop = asyncio.get_running_loop()
    async with app[RENDER_LOCK_KEY]:
        chunks = await loop.run_in_executor(
            None, _exposition, app[METRICS_KEY], snapshot, compress
        )
    response = web.StreamResponse(headers={"Content-Type": CONTENT_TYPE,
                                           "Vary": "Accept-Encoding"})
    if compress:
        response.headers["Content-Encoding"] = "gzip"
    response.content_length = sum(len(chunk) for chunk in chunks)
    await response.prepare(request)
    for chunk in chunks:
        await response.write(chunk)
    await response.write_eof()
    return response


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def _readyz(request: web.Request) -> web.Response:
    if request.app[SOURCE_KEY].ready:  # never a snapshot: at 10,000 servers one is not free
        return web.Response(text="ready\n")
    return web.Response(status=503, text="not ready: configuration or first reconcile pending\n")


async def _status(request: web.Request) -> web.StreamResponse:
    snapshot = await _latest(request.app)
    response = web.json_response(status_document(snapshot, request.app[CLOCK_KEY]()))
    response.enable_compression()
    return response


async def _page(request: web.Request) -> web.StreamResponse:
    snapshot = await _latest(request.app)
    refresh = _refresh_seconds(request.query.get("refresh"))
    page = render_page(snapshot, request.app[CLOCK_KEY](), refresh)
    response = web.Response(text=page, content_type="text/html", charset="utf-8",
                            headers={"Cache-Control": "no-store"})
    response.enable_compression()
    return response


def _refresh_seconds(value: str | None) -> int:
    if value is None:
        return DEFAULT_REFRESH
    try:
        return min(max(int(value), 0), 3600)
    except ValueError:
        return DEFAULT_REFRESH


# --- /status --------------------------------------------------------------------------------


def status_document(snapshot: Snapshot, now: float,
                    only: Container[ServiceKey] | None = None) -> dict[str, Any]:
    """Everything the status page shows, as JSON-ready data; with ``only``, of those
    services alone (at 10,000 servers the whole document takes a good part of a second)."""
    reload = snapshot.last_reload
    sync = snapshot.sync
    probing = snapshot.probing
    return {
        "version": lvsd.__version__,
        "ready": snapshot.ready,
        "taken_at": snapshot.taken_at,
        "age": _age(snapshot.taken_at, now),
        "config_source": snapshot.config_source,
        "kernel_version": snapshot.kernel_version,
        "last_reload": None if reload is None else {
            "ok": reload.ok, "at": reload.at, "error": reload.error,
        },
        "table_sync": {
            "in_sync": sync.in_sync,
            "last_error": sync.last_error,
            "consecutive_failures": sync.consecutive_failures,
            "failed_passes": sync.failed_passes,
        },
        "probing": {
            "overloaded": probing.overloaded,
            "window": probing.window,
            "probes": probing.probes,
            "late": probing.late,
            "inconclusive": probing.inconclusive,
            "max_lateness": probing.max_lateness,
            "max_loop_stall": probing.max_loop_stall,
        },
        "role": (snapshot.director or {}).get("role"),
        "sync_daemons": (snapshot.director or {}).get("sync_daemons"),
        "announce": _announce_json(snapshot.announce),
        "services": [_service_json(s, now) for s in snapshot.services
                     if only is None or s.key in only],
        "foreign": [_foreign_json(vs) for vs in snapshot.foreign
                    if only is None or vs.key in only],
        "consistent_hash": [_mh_table_json(table) for table in snapshot.mh_tables
                            if only is None or table.key in only],
        "vips": [_vip_json(vip) for vip in snapshot.vips],
    }


def _announce_json(announce: AnnounceStatus | None) -> dict[str, Any] | None:
    if announce is None:
        return None
    return {
        "table": announce.table,
        "protocol": announce.protocol,
        "hold_down": announce.hold_down,
        "withdraw_on_stop": announce.withdraw_on_stop,
        "last_error": announce.last_error,
        "vips": [{"vip": str(vip.vip), "rule": vip.rule, "announced": vip.announced,
                  "in_kernel": vip.in_kernel, "reason": vip.reason, "since": vip.since}
                 for vip in announce.vips],
    }


def _age(at: float | None, now: float) -> float | None:
    return None if at is None or at <= 0 else round(max(now - at, 0.0), 3)


def _kernel_service_json(service: Service | None) -> dict[str, Any] | None:
    if service is None:
        return None
    persistence = service.persistence
    return {
        "scheduler": service.scheduler,
        "persistence": None if persistence is None else persistence.timeout,
        "stats": stats_json(service.stats),
    }


def _dest_json(dest: Dest | None) -> dict[str, Any] | None:
    if dest is None:
        return None
    return {
        "weight": dest.weight,
        "forward": FORWARD_NAMES[dest.forward],
        "active": dest.stats.active,
        "inactive": dest.stats.inactive,
        "persistent": dest.stats.persistent,
        "stats": stats_json(dest.stats.traffic),
    }


def _server_json(server: ServerStatus, now: float) -> dict[str, Any]:
    last = server.last_probe
    return {
        "server": str(server.key),
        "address": str(server.key.address),
        "port": server.key.port,
        "role": server.role,
        "health": server.health,
        "health_since": server.health_since,
        "health_reason": server.health_reason,
        "disabled": server.disabled,
        "draining": server.role == "draining",
        "drain_deadline": server.drain_deadline,
        "configured_weight": server.configured_weight,
        "kernel_weight": server.kernel_weight,
        "admin": admin_json(server.admin),
        "check_type": server.check_type,
        "last_probe": None if last is None else {
            "ok": last.ok,
            "reason": last.reason,
            "latency": last.latency,
            "at": last.at,
            "age": _age(last.at, now),
        },
        "slow_start": None if server.slow_start_until is None else {
            "until": server.slow_start_until,
            "share": server.slow_start_share,
        },
        "agent": _agent_json(server.agent),
        "kernel": _dest_json(server.kernel),
    }


def _agent_json(agent: AgentStatus | None) -> dict[str, Any] | None:
    if agent is None:
        return None
    return {"answering": agent.answering, "state": agent.state, "line": agent.line,
            "percent": agent.percent, "command": agent.command, "since": agent.since,
            "error": agent.error}


def _service_json(service: ServiceStatus, now: float) -> dict[str, Any]:
    return {
        "name": service.name,
        **key_json(service.key),
        "quorum": service.quorum,
        "healthy_weight": service.healthy_weight,
        "below_quorum": service.below_quorum,
        "sorry_active": service.sorry_active,
        "fail_open_active": service.fail_open_active,
        "kernel": _kernel_service_json(service.kernel),
        "servers": [_server_json(s, now) for s in service.servers],
    }


def _vip_json(vip: VipStatus) -> dict[str, Any]:
    """A VIP this director holds; ``conflict``: another host on the segment answers for it."""
    return {
        "address": str(vip.address),
        "interface": vip.interface,
        "conflict": vip.conflict,
        "other_holders": list(vip.other_macs),
        "conflict_since": vip.since,
        "probes": vip.probes,
        "probe_error": vip.error,
    }


def _mh_table_json(table: MhTableStatus) -> dict[str, Any]:
    """Compare ``fingerprint`` across directors: equal means the same mh table."""
    return {
        "name": table.name,
        **key_json(table.key),
        "fingerprint": table.fingerprint,
        "in_canonical_order": table.in_order,
        "table_size": table.table_size,
    }


def _foreign_json(vs: VirtualService) -> dict[str, Any]:
    return {
        **key_json(vs.key),
        "kernel": _kernel_service_json(vs.service),
        "servers": [{"server": str(d.key), "address": str(d.key.address), "port": d.key.port,
                     "kernel": _dest_json(d)} for d in vs.dests],
    }


# --- the status page ------------------------------------------------------------------------

_STYLE = """
body{font:13px/1.35 system-ui,sans-serif;margin:12px;color:#222;background:#fafafa}
h1{font-size:18px;margin:0 0 6px}
h2{font-size:14px;margin:18px 0 4px}
.summary span{margin-right:14px}
table{border-collapse:collapse;margin-bottom:6px;background:#fff}
th,td{border:1px solid #bbb;padding:2px 6px;text-align:right;white-space:nowrap}
th{background:#e4e4ec}
td.name,th.name,td.text{text-align:left}
caption{text-align:left;font-weight:bold;padding:4px 0}
.badge{display:inline-block;padding:0 6px;border-radius:3px;margin-left:6px;font-weight:bold}
.health{font-weight:bold;text-align:center}
tr.up td.health{background:#5c5}
tr.down td.health{background:#e44;color:#fff}
tr.down{background:#fdd}
tr.unknown td.health{background:#bbb}
tr.unchecked td.health{background:#9cf}
tr.draining td.health,tr.draining{background:#fc6}
tr.disabled{background:#eee;color:#777}
tr.total{background:#eef;font-weight:bold}
.bad{background:#e44;color:#fff}
.warn{background:#fa3}
.muted{background:#ccc}
.ok{background:#5c5}
"""


def render_page(snapshot: Snapshot, now: float, refresh: int = DEFAULT_REFRESH) -> str:
    """The operator's page: one table per service, rendered on the server, no script."""
    parts: list[str] = [
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">",
        f'<meta http-equiv="refresh" content="{refresh}">' if refresh > 0 else "",
        "<title>lvsd status</title>",
        f"<style>{_STYLE}</style></head><body>",
        _summary(snapshot, now),
    ]
    parts.extend(_service_table(service, now) for service in snapshot.services)
    if snapshot.foreign:
        parts.append("<h2>In the kernel, not managed by lvsd</h2>")
        parts.extend(_foreign_table(vs) for vs in snapshot.foreign)
    parts.append("</body></html>\n")
    return "".join(parts)


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _summary(snapshot: Snapshot, now: float) -> str:
    servers = [s for svc in snapshot.services for s in svc.servers if s.role == "real"]
    up = sum(1 for s in servers if s.health == "up")
    down = sum(1 for s in servers if s.health == "down")
    ready = ('<span class="badge ok">ready</span>' if snapshot.ready
             else '<span class="badge bad">not ready</span>')
    reload = snapshot.last_reload
    if reload is None:
        reload_text = "no reload yet"
    elif reload.ok:
        reload_text = f"last reload ok {_e(ago(reload.at, now))}"
    else:
        reload_text = (f'<span class="badge bad">last reload failed {_e(ago(reload.at, now))}'
                       f"</span> {_e(reload.error or '')}")
    sync = snapshot.sync
    sync_text = "" if sync.in_sync or not snapshot.ready else (
        f'<span><span class="badge bad">table not in sync</span> '
        f"{sync.consecutive_failures} failed pass(es) in a row: "
        f"{_e(sync.last_error or '')}</span>"
    )
    probing = snapshot.probing
    probing_text = "" if not probing.overloaded else (
        f'<span><span class="badge bad">overloaded</span> {probing.late} of {probing.probes} '
        f"probes started late (up to {probing.max_lateness:.3f} s) in the last "
        f"{probing.window:.0f} s; {probing.inconclusive} failures not held against their "
        "servers</span>"
    )
    announce_text = "".join(
        f'<span>VIP {_e(vip.vip)} <span class="badge {"ok" if vip.announced else "bad"}">'
        f'{"announced" if vip.announced else "withdrawn"}</span> {_e(vip.reason)}</span>'
        for vip in (snapshot.announce.vips if snapshot.announce else ()))
    return (
        f"<h1>lvsd {_e(lvsd.__version__)} {ready}</h1><div class=\"summary\">"
        f"{sync_text}{probing_text}{announce_text}"
        f"<span>{len(snapshot.services)} services</span>"
        f"<span>{len(servers)} real servers: {up} up, {down} down</span>"
        f"<span>table read {_e(ago(snapshot.taken_at, now))}</span>"
        f"<span>config {_e(snapshot.config_source)}</span>"
        f"<span>{reload_text}</span>"
        f"<span>IPVS {_e(snapshot.kernel_version or '?')}</span></div>"
    )


_HEADER = (
    "<tr><th class=\"name\">Server</th><th>Role</th><th>Health</th><th>Since</th>"
    "<th>Weight cfg</th><th>Weight kernel</th><th>Active</th><th>Inactive</th><th>Persist</th>"
    "<th>Conns</th><th>Conn/s</th><th>In pkt/s</th><th>Out pkt/s</th><th>In B/s</th>"
    "<th>Out B/s</th><th class=\"name\">Last check</th><th>Latency</th><th>Checked</th></tr>"
)


def _service_table(service: ServiceStatus, now: float) -> str:
    badges = []
    if service.kernel is None:
        badges.append('<span class="badge muted">not in kernel</span>')
    if service.below_quorum:
        badges.append('<span class="badge bad">below quorum</span>')
    if service.healthy_weight == 0:
        badges.append('<span class="badge bad">no healthy server</span>')
    if service.sorry_active:
        badges.append('<span class="badge warn">sorry server active</span>')
    if service.fail_open_active:
        badges.append('<span class="badge warn">fail-open</span>')
    scheduler = f" {_e(service.kernel.scheduler)}" if service.kernel else ""
    caption = (
        f"<caption>{_e(service.name)} <code>{_e(service.key)}</code>{scheduler} "
        f"&middot; healthy weight {service.healthy_weight} / quorum {service.quorum}"
        f"{''.join(badges)}</caption>"
    )
    rows = [_server_row(server, now) for server in service.servers]
    total = _total_row(service.kernel, [s.kernel for s in service.servers])
    return (f'<table class="service" data-service="{_e(service.key)}">{caption}{_HEADER}'
            f"{''.join(rows)}{total}</table>")


def _admin_text(admin: Override, now: float) -> str:
    """What an operator set (``lvsd ctl``), e.g. "operator: drained, weight 5 for 9m"."""
    words = [] if admin.state is AdminState.ENABLED else [admin.state.value]
    if admin.weight is not None:
        expiry = "" if admin.weight_until is None else f" {until(admin.weight_until, now)}"
        words.append(f"weight {admin.weight}{expiry}")
    return "operator: " + ", ".join(words)


def _server_row(server: ServerStatus, now: float) -> str:
    state: str = server.health
    if server.role == "draining":
        state = "draining"
    elif server.disabled:
        state = "disabled"
    health_text = "DRAINING" if server.role == "draining" else server.health.upper()
    if server.disabled:
        health_text += " (disabled)"
    if server.admin is not None:
        state = "disabled" if server.admin.state is AdminState.DISABLED else state
        health_text += f" ({_admin_text(server.admin, now)})"
    dest = server.kernel
    traffic = dest.stats.traffic if dest else None
    last = server.last_probe
    if last is None:
        check = ("", "", "")
    else:
        outcome = "ok" if last.ok else "failed"
        check = (f"{outcome}: {last.reason}", duration(last.latency), ago(last.at, now))
    role: str = server.role
    if server.drain_deadline is not None:
        role += f", removed {until(server.drain_deadline, now)}"
    if server.slow_start_until is not None:
        role += (f", slow start {round(100 * (server.slow_start_share or 0.0))}% "
                 f"(full {until(server.slow_start_until, now)})")
    if server.agent is not None:
        role += f", agent: {server.agent.state}"
    cells = [
        f'<td class="name">{_e(server.key)}</td>',
        f'<td class="text">{_e(role)}</td>',
        f'<td class="health">{_e(health_text)}</td>',
        f"<td>{_e(ago(server.health_since, now, suffix=''))}</td>",
        f"<td>{server.configured_weight}</td>",
        f"<td>{'-' if dest is None else dest.weight}</td>",
        _num(dest.stats.active if dest else None),
        _num(dest.stats.inactive if dest else None),
        _num(dest.stats.persistent if dest else None),
        *_traffic_cells(traffic),
        f'<td class="text">{_e(check[0])}</td>',
        f"<td>{_e(check[1])}</td>",
        f"<td>{_e(check[2])}</td>",
    ]
    return (f'<tr class="{_e(state)}" data-server="{_e(server.key)}" '
            f'data-health="{_e(server.health)}">{"".join(cells)}</tr>')


def _total_row(service: Service | None, dests: Iterable[Dest | None]) -> str:
    live = [d for d in dests if d is not None]
    stats = service.stats if service else None
    cells = [
        '<td class="name">total</td><td></td><td></td><td></td><td></td>',
        f"<td>{sum(d.weight for d in live)}</td>",
        _num(sum(d.stats.active for d in live)),
        _num(sum(d.stats.inactive for d in live)),
        _num(sum(d.stats.persistent for d in live)),
        *_traffic_cells(stats),
        "<td></td>" * 3,
    ]
    return f'<tr class="total">{"".join(cells)}</tr>'


def _foreign_table(vs: VirtualService) -> str:
    header = (
        "<tr><th class=\"name\">Server</th><th>Forward</th><th>Weight kernel</th><th>Active</th>"
        "<th>Inactive</th><th>Persist</th><th>Conns</th><th>Conn/s</th><th>In pkt/s</th>"
        "<th>Out pkt/s</th><th>In B/s</th><th>Out B/s</th></tr>"
    )
    rows = [
        f'<tr data-server="{_e(d.key)}"><td class="name">{_e(d.key)}</td>'
        f'<td class="text">{_e(FORWARD_NAMES[d.forward])}</td><td>{d.weight}</td>'
        f"{_num(d.stats.active)}{_num(d.stats.inactive)}{_num(d.stats.persistent)}"
        f"{''.join(_traffic_cells(d.stats.traffic))}</tr>"
        for d in vs.dests
    ]
    caption = (f"<caption><code>{_e(vs.key)}</code> {_e(vs.service.scheduler)}"
               '<span class="badge muted">not managed</span></caption>')
    return (f'<table class="foreign" data-service="{_e(vs.key)}">{caption}{header}'
            f"{''.join(rows)}</table>")


def _traffic_cells(stats: ServiceStats | None) -> list[str]:
    if stats is None:
        return ["<td>-</td>"] * 6
    return [_num(stats.conns), _num(stats.cps), _num(stats.inpps), _num(stats.outpps),
            _num(stats.inbps), _num(stats.outbps)]


def _num(value: int | None) -> str:
    return "<td>-</td>" if value is None else f"<td>{_si(value)}</td>"


def _si(value: int) -> str:
    """1234 -> 1234, 123456 -> 123.5k: numbers an operator reads at a glance."""
    if abs(value) < 100_000:
        return str(value)
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.1f}{unit}"
    return str(value)
