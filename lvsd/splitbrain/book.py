"""Which VIPs this director holds, and whether another host holds them too (pure).

A VIP is in conflict while evidence of another holder (``packets.Evidence``) came in within
the last ``clear_after`` seconds; it clears when the evidence stops, or when this director no
longer holds the VIP (then there is nothing of ours to conflict with). Times are wall-clock
seconds.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from lvsd.model import Address
from lvsd.splitbrain.packets import Evidence, format_mac


@dataclass(frozen=True, slots=True)
class HeldVip:
    """A configured VIP on one of this director's ARP-capable interfaces."""

    address: Address
    interface: str
    index: int
    mac: bytes


@dataclass(frozen=True, slots=True)
class VipStatus:
    address: Address
    interface: str
    conflict: bool
    other_macs: tuple[str, ...] = ()  # the other holders seen within ``clear_after``
    since: float | None = None  # wall time the conflict began
    probes: int = 0  # probes sent since this director took the VIP
    error: str | None = None  # why the last probe could not be sent


@dataclass(frozen=True, slots=True)
class Change:
    status: VipStatus
    conflict: bool  # True: a conflict began; False: it cleared


@dataclass(slots=True)
class _Entry:
    held: HeldVip
    seen: dict[bytes, float] = field(default_factory=dict)  # other holder -> last seen
    since: float | None = None
    probes: int = 0
    error: str | None = None


class ConflictBook:
    def __init__(self, clear_after: float) -> None:
        self.clear_after = clear_after
        self._entries: dict[Address, _Entry] = {}

    def hold(self, held: Iterable[HeldVip]) -> None:
        """The VIPs held now: a VIP that moved to another interface starts afresh."""
        entries: dict[Address, _Entry] = {}
        for vip in held:
            entry = self._entries.get(vip.address)
            entries[vip.address] = entry if entry is not None and entry.held == vip \
                else _Entry(vip)
        self._entries = entries

    @property
    def held(self) -> tuple[HeldVip, ...]:
        return tuple(entry.held for entry in self._entries.values())

    def probed(self, address: Address, error: str | None = None) -> None:
        entry = self._entries.get(address)
        if entry is not None:
            entry.error = error
            if error is None:
                entry.probes += 1

    def saw(self, evidence: Evidence, now: float) -> None:
        entry = self._entries.get(evidence.address)
        if entry is None or evidence.mac == entry.held.mac:
            return
        if not self._in_conflict(entry, now):
            entry.since = now
        entry.seen[evidence.mac] = now

    def _in_conflict(self, entry: _Entry, now: float) -> bool:
        entry.seen = {mac: at for mac, at in entry.seen.items() if now - at < self.clear_after}
        if not entry.seen:
            entry.since = None
        return bool(entry.seen)

    def statuses(self, now: float) -> tuple[VipStatus, ...]:
        out: list[VipStatus] = []
        for address, entry in self._entries.items():
            conflict = self._in_conflict(entry, now)
            out.append(VipStatus(address, entry.held.interface, conflict,
                                 tuple(sorted(format_mac(mac) for mac in entry.seen)),
                                 entry.since, entry.probes, entry.error))
        return tuple(sorted(out, key=lambda status: (status.address.version,
                                                     int(status.address))))


def changes(before: Sequence[VipStatus], after: Sequence[VipStatus]) -> list[Change]:
    """Conflicts that began or cleared between two readings (a VIP no longer held clears)."""
    was = {status.address: status for status in before if status.conflict}
    now = {status.address: status for status in after}
    found = [Change(status, True) for status in after
             if status.conflict and status.address not in was]
    for address, old in was.items():
        new = now.get(address)
        if new is None or not new.conflict:
            found.append(Change(new or old, False))
    return found
