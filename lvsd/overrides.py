"""Operator overrides: what ``lvsd ctl`` set on a real server, owned here and nowhere else.

An override is kept per (service, server), the identity health is kept by:

- ``drain``: weight 0, the server stays in the table (established connections finish), its
  probes go on; ``undrain`` ends it;
- ``disable``: out of the table, probes go on; ``enable`` ends it (and a drain too);
- ``weight N`` replaces the configured weight, until ``--clear`` or, with ``--for``, until a
  wall-clock time (so it also expires across a restart).

Overrides are state: the daemon writes them into the state file's ``overrides`` slot before
a request is answered. They outlive reloads and restarts while their server stays in the
config; a config that no longer has that (service, server) drops its override, logged
(``override_dropped``), so a server that comes back later comes back as configured.

Pure: the owner never reads a clock; its callers pass ``now``.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from typing import Any, assert_never

from lvsd.limits import weight_error
from lvsd.model import ServiceKey
from lvsd.spec import ServerRef
from lvsd.statefile import dest_from_json, dest_to_json, service_from_json, service_to_json
from lvsd.weight import NO_ADMIN, Admin, AdminState

FORMAT = 1


class Action(enum.Enum):
    DRAIN = "drain"
    UNDRAIN = "undrain"
    DISABLE = "disable"
    ENABLE = "enable"
    WEIGHT = "weight"
    CLEAR_WEIGHT = "clear-weight"


@dataclass(frozen=True, slots=True)
class Override:
    state: AdminState = AdminState.ENABLED
    weight: int | None = None
    weight_until: float | None = None  # wall-clock seconds; None: until cleared

    @property
    def admin(self) -> Admin:
        return Admin(self.state, self.weight)

    @property
    def empty(self) -> bool:
        return self.state is AdminState.ENABLED and self.weight is None


NO_OVERRIDE = Override()


@dataclass(frozen=True, slots=True)
class Change:
    """One validated request: ``action`` on every server of ``refs``."""

    action: Action
    refs: tuple[ServerRef, ...]
    weight: int | None = None  # Action.WEIGHT
    duration: float | None = None  # Action.WEIGHT: seconds, None for no expiry


def changed(current: Override, change: Change, now: float) -> Override:
    """``current`` after ``change``: a pure function of the two and the time."""
    match change.action:
        case Action.DRAIN:
            return replace(current, state=AdminState.DRAINED)
        case Action.UNDRAIN:
            if current.state is AdminState.DRAINED:
                return replace(current, state=AdminState.ENABLED)
            return current
        case Action.DISABLE:
            return replace(current, state=AdminState.DISABLED)
        case Action.ENABLE:
            return replace(current, state=AdminState.ENABLED)
        case Action.WEIGHT:
            until = None if change.duration is None else now + change.duration
            return replace(current, weight=change.weight, weight_until=until)
        case Action.CLEAR_WEIGHT:
            return replace(current, weight=None, weight_until=None)
        case _:
            assert_never(change.action)


@dataclass(frozen=True, slots=True)
class ServerOutcome:
    """What a request left a server as: its override and its weight in the kernel now
    (None: not in the table)."""

    ref: ServerRef
    override: Override
    changed: bool
    kernel_weight: int | None


class Overrides:
    """The owner: (service, server) → override. Entries that override nothing are not kept."""

    def __init__(self, entries: Mapping[ServerRef, Override] | None = None) -> None:
        self._entries: dict[ServerRef, Override] = {
            ref: entry for ref, entry in (entries or {}).items() if not entry.empty
        }

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, ref: ServerRef) -> Override:
        return self._entries.get(ref, NO_OVERRIDE)

    def admin(self, ref: ServerRef) -> Admin:
        entry = self._entries.get(ref)
        return NO_ADMIN if entry is None else entry.admin

    def items(self) -> list[tuple[ServerRef, Override]]:
        return list(self._entries.items())

    def apply(self, change: Change, now: float) -> set[ServiceKey]:
        """Take ``change``; the services whose servers it changed."""
        touched: set[ServiceKey] = set()
        for ref in change.refs:
            before = self.get(ref)
            after = changed(before, change, now)
            if after != before:
                self.put(ref, after)
                touched.add(ref[0])
        return touched

    def next_expiry(self) -> float | None:
        times = [e.weight_until for e in self._entries.values() if e.weight_until is not None]
        return min(times, default=None)

    def expire(self, now: float) -> list[ServerRef]:
        """End the weight overrides whose time is up; the servers whose override ended."""
        ended = [ref for ref, entry in self._entries.items()
                 if entry.weight_until is not None and entry.weight_until <= now]
        for ref in ended:
            self.put(ref, replace(self._entries[ref], weight=None, weight_until=None))
        return ended

    def keep_only(self, configured: Collection[ServerRef]) -> list[ServerRef]:
        """Drop the overrides of servers not in ``configured``; those dropped."""
        dropped = [ref for ref in self._entries if ref not in configured]
        for ref in dropped:
            del self._entries[ref]
        return dropped

    def put(self, ref: ServerRef, entry: Override) -> None:
        if entry.empty:
            self._entries.pop(ref, None)
        else:
            self._entries[ref] = entry


def admin_json(entry: Override | None) -> dict[str, Any]:
    """A server's ``admin`` block, as /status and ``lvsd ctl`` show it."""
    entry = entry or NO_OVERRIDE
    return {"state": entry.state.value, "weight": entry.weight,
            "weight_until": entry.weight_until}


# --- the state file's ``overrides`` slot ---------------------------------------------------------


def encode(overrides: Overrides) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "servers": [
            {"service": service_to_json(ref[0]), "server": dest_to_json(ref[1]),
             "state": entry.state.value, "weight": entry.weight,
             "weight_until": entry.weight_until}
            for ref, entry in sorted(overrides.items(), key=lambda item: _sort_key(item[0]))
        ],
    }


def decode(data: Mapping[str, Any]) -> Overrides:
    """The overrides in a state file's slot ({} before lvsd had any). Raises ValueError."""
    if not data:
        return Overrides()
    if data.get("format") != FORMAT:
        raise ValueError(f"overrides format {data.get('format')!r}, this lvsd reads {FORMAT}")
    servers = data.get("servers")
    if not isinstance(servers, list):
        raise ValueError("overrides.servers is not a list")
    entries: dict[ServerRef, Override] = {}
    for item in servers:
        if not isinstance(item, dict):
            raise ValueError(f"override {item!r} is not an object")
        ref = (service_from_json(item.get("service")), dest_from_json(item.get("server")))
        entries[ref] = _override_from_json(item)
    return Overrides(entries)


def _override_from_json(item: Mapping[str, Any]) -> Override:
    try:
        state = AdminState(item.get("state"))
    except ValueError:
        raise ValueError(f"override state {item.get('state')!r} is not one of "
                         f"{', '.join(s.value for s in AdminState)}") from None
    weight, until = item.get("weight"), item.get("weight_until")
    if weight is not None and (not _is_int(weight) or weight_error(weight) is not None):
        raise ValueError(f"override weight {weight!r}: {weight_error(weight)}")
    if until is not None and (isinstance(until, bool) or not isinstance(until, int | float)
                              or not math.isfinite(until)):
        raise ValueError(f"override weight_until {until!r} is not a time")
    return Override(state, weight, None if weight is None or until is None else float(until))


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _sort_key(ref: ServerRef) -> tuple[str, str]:
    return str(ref[0]), str(ref[1])

