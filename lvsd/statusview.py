"""``lvsd ctl status``: the table as ``ipvsadm -Ln --stats`` prints it, with what lvsd knows of
each real server to the right: health, since when, why, the last probe's latency, the
configured and the kernel weight, and its admin state.

The client renders the daemon's status document (what ``--json`` prints), so every column is a
field of it. The left part of every service and real-server line is ipvsadm's, byte for byte
(``lvsd.ipvsadm.listing``), in ipvsadm's order; a server lvsd keeps out of the kernel (failed
and removed, disabled) has a line with blank counters, which ipvsadm does not print. An admin
state is one entry in ``SERVER_STATES``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lvsd.durations import ago, duration, until
from lvsd.ipvsadm.listing import (
    dest_listing_line,
    dest_listing_name,
    listing_title,
    service_listing_line,
    service_listing_name,
)
from lvsd.ipvsadm.order import ipvsadm_order
from lvsd.model import (
    Dest,
    DestKey,
    DestStats,
    Service,
    ServiceKey,
    Table,
    VirtualService,
    parse_address,
)
from lvsd.tablejson import key_from_json, stats_from_json

Document = Mapping[str, Any]

RESET = "\x1b[0m"
HEALTH_COLOURS = {"up": "32", "down": "1;31", "unknown": "33", "unchecked": "36"}
WARNING_COLOUR = "33"
ALARM_COLOUR = "1;31"


class StatusDocumentError(ValueError):
    """The daemon's answer is not a status document this client understands."""


def wants_colour(isatty: bool, environ: Mapping[str, str]) -> bool:
    """Colour only on a terminal, and never when ``NO_COLOR`` is set to anything (no-color.org)."""
    return isatty and not environ.get("NO_COLOR") and environ.get("TERM") != "dumb"


def _paint(text: str, code: str | None, colour: bool) -> str:
    return f"\x1b[{code}m{text}{RESET}" if colour and code else text


# --- a real server's admin state: one entry per field of the status document ---------------

ServerState = Callable[[Document, float], str | None]


def _role(server: Document, now: float) -> str | None:
    if server.get("role") == "sorry":
        return "sorry server"
    if server.get("role") == "draining":
        deadline = server.get("drain_deadline")
        return "leaving" if deadline is None else f"leaving, removed {until(deadline, now)}"
    return None


def _disabled(server: Document, now: float) -> str | None:
    return "disabled in config" if server.get("disabled") else None


def _admin(server: Document, now: float) -> str | None:
    """What an operator set with ``lvsd ctl`` (drain, disable, weight)."""
    admin = server.get("admin") or {}
    words = [] if admin.get("state", "enabled") == "enabled" else [str(admin["state"])]
    if admin.get("weight") is not None:
        left = admin.get("weight_until")
        words.append(f"weight {admin['weight']}"
                     + ("" if left is None else f" for {duration(max(left - now, 0.0))}"))
    return ", ".join(words) or None


def _slow_start(server: Document, now: float) -> str | None:
    ramp = server.get("slow_start")
    if not ramp:
        return None
    return f"slow start {float(ramp.get('share') or 0.0):.0%}"


def _agent(server: Document, now: float) -> str | None:
    agent = server.get("agent")
    return None if not agent else f"agent {agent.get('state', '?')}"


SERVER_STATES: tuple[ServerState, ...] = (_role, _disabled, _admin, _slow_start, _agent)
"""Each reads one field of a server's document and gives a label for the Admin column, or
None; the labels are joined with commas."""


def server_state(server: Document, now: float) -> str:
    return ", ".join(label for state in SERVER_STATES if (label := state(server, now)))


# --- the document, read back into the model's types ----------------------------------------


@dataclass(frozen=True, slots=True)
class _Server:
    key: DestKey
    document: Document
    kernel: Dest | None


@dataclass(frozen=True, slots=True)
class _Service:
    key: ServiceKey
    document: Document
    kernel: Service | None
    servers: tuple[_Server, ...]
    managed: bool


def _dest(key: DestKey, kernel: Document | None) -> Dest | None:
    if kernel is None:
        return None
    stats = DestStats(int(kernel.get("active", 0)), int(kernel.get("inactive", 0)),
                      int(kernel.get("persistent", 0)), stats_from_json(kernel.get("stats", {})))
    return Dest(key, int(kernel.get("weight", 0)), stats=stats)


def _service(document: Document, managed: bool) -> _Service:
    key = key_from_json(document)
    kernel = document.get("kernel")
    service = None if kernel is None else Service(
        key, str(kernel.get("scheduler", "")), stats=stats_from_json(kernel.get("stats", {})))
    servers = []
    for server in document.get("servers", ()):
        dest_key = DestKey(parse_address(server["address"]), int(server["port"]))
        servers.append(_Server(dest_key, server, _dest(dest_key, server.get("kernel"))))
    return _Service(key, document, service, tuple(servers), managed)


def _read(document: Document) -> list[_Service]:
    try:
        return ([_service(s, True) for s in document.get("services", ())]
                + [_service(s, False) for s in document.get("foreign", ())])
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise StatusDocumentError(f"not a status document this lvsd understands: "
                                  f"{type(exc).__name__}: {exc}") from None


def _in_ipvsadm_order(services: Sequence[_Service]) -> list[_Service]:
    """Services and their servers in the order ipvsadm lists them (lvsd's own servers that
    are not in the kernel take their place as if they were)."""
    table = Table(tuple(
        VirtualService(s.kernel or Service(s.key),
                       tuple(server.kernel or Dest(server.key) for server in s.servers))
        for s in services))
    by_key = {s.key: s for s in services}
    ordered = []
    for vs in ipvsadm_order(table).services:
        service = by_key[vs.key]
        waiting: dict[DestKey, list[_Server]] = {}
        for server in service.servers:
            waiting.setdefault(server.key, []).append(server)
        ordered.append(_Service(service.key, service.document, service.kernel,
                                tuple(waiting[d.key].pop(0) for d in vs.dests), service.managed))
    return ordered


# --- the text -----------------------------------------------------------------------------

_HEADINGS = ("Health", "Since", "Latency", "Weight", "Kernel")
_WIDTHS = (9, 8, 9, 6, 6)
GAP = "  "


def _cells(server: Document, now: float, colour: bool) -> list[str]:
    last = server.get("last_probe")
    health = str(server.get("health", "?"))
    kernel_weight = server.get("kernel_weight")
    values = [
        health,
        ago(server.get("health_since"), now, suffix="") if health != "unchecked" else "-",
        "-" if not last else duration(float(last.get("latency", -1))),
        str(server.get("configured_weight", "-")),
        "-" if kernel_weight is None else str(kernel_weight),
    ]
    painted = _paint(health, HEALTH_COLOURS.get(health), colour)
    return [painted + " " * (_WIDTHS[0] - len(health)),
            *(f"{v:>{w}}" for v, w in zip(values[1:], _WIDTHS[1:], strict=True))]


def _reason(server: Document) -> str:
    reason = server.get("health_reason")
    if reason:
        return str(reason)
    last = server.get("last_probe")
    if last:
        return f"{'ok' if last.get('ok') else 'failed'}: {last.get('reason', '')}"
    return ""


def _service_notes(service: _Service, colour: bool) -> str:
    document = service.document
    notes = [str(document.get("name", "")) if service.managed else "not managed by lvsd"]
    if service.kernel is not None and service.kernel.scheduler:
        notes.append(service.kernel.scheduler)
    if service.managed:
        notes.append(f"healthy weight {document.get('healthy_weight', 0)}, "
                     f"quorum {document.get('quorum', 0)}")
    alarms = [text for flag, text in (("below_quorum", "BELOW QUORUM"),
                                      ("sorry_active", "SORRY SERVER ACTIVE"),
                                      ("fail_open_active", "FAIL-OPEN")) if document.get(flag)]
    if service.kernel is None:
        alarms.append("NOT IN KERNEL")
    return ", ".join([n for n in notes if n] + [_paint(a, ALARM_COLOUR, colour) for a in alarms])


def _summary(document: Document, now: float, colour: bool) -> str:
    parts = [f"lvsd {document.get('version', '?')}",
             "ready" if document.get("ready") else _paint("NOT READY", ALARM_COLOUR, colour),
             f"table read {ago(document.get('taken_at'), now)}",
             f"IPVS {document.get('kernel_version') or '?'}"]
    sync = document.get("table_sync") or {}
    if document.get("ready") and not sync.get("in_sync", True):
        error = sync.get("last_error")
        parts.append(_paint("TABLE NOT IN SYNC" + (f": {error}" if error else ""), ALARM_COLOUR,
                            colour))
    reload = document.get("last_reload")
    if reload and not reload.get("ok"):
        parts.append(_paint(f"last reload failed {ago(reload.get('at'), now)}: "
                            f"{reload.get('error') or ''}", ALARM_COLOUR, colour))
    probing = document.get("probing") or {}
    if probing.get("overloaded"):
        parts.append(_paint(f"probe engine overloaded: {probing.get('late', 0)} of "
                            f"{probing.get('probes', 0)} probes late", WARNING_COLOUR, colour))
    return ", ".join(parts)


def render_status(document: Document, *, now: float, colour: bool = False,
                  exact: bool = False) -> str:
    """The text ``lvsd ctl status`` prints for a status document. Raises
    ``StatusDocumentError`` for a document it cannot read."""
    services = _in_ipvsadm_order(_read(document))
    rows: list[tuple[str, _Service, _Server | None, str]] = []
    for service in services:
        left = (service_listing_line(service.kernel, "stats", exact) if service.kernel
                else service_listing_name(service.key))
        rows.append((left, service, None, ""))
        for server in service.servers:
            left = (dest_listing_line(service.key, server.kernel, "stats", exact)
                    if server.kernel is not None
                    else f"  -> {dest_listing_name(service.key, server.key)}")
            rows.append((left, service, server, server_state(server.document, now)))
    title, second = listing_title("stats").splitlines()
    width = max([len(title), *(len(row[0]) for row in rows)])
    state_width = max([len("Admin"), *(len(row[3]) for row in rows)])
    headings = GAP.join([f"{_HEADINGS[0]:<{_WIDTHS[0]}}",
                         *(f"{h:>{w}}" for h, w in zip(_HEADINGS[1:], _WIDTHS[1:], strict=True)),
                         f"{'Admin':<{state_width}}", "Reason"])
    out = [_summary(document, now, colour), title, f"{second:<{width}}{GAP}{headings}"]
    for left, service, row_server, state in rows:
        if row_server is None:
            out.append(f"{left:<{width}}{GAP}{_service_notes(service, colour)}")
        elif not service.managed:
            out.append(left)
        else:
            cells = [*_cells(row_server.document, now, colour),
                     _paint(state, WARNING_COLOUR, colour) + " " * (state_width - len(state))
                     if state else f"{'-':<{state_width}}",
                     _reason(row_server.document)]
            out.append(f"{left:<{width}}{GAP}{GAP.join(cells)}".rstrip())
    return "\n".join(out) + "\n"
