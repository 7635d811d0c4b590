"""Announcement of healthy VIPs: a host route per VIP in a kernel table lvsd owns.

A routing daemon announces what is in the table: BIRD's kernel protocol with ``learn`` (or
FRR's ``ip import-table``) imports lvsd's routes and exports them over BGP, so a router spreads
traffic over every director that announces the VIP (ECMP). "Announced" means exactly: the route
``VIP/32`` (``/128``) is in ``[announce] table`` with lvsd's ``protocol``.

The decision is pure (``decide``), one VIP at a time:

- Below quorum (the VIP's rule, ``all`` or ``any``, over its services' quorum): withdrawn at
  once, whatever else holds.
- At quorum: announced once a full first round of checks has reported (every check of the
  VIP's services has a result) and the quorum has held, without a break, for the services'
  rise (``(rise - 1) * interval`` of their slowest check). After a withdraw it must also hold
  for ``hold_down``: a quorum that flaps is withdrawn once and stays withdrawn until it has
  been steady for that long, so a flap at any rate changes the announcement at most once per
  hold-down.
- A route found at start (lvsd restarted with the routes kept: fail-static) stays until the
  first round has reported, so a restart does not flap the announcement.

``Announcer`` owns the memory of those decisions and makes the table match them: level-
triggered, it lists its own routes on every pass and adds or deletes the difference, which
also repairs a route deleted (or added) behind its back; the resync timer runs a pass when
nothing else does. Changes go to a log line, the listeners (metrics, the event stream) and
``status()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from lvsd import logs
from lvsd.model import Address
from lvsd.reconcile import HealthOf, meets_quorum
from lvsd.routes import Prefix, RouteError, Routes, host_prefix
from lvsd.snapshot import AnnounceStatus, VipAnnouncement
from lvsd.spec import AnnounceSettings, QuorumRule, ServerSpec, ServiceSpec

log = logs.get_logger(__name__)

RETRY_INTERVAL = 1.0  # seconds before a pass that the kernel refused is tried again


# --- the pure decision -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VipHealth:
    """What the health book says of one VIP's services, for ``decide``."""

    vip: Address
    rule: QuorumRule
    quorum: bool  # the rule holds over the services' quorum
    probed: bool  # every check of its services has reported once: a full first round
    settle: float  # seconds the quorum must hold before an announce (the services' rise)


@dataclass(frozen=True, slots=True)
class VipMemory:
    """What ``decide`` remembers of a VIP between calls (monotonic times)."""

    announced: bool = False
    quorum_since: float | None = None  # the quorum has held without a break since
    withdrawn_at: float | None = None  # the last withdraw: a re-announce waits out hold_down
    reason: str = "not decided yet"


@dataclass(frozen=True, slots=True)
class VipDecision:
    memory: VipMemory
    changed: bool  # ``memory.announced`` differs from the one given
    recheck_at: float | None  # when the decision may change with no new health


def decide(memory: VipMemory, health: VipHealth, now: float, hold_down: float) -> VipDecision:
    """The announcement of one VIP at ``now``, from its memory and its services' health."""
    if not health.quorum:
        if memory.announced:
            return _changed(VipMemory(False, None, now, "withdrawn: below quorum"))
        return VipDecision(VipMemory(False, None, memory.withdrawn_at, "below quorum"),
                           False, None)
    since = memory.quorum_since if memory.quorum_since is not None else now
    if memory.announced:
        return VipDecision(VipMemory(True, since, memory.withdrawn_at, memory.reason), False,
                           None)
    if not health.probed:
        return VipDecision(VipMemory(False, since, memory.withdrawn_at,
                                     "waiting for the first round of checks"), False, None)
    hold = health.settle if memory.withdrawn_at is None else max(health.settle, hold_down)
    due = since + hold
    if now >= due:
        return _changed(VipMemory(True, since, memory.withdrawn_at,
                                  f"announced: quorum held for {now - since:.1f} s"))
    waiting = "hold-down" if memory.withdrawn_at is not None and hold_down > health.settle \
        else "rise"
    return VipDecision(VipMemory(False, since, memory.withdrawn_at,
                                 f"quorum held {now - since:.1f} of {hold:g} s ({waiting})"),
                       False, due)


def _changed(memory: VipMemory) -> VipDecision:
    return VipDecision(memory, True, None)


Probed = Callable[[ServiceSpec, ServerSpec], bool]


def vip_health(settings: AnnounceSettings, services: Iterable[ServiceSpec], health: HealthOf,
               probed: Probed) -> list[VipHealth]:
    """Each announced VIP's ``VipHealth`` from the services on that address."""
    by_vip: dict[Address, list[ServiceSpec]] = {}
    for spec in services:
        if spec.key.address is not None:
            by_vip.setdefault(spec.key.address, []).append(spec)
    found = []
    for vip in settings.vips:
        specs = by_vip.get(vip.address, [])
        met = [meets_quorum(spec, health) for spec in specs]
        quorum = bool(specs) and (all(met) if vip.rule == "all" else any(met))
        checked = [(spec, server) for spec in specs for server in spec.servers
                   if server.checks and not server.disabled]
        settle = max(((check.rise - 1) * check.interval
                      for _, server in checked for check in server.checks), default=0.0)
        found.append(VipHealth(vip.address, vip.rule, quorum,
                               all(probed(spec, server) for spec, server in checked), settle))
    return found


def route_changes(wanted: Iterable[Prefix], present: Iterable[Prefix]
                  ) -> tuple[list[Prefix], list[Prefix]]:
    """The routes to add and to delete to turn ``present`` into ``wanted``, in a stable
    order (IPv4 first, then by address)."""
    want, have = set(wanted), set(present)
    order = sorted(want ^ have, key=lambda prefix: (prefix.version, prefix))
    return [p for p in order if p in want], [p for p in order if p in have]


# --- the owner ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AnnouncementChange:
    """A VIP announced or withdrawn: for the log, the metrics and the event stream."""

    vip: Address
    announced: bool
    reason: str
    at: float  # wall time


Listener = Callable[[AnnouncementChange], None]


@dataclass(slots=True)
class _Vip:
    memory: VipMemory = field(default_factory=VipMemory)
    rule: QuorumRule = "all"
    since: float | None = None  # wall
    recheck_at: float | None = None


class Announcer:
    """The routes of ``settings.vips`` in ``settings.table``; ``inputs()`` gives their health
    when a pass asks. ``poke()`` after health changes; ``run()`` makes the passes."""

    def __init__(self, settings: AnnounceSettings, routes: Routes,
                 inputs: Callable[[], Sequence[VipHealth]], *, resync_interval: float,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.routes = routes
        self.inputs = inputs
        self.resync_interval = resync_interval
        self.listeners: list[Listener] = []
        self._clock, self._wall = clock, wall
        self._vips: dict[Address, _Vip] = {}
        self._present: frozenset[Prefix] = frozenset()
        self._retry = False
        self._last_error: str | None = None
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._stopped = False
        for vip in settings.vips:
            self._vips[vip.address] = _Vip(rule=vip.rule)

    # --- reading ---------------------------------------------------------------------------

    @property
    def announced(self) -> frozenset[Address]:
        return frozenset(vip for vip, state in self._vips.items() if state.memory.announced)

    def status(self) -> AnnounceStatus:
        settings = self.settings
        vips = tuple(
            VipAnnouncement(vip.address, vip.rule, state.memory.announced,
                      host_prefix(vip.address) in self._present, state.memory.reason,
                      state.since)
            for vip in settings.vips
            if (state := self._vips.get(vip.address)) is not None
        )
        return AnnounceStatus(settings.table, settings.protocol, settings.hold_down,
                              settings.withdraw_on_stop, vips, self._last_error)

    # --- life cycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Adopt the routes found in the table: a configured VIP's route stays until its
        first round of checks has reported. Routes of VIPs no longer configured go at the
        first pass."""
        try:
            self._present = await self.routes.dump(self.settings.table, self.settings.protocol)
        except RouteError as exc:
            log.error("announce_failed", errors=[str(exc)], retry_in=RETRY_INTERVAL)
        else:
            log.info("announce_started", table=self.settings.table,
                     protocol=self.settings.protocol,
                     found=sorted(str(prefix) for prefix in self._present))
        for vip in self.settings.vips:
            state = self._vips[vip.address]
            if host_prefix(vip.address) in self._present and not state.memory.announced:
                state.memory = VipMemory(True, reason="kept from before the start")
        await self.sync()

    async def serve(self) -> None:
        """``start``, then ``run``: the daemon spawns it, so that its first rtnetlink request
        (pyroute2's import takes seconds under emulation) never delays readiness."""
        await self.start()
        await self.run()

    def poke(self) -> None:
        """Health changed: decide again soon (coalesced)."""
        self._wake.set()

    async def run(self) -> None:
        """Passes on pokes, on the rechecks the decisions asked for, on the resync timer."""
        next_resync = self._clock() + self.resync_interval
        while not self._stopped:
            due = min([next_resync, *(state.recheck_at for state in self._vips.values()
                                      if state.recheck_at is not None)])
            if self._retry:
                due = min(due, self._clock() + RETRY_INTERVAL)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, due - self._clock()))
            self._wake.clear()
            if self._stopped:
                break
            if self._clock() >= next_resync:
                next_resync = self._clock() + self.resync_interval
            try:
                await self.sync()
            except Exception as exc:  # a pass that fails is logged and retried, never the end
                self._retry = True
                self._last_error = f"{type(exc).__name__}: {exc}"
                log.error("announce_failed", errors=[self._last_error], retry_in=RETRY_INTERVAL)

    async def reconfigure(self, settings: AnnounceSettings) -> None:
        """A reload: a VIP kept keeps its memory; a moved table or protocol is emptied of
        lvsd's routes first (each of them is withdrawn, then announced in the new table)."""
        async with self._lock:
            old = self.settings
            if (old.table, old.protocol) != (settings.table, settings.protocol):
                await self._flush(old, "the announce table or protocol changed")
                self._present = frozenset()
            vips: dict[Address, _Vip] = {}
            for vip in settings.vips:
                state = self._vips.get(vip.address) or _Vip()
                if (old.table, old.protocol) != (settings.table, settings.protocol):
                    state.memory = VipMemory(reason="not decided yet")
                state.rule = vip.rule
                vips[vip.address] = state
            for address in self._vips.keys() - vips.keys():
                if self._vips[address].memory.announced:
                    self._emit(address, False, "withdrawn: no longer announced by the config")
            self._vips = vips
            self.settings = settings
        await self.sync()

    async def stop(self, *, withdraw: bool | None = None) -> None:
        """End ``run``; withdraw every route if ``withdraw`` (by default if
        ``withdraw_on_stop``), else leave them in the table (fail-static: traffic keeps
        flowing while lvsd is down)."""
        self._stopped = True
        self._wake.set()
        if withdraw is None:
            withdraw = self.settings.withdraw_on_stop
        async with self._lock:
            if withdraw:
                await self._flush(self.settings, "withdrawn: lvsd stopped")
            elif self.announced:
                log.info("announcement_kept", vips=sorted(map(str, self.announced)),
                         detail="withdraw_on_stop = false: the routes stay while lvsd is down")
        await self.routes.close()

    # --- one pass --------------------------------------------------------------------------

    async def sync(self) -> None:
        """Decide every VIP, then make the table match: add and delete the difference."""
        async with self._lock:
            if self._stopped:
                return
            self._decide(self.inputs())
            settings = self.settings
            wanted = {host_prefix(vip) for vip in self.announced}
            try:
                present = await self.routes.dump(settings.table, settings.protocol)
                adds, deletes = route_changes(wanted, present)
                errors = []
                for prefix in deletes:
                    errors.extend(await self._change(self.routes.delete, prefix, "delete"))
                for prefix in adds:
                    errors.extend(await self._change(self.routes.add, prefix, "add"))
                self._present = await self.routes.dump(settings.table, settings.protocol) \
                    if adds or deletes else present
            except RouteError as exc:
                errors = [str(exc)]
            self._retry = bool(errors)
            self._last_error = errors[0] if errors else None
            if errors:
                log.error("announce_failed", errors=errors, retry_in=RETRY_INTERVAL)

    def _decide(self, healths: Sequence[VipHealth]) -> None:
        now = self._clock()
        by_vip: Mapping[Address, VipHealth] = {health.vip: health for health in healths}
        for address, state in self._vips.items():
            health = by_vip.get(address) or VipHealth(address, state.rule, False, False, 0.0)
            decision = decide(state.memory, health, now, self.settings.hold_down)
            state.memory, state.recheck_at = decision.memory, decision.recheck_at
            if decision.changed:
                self._emit(address, decision.memory.announced, decision.memory.reason)

    async def _change(self, change: Callable[[Prefix, int, int], Awaitable[None]],
                      prefix: Prefix, verb: str) -> list[str]:
        settings = self.settings
        try:
            await change(prefix, settings.table, settings.protocol)
        except RouteError as exc:
            if verb == "delete" and exc.errno == errno.ESRCH:
                return []  # gone already
            log.error("route_change_failed", route=str(prefix), table=settings.table,
                      operation=verb, error=str(exc))
            return [str(exc)]
        log.info("route_change", operation=verb, route=str(prefix), table=settings.table,
                 protocol=settings.protocol)
        return []

    async def _flush(self, settings: AnnounceSettings, reason: str) -> None:
        """Delete every route of lvsd's in ``settings.table``."""
        try:
            present = await self.routes.dump(settings.table, settings.protocol)
        except RouteError as exc:
            log.error("announce_failed", errors=[str(exc)])
            return
        for prefix in sorted(present, key=lambda p: (p.version, p)):
            with contextlib.suppress(RouteError):
                await self.routes.delete(prefix, settings.table, settings.protocol)
                log.info("route_change", operation="delete", route=str(prefix),
                         table=settings.table, protocol=settings.protocol)
        for address, state in self._vips.items():
            if state.memory.announced:
                state.memory = VipMemory(False, None, self._clock(), reason)
                self._emit(address, False, reason)
        self._present = frozenset()

    def _emit(self, vip: Address, announced: bool, reason: str) -> None:
        at = self._wall()
        state = self._vips.get(vip)
        if state is not None:
            state.since = at
        log.info("announcement_change", vip=str(vip), announced=announced, reason=reason)
        change = AnnouncementChange(vip, announced, reason, at)
        for listener in self.listeners:
            listener(change)
