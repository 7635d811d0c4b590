"""``lvsd run``: the asyncio wiring of config, probes, health, the planner and the kernel.

Data flow: probe reports → the health book → the services whose servers changed are marked
dirty → a reconcile pass plans them against lvsd's view of the kernel and applies the plan →
the save file and the snapshot follow. A periodic resync (and the retry after a failed pass)
plans every service against a fresh dump, which repairs whatever changed behind lvsd's back.

The state lives in owners, each behind a small surface: the health book
(``lvsd.healthbook``), the agents (``lvsd.agents``), the slow-start ramps
(``lvsd.slowstart``), the probe marks (``lvsd.marks``), the drains (``lvsd.drains``), the
operator overrides (``lvsd.overrides``, changed through ``lvsd.control``), the state file
(``lvsd.statefile``), the kernel view (``lvsd.kernelview``), the save file
(``lvsd.savefile``) and, with ``[announce]``, the VIP routes (``lvsd.announce``). The daemon
holds the life cycle, the loop and one pass. Signal handlers only set events.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import gc
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from lvsd import logs
from lvsd.agents import Agents
from lvsd.announce import AnnouncementChange, Announcer, Listener, VipHealth, vip_health
from lvsd.checks.agent import describe
from lvsd.checks.drpath import director_problems
from lvsd.checks.workers import make_runner
from lvsd.config import load
from lvsd.consistent import Hashing, hashing_of, last_weights_after, mh_tables
from lvsd.drains import Drains
from lvsd.errors import ConfigError, IpvsError, IpvsUnavailable, ListenError, LvsdError
from lvsd.events import EventLog, health_fields, op_fields
from lvsd.health import Status
from lvsd.healthbook import HealthBook, Observed, ServerChange, serving_in
from lvsd.hooks import run_hook
from lvsd.ipvs.backend import IpvsBackend, SyncBackend
from lvsd.kernelconfig import MhTableSize, mh_table_size
from lvsd.kernelview import KernelView
from lvsd.marks import ProbeMarks, marks_in_use
from lvsd.metrics import DaemonMetrics
from lvsd.model import DeleteService, Op, ServiceKey, Table
from lvsd.overrides import Change, Overrides, ServerOutcome
from lvsd.overrides import decode as decode_overrides
from lvsd.overrides import encode as encode_overrides
from lvsd.pacing import Pacer, Steps, finish, paced
from lvsd.pair import DirectorPair
from lvsd.probe import EngineLoad, ProbeReport, ProbeResult, Runner, RunnerFactory
from lvsd.reconcile import (
    Plan,
    ServiceDecision,
    desired_steps,
    dirty_plan,
    dr_checked,
    full_plan_steps,
    owned_after,
    service_of,
)
from lvsd.reloading import keep_restart_only, refuses_emptying
from lvsd.routes import KernelRoutes, Routes
from lvsd.savefile import SaveFile
from lvsd.signals import EarlySignals
from lvsd.slowstart import Ramps
from lvsd.snapshot import (
    EMPTY_SNAPSHOT,
    DaemonStatus,
    ProbingStatus,
    ReloadStatus,
    Snapshot,
    build_snapshot,
    shows_the_same,
)
from lvsd.spec import AnnounceSettings, Config, ServerRef, ServerSpec, ServiceSpec
from lvsd.splitbrain.book import VipStatus
from lvsd.splitbrain.guard import VipGuard, configured_vips
from lvsd.statefile import DaemonState, StateFile
from lvsd.systemd import Notifier, start_watchdog
from lvsd.weight import NO_ADMIN, NO_STANDING, Standing

log = logs.get_logger(__name__)

SAVE_DEBOUNCE = 0.5
DRAIN_POLL = 1.0
LOAD_WINDOW = 10.0  # seconds of probing each /status ``probing`` figure covers


class Daemon:
    def __init__(self, config: Config, backend: IpvsBackend, *, config_path: Path | None = None,
                 notifier: Notifier | None = None, runner: RunnerFactory | None = None,
                 freeze_gc: bool = False, mh_size: MhTableSize | None = None,
                 vip_guard: VipGuard | None = None,
                 sync_backend: SyncBackend | None = None,
                 routes: Routes | None = None) -> None:
        self.config = config
        self.vip_guard = vip_guard
        self.mh_size = mh_size or mh_table_size()
        self.config_path = config_path
        self.backend = backend
        self.notifier = notifier or Notifier(None)
        self.metrics = DaemonMetrics()
        self.freeze_gc = freeze_gc
        settings = config.daemon
        self.health = HealthBook()
        self.agents = Agents()
        self.ramps = Ramps()
        self.marks = ProbeMarks(settings.dr_check_mark_base)
        self.drains = Drains()
        self.overrides = Overrides()
        self.view = KernelView()
        self.events = EventLog()
        self.state_file = StateFile(settings.state_file)
        self.save_file = SaveFile(settings.save_file)
        # The role, the sync daemons and the keepalived track file (same netns as the table).
        self.pair = DirectorPair(config, sync_backend if sync_backend is not None else (
            backend if isinstance(backend, SyncBackend) else None), self.metrics)
        self.pair.on_role_change(lambda change: self.events.publish("role", change.to_json()))
        self.routes: Routes = routes if routes is not None else KernelRoutes()
        self.announcer: Announcer | None = None  # with [announce]
        # Told of every VIP announced or withdrawn (the event stream may add itself).
        self.announcement_listeners: list[Listener] = [self._announcement_changed]
        self.state = DaemonState()  # as last stored: owned services, marks, overrides
        self.decisions: dict[ServiceKey, ServiceDecision] = {}
        self.dirty: set[ServiceKey] = set()
        self.retry_at: float | None = None  # monotonic; the one pending retry of a failed pass
        self.last_reload: ReloadStatus | None = None
        self.probing = ProbingStatus()
        self._load_window_start = time.monotonic()
        self.ready = False
        self.kernel_version = ""
        self.wake = asyncio.Event()
        self.reload_requested = asyncio.Event()
        self.stop_requested = asyncio.Event()
        self.save_requested = asyncio.Event()
        self.runner: Runner = (
            runner(self.on_results) if runner is not None
            else make_runner(self.on_results, workers=settings.probe_workers,
                             max_in_flight=settings.max_probes_in_flight)
        )
        self._lock = asyncio.Lock()
        self._control_lock = asyncio.Lock()  # one control request, reload or expiry at a time
        self.overrides_changed = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._snapshot: Snapshot | None = EMPTY_SNAPSHOT  # None: the next reader builds one
        self._built_over: tuple[Table, int] | None = None  # the table and _observed()
        self._specs: tuple[Config | None, dict[ServiceKey, ServiceSpec]] = (None, {})
        self._hashed: tuple[Config | None, Hashing] = (None, Hashing())

    # --- life cycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Adopt the kernel table as it is, start probes, make the first pass. Raises
        ``LvsdError`` (the table untouched) if the config would delete all lvsd owns."""
        self.kernel_version = (await self.backend.info()).version
        self.state = self.state_file.load()
        self.overrides = loaded_overrides(self.state.overrides)
        self.marks = ProbeMarks(self.config.daemon.dr_check_mark_base, self.state.marks)
        actual = await self.view.refresh(self.backend)
        present = {vs.key for vs in actual.services}
        if refusal := refuses_emptying(self.config, self.state.owned & present):
            raise LvsdError(refusal)
        self.drains.start_unconfigured(self.config, actual, self.state.owned,  # changed while down
                                       self.config.daemon.drain_timeout,
                                       now=time.monotonic(), wall=time.time())
        await self._watch(self.config, actual)
        await self.pair.start()
        await self.reconcile(full=True, dumped=actual)
        await self._announce(self.config.announce)
        self.ready = True
        self._snapshot = None
        self._spawn(save_loop(self.save_requested, self.save_file, self.backend))
        self._spawn(load_loop(self.sample_probe_load))
        self._spawn(expiry_loop(self.overrides_changed, self.overrides, self.expire_overrides))
        self.runner.start()
        if self.vip_guard is not None:
            self._guard(self.config)
            self.vip_guard.start(self._vips_changed)
        freeze_long_lived(self.freeze_gc)
        log.info("started", services=len(self.config.services), checks=len(self.health),
                 owned=len(self.state.owned), kernel_ipvs=self.kernel_version)

    async def run(self) -> None:
        """Serve until stopped: reconcile on health changes, reloads, the resync timer and
        the retry after a failed pass (one pending retry at most, backing off)."""
        next_resync = time.monotonic() + self.config.daemon.resync_interval
        while not self.stop_requested.is_set():
            due = min(next_resync, self.retry_at or next_resync)
            timeout = max(0.0, due - time.monotonic())
            if self.drains:
                timeout = min(timeout, DRAIN_POLL)
            if (step := self.ramps.next_step()) is not None:
                timeout = min(timeout, max(0.0, step - time.monotonic()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout)
            self.wake.clear()
            if self.stop_requested.is_set():
                break
            if self.reload_requested.is_set():
                self.reload_requested.clear()
                await self.reload()
                continue
            if self.config.daemon.reconcile_delay:
                await asyncio.sleep(self.config.daemon.reconcile_delay)  # coalesce a burst
            now = time.monotonic()
            retry_due = self.retry_at is not None and now >= self.retry_at
            if self.view.stale and self.retry_at is not None and not retry_due:
                continue  # the kernel is unreadable: the retry's full pass takes the changes
            full = now >= next_resync or self.view.stale or bool(self.drains) or retry_due
            if full:
                next_resync = now + self.config.daemon.resync_interval
            self.dirty.update(self.ramps.due())
            await self.reconcile(full=full)
            if full:
                await self.pair.resync()

    async def stop(self) -> None:
        """Stop probes, withdraw the owned services if configured to, write the save file.
        Never raises: each step that fails is logged and the next one still runs."""
        self.notifier.stopping("stopping")
        if self.announcer is not None:  # first: a withdraw must not wait for the probes
            await self.announcer.stop()
        self.events.close("lvsd is stopping")
        await self.runner.stop()
        if self.vip_guard is not None:
            await self.vip_guard.stop()
        self.pair.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        withdraw = self.config.daemon.on_stop == "withdraw"
        if withdraw:
            self._store(owned=await withdrawn(self.backend, self.state.owned))
        await self.save_file.write(self.backend, force=True)
        log.info("stopped", withdrawn=withdraw)

    def request_reload(self) -> None:
        self.reload_requested.set()
        self.wake.set()

    def request_stop(self) -> None:
        self.stop_requested.set()
        self.wake.set()

    # --- one pass --------------------------------------------------------------------------

    async def reconcile(self, *, full: bool, dumped: Table | None = None) -> list[Op]:
        """One pass: ``full`` plans every service against a fresh dump (or ``dumped``), else
        the dirty ones against the view. A failure is logged, counted and retried once. Long
        work is done in slices (``lvsd.pacing``) so the loop keeps probing and answering."""
        async with self._lock:
            started = time.perf_counter()
            full = full or self.view.stale
            pacer = Pacer()
            try:
                done = await self._plan(full, dumped, pacer)
                errors = await self.backend.apply(done.ops) if done.ops else []
            except Exception as exc:
                self._pass_failed(f"{type(exc).__name__}: {exc}", unknown=True)
                self._snapshot = None
                return []
            await self._record(done, errors, pacer)
            self.metrics.reconcile(done.ops, errors, time.perf_counter() - started)
            self.pair.after_pass(self._below_quorum())
            if errors:
                more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
                self._pass_failed(f"{errors[0]}{more}", unknown=False)
            elif full:
                self.view.succeeded()
                self.retry_at = None
            self._snapshot = None
            return done.ops

    async def _plan(self, full: bool, dumped: Table | None, pacer: Pacer) -> Plan:
        if not full:
            specs = [spec for key in self.dirty if (spec := self._spec(key)) is not None]
            self.dirty.clear()
            return dirty_plan(specs, self._health_of, self.drains.dests(), self.view.service,
                              self.state.owned, standing=self._standing, hashing=self._hashing())
        actual = dumped if dumped is not None else await self.view.refresh(self.backend)
        self.drains.expire(actual, self.config, now=time.monotonic())
        self.dirty.clear()  # first: a health change while this pass yields stays dirty
        want, decisions = await paced(desired_steps(
            self.config, self._health_of, self.drains.dests(), self.marks.marks,
            self._standing), pacer)
        return await paced(full_plan_steps(want, decisions, actual, self.state.owned,
                                           self._hashing()), pacer)

    async def _record(self, done: Plan, errors: Sequence[IpvsError], pacer: Pacer) -> None:
        if done.wanted is not None:
            self.decisions = done.decisions
        else:
            self.decisions.update(done.decisions)
        await paced(log_ops(done.ops, errors), pacer)
        self.events.table_changed(done.ops, errors)
        await paced(self.view.applied_steps(done.ops, errors), pacer)
        # A refused op's service is planned again by the next pass, against the view.
        self.dirty.update(key for e in errors if e.op and (key := service_of(e.op)) is not None)
        if done.ops:
            self.save_requested.set()
        failed = {e.op for e in errors if e.op is not None}
        owned = owned_after(self.state.owned, done, failed)
        hashing = self._hashing()
        last = last_weights_after(self.state.last_weights, done.seen, done.ops, failed,
                                  hashing.weights,
                                  hashing.refs if done.wanted is not None else None)
        if owned != self.state.owned or last != self.state.last_weights:
            self._store(owned=frozenset(owned), last_weights=last)

    def _pass_failed(self, error: str, *, unknown: bool) -> None:
        delay = self.view.failed(error, unknown=unknown)
        self.retry_at = time.monotonic() + delay
        log.error("reconcile_failed", error=error, consecutive=self.view.failures,
                  retry_in=delay)

    def _store(self, *, owned: frozenset[ServiceKey] | None = None,
               last_weights: dict[ServerRef, int] | None = None) -> bool:
        owned = self.state.owned if owned is None else owned
        last = self.state.last_weights if last_weights is None else last_weights
        self.state = DaemonState(owned, dict(self.marks.marks), encode_overrides(self.overrides),
                                 last)
        return self.state_file.store(self.state)

    def _hashing(self) -> Hashing:
        """The consistent-hash services' configured weights (rebuilt with the config) and the
        last weights lvsd remembers."""
        if self._hashed[0] is not self.config:
            self._hashed = (self.config, hashing_of(self.config, {}))
        return Hashing(self._hashed[1].weights, self.state.last_weights)

    # --- health ----------------------------------------------------------------------------

    async def _watch(self, config: Config, actual: Table) -> None:
        """Marks, then probes, for ``config``; probes and marks that did not change keep their
        state. Probes run between the steps (each takes tens of ms at 10,000 servers)."""
        marks = self.marks.assign(dr_checked(config), base=config.daemon.dr_check_mark_base,
                                  taken=marks_in_use(config, actual, self.state.owned))
        await asyncio.sleep(0)
        serving = serving_in(actual)
        await paced(self.health.rebuild_steps(config, marks, serving, now=time.time()))
        self.agents.rebuild(config)
        self.ramps.rebuild(config, serving)
        self.runner.update(self.health.keys() | self.agents.keys() if self.agents
                           else self.health.keys())
        for service_key, dest_key in self.overrides.keep_only(set(configured_refs(config))):
            log.info("override_dropped", service=str(service_key), server=str(dest_key),
                     detail="the server is no longer in the config")
        self._store()
        await warn_about_dr_path(config)

    def _health_of(self, spec: ServiceSpec, server: ServerSpec) -> Status:
        return self.health.status((spec.key, server.key))

    def _standing(self, spec: ServiceSpec, server: ServerSpec) -> Standing:
        """Everything besides health that moves this server's weight, from its owners: the
        operator's override, the agent's report and the slow-start ramp."""
        ref = (spec.key, server.key)
        admin = self.overrides.admin(ref)
        agent = self.agents.report(ref) if self.agents else None
        ramp = self.ramps.share(ref) if self.ramps else 1.0
        if admin is NO_ADMIN and agent is None and ramp >= 1.0:
            return NO_STANDING
        return Standing(admin, agent, ramp)

    def on_results(self, reports: Sequence[ProbeReport]) -> None:
        """The runner's callback: take a batch of reports into the health book."""
        now = time.time()
        changed = first_results = False
        metrics = self.metrics
        for report in reports:
            spec, result = report.key.spec, report.result
            # Inconclusive reports too: the most overloaded probes are the latest.
            metrics.probe(spec.type, result.ok, result.latency, report.lateness,
                          report.inconclusive)
            if (moved := self.agents.observe(report, now=now)) is not None:
                for service_key, dest_key in moved.refs:
                    changed = True
                    log.info("agent_change", service=str(service_key), server=str(dest_key),
                             agent=describe(self.agents.report((service_key, dest_key))),
                             reason=result.reason)
                    if moved.came_back:
                        self.ramps.begin((service_key, dest_key))
                    self.dirty.add(service_key)
                continue
            seen = self.health.observe(report, now=now)
            if seen is None:
                continue
            if seen.previous.last is None:
                first_results = True
            for change in seen.servers:
                changed = True
                service_key, dest_key = change.ref
                service = self._spec(service_key)
                self.metrics.transition(spec.type, change.status.value)
                log_health_change(service.name if service else str(service_key), change, seen)
                self.events.health_changed(str(service_key),
                                           service.name if service else None, change, seen)
                if service is not None and service.on_change:
                    self._spawn(run_hook(service, dest_key, change.status, result.reason))
                if change.status is Status.UP:
                    self.ramps.begin(change.ref)
                self.dirty.add(service_key)
        if (changed or first_results) and self.announcer is not None:
            self.announcer.poke()
        if changed:
            self.notifier.status(self.status_line())
            self.wake.set()

    # --- reload ----------------------------------------------------------------------------

    async def reload(self) -> bool:
        """Build, validate, swap, migrate. Any failure before the swap keeps the old config."""
        async with self._control_lock:
            with collections_paused(self.freeze_gc):  # until the new config is frozen
                return await self._reload()

    async def _reload(self) -> bool:
        self.notifier.reloading("reloading configuration")
        try:
            if self.config_path is None:
                raise LvsdError("no config file to reload")
            # Parsing 10k servers takes long enough to delay probes: off the event loop.
            loaded = await asyncio.to_thread(load, self.config_path)
            new, held = keep_restart_only(self.config, loaded)
            if refusal := refuses_emptying(new, self.state.owned):
                raise LvsdError(refusal)
            actual = await self.view.refresh(self.backend)
        except Exception as exc:  # any failure is a failed reload, never the daemon's end
            return self._reload_failed(exc)
        log_warnings(new, held)
        self.drains.start_unconfigured(new, actual, {spec.key for spec in self.config.services},
                                       new.daemon.drain_timeout,
                                       now=time.monotonic(), wall=time.time())
        await asyncio.sleep(0)  # each step takes tens of ms at 10,000 servers
        self.config = new
        self.events.reloaded(True, str(self.config_path))
        if self.vip_guard is not None:
            self._guard(new)
        self.pair.configure(new)
        await self._watch(new, actual)
        self.last_reload = ReloadStatus(True, time.time())
        self.metrics.reload(True, time.time())
        await asyncio.sleep(0)
        await self.reconcile(full=True, dumped=actual)
        await self.pair.resync()
        await self._announce(new.announce)
        freeze_long_lived(self.freeze_gc)
        log.info("reloaded", config=str(self.config_path), services=len(new.services),
                 checks=len(self.health))
        self.notifier.ready(self.status_line())
        return True

    def _reload_failed(self, exc: Exception) -> bool:
        error = str(exc) if isinstance(exc, LvsdError) else f"{type(exc).__name__}: {exc}"
        problems = [str(p) for p in exc.problems] if isinstance(exc, ConfigError) else [error]
        self.last_reload = ReloadStatus(False, time.time(), error, tuple(problems))
        self.metrics.reload(False, time.time())
        log.error("reload_failed", config=str(self.config_path), problems=problems)
        self.events.reloaded(False, str(self.config_path), problems)
        self.notifier.ready(f"reload failed, old config kept: {error}")
        self._snapshot = None
        return False

    # --- runtime control (lvsd.control) ------------------------------------------------------

    async def change_admin(self, make: Callable[[Config], Change]) -> list[ServerOutcome]:
        """One operator change: stored in the state file before the answer, then planned
        and applied (serialised with reloads and with each other)."""
        async with self._control_lock:
            change = make(self.config)
            before = {ref: self.overrides.get(ref) for ref in change.refs}
            touched = self.overrides.apply(change, now=time.time())
            if touched:
                if not self._store():
                    for ref, entry in before.items():
                        self.overrides.put(ref, entry)
                    self._store()
                    raise LvsdError(f"cannot write the state file {self.state_file.path}; "
                                    f"nothing changed")
                log.info("admin_change", action=change.action.value,
                         servers=[f"{key}/{dest}" for key, dest in change.refs])
                self._publish_admin(change.action.value, change.refs)
                self.overrides_changed.set()
                self.dirty.update(touched)
                await self.reconcile(full=False)
            return [ServerOutcome(ref, self.overrides.get(ref), self.overrides.get(ref) != old,
                                  self._kernel_weight(ref)) for ref, old in before.items()]

    async def expire_overrides(self) -> None:
        async with self._control_lock:
            ended = self.overrides.expire(time.time())
            if not ended:
                return
            self._store()
            log.info("weight_override_expired", servers=[f"{k}/{d}" for k, d in ended])
            self._publish_admin("weight-expired", ended)
            self.dirty.update(service_key for service_key, _ in ended)
            await self.reconcile(full=False)

    async def reload_now(self) -> ReloadStatus:
        await self.reload()
        assert self.last_reload is not None
        return self.last_reload

    async def check_now(self, ref: ServerRef) -> list[tuple[str, ProbeResult]]:
        from lvsd.checks.once import probe_now

        keys = self.health.checks_of(ref)
        results = await asyncio.gather(*(probe_now(key) for key in keys))
        return [(str(key), result) for key, result in zip(keys, results, strict=True)]

    def _publish_admin(self, action: str, refs: Iterable[ServerRef]) -> None:
        for ref in refs:
            entry = self.overrides.get(ref)
            self.events.publish("admin", {
                "action": action, "service": str(ref[0]), "server": str(ref[1]),
                "state": entry.state.value, "weight": entry.weight,
                "weight_until": entry.weight_until})

    def _kernel_weight(self, ref: ServerRef) -> int | None:
        vs = self.view.service(ref[0])
        dest = vs.dest_map().get(ref[1]) if vs is not None else None
        return None if dest is None else dest.weight

    def _below_quorum(self) -> list[str]:
        return [spec.name for spec in self.config.services
                if (decision := self.decisions.get(spec.key)) is not None
                and decision.below_quorum]

    # --- announcement ----------------------------------------------------------------------

    async def _announce(self, settings: AnnounceSettings | None) -> None:
        """Start, reconfigure or retire the announcer for ``settings`` (``[announce]``)."""
        announcer = self.announcer
        if announcer is not None and settings is not None:
            await announcer.reconfigure(settings)
        elif announcer is not None:
            self.announcer = None
            await announcer.stop(withdraw=True)
        elif settings is not None:
            announcer = Announcer(settings, self.routes, self._vip_health,
                                  resync_interval=self.config.daemon.resync_interval)
            announcer.listeners = self.announcement_listeners
            self.announcer = announcer
            self._spawn(announcer.serve())
        self._snapshot = None

    def _vip_health(self) -> list[VipHealth]:
        settings = self.config.announce
        if settings is None:
            return []
        return vip_health(settings, self.config.services, self._health_of,
                          lambda spec, server: self.health.probed((spec.key, server.key)))

    def _announcement_changed(self, change: AnnouncementChange) -> None:
        self.events.publish("announcement", {"vip": str(change.vip),
                                             "announced": change.announced,
                                             "reason": change.reason})
        self._snapshot = None

    def _spec(self, key: ServiceKey) -> ServiceSpec | None:
        """By an index rebuilt with the config: a linear search made an event O(services)."""
        if self._specs[0] is not self.config:
            self._specs = (self.config, {spec.key: spec for spec in self.config.services})
        return self._specs[1].get(key)

    # --- background, snapshot ----------------------------------------------------------------

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def snapshot(self) -> Snapshot:
        """Built when a reader asks, from the owners' views: a pass never pays for it."""
        if self._snapshot is None:
            status = DaemonStatus(self.ready, self.last_reload, self.kernel_version,
                                  self.view.status(), self.probing,
                                  self.announcer.status() if self.announcer else None)
            kernel = self.view.table.to_table()
            self._snapshot = build_snapshot(
                config=self.config, kernel=kernel, health=self.health,
                draining=self.drains.of, decisions=self.decisions, admin=self.overrides.get,
                agents=self.agents if self.agents else None,
                ramps=self.ramps if self.ramps else None,
                probe_services=self.marks.probe_services(), status=status)
            if self.vip_guard is not None:
                self._snapshot = dataclasses.replace(self._snapshot,
                                                     vips=self.vip_guard.statuses)
            if self._hashing().weights:
                self._snapshot = dataclasses.replace(self._snapshot, mh_tables=mh_tables(
                    self.config, kernel.by_key(), self.state.last_weights, self.mh_size.size))
            self._built_over = (kernel, self._observed())
        # The role and the sync daemons change on their own events: always the latest.
        return dataclasses.replace(self._snapshot, director=self.pair.status())

    async def fresh_snapshot(self, max_age: float) -> Snapshot:
        stale = time.time() - self.view.dumped_at > max_age
        if self.ready and stale and not self._lock.locked():
            dumped: Table | None = None
            async with self._lock:
                with contextlib.suppress(Exception):  # a failed dump: the snapshot says its age
                    dumped = await self.view.refresh(self.backend)
            self._snapshot = self._redated(dumped)
        return self.snapshot()

    def _redated(self, dumped: Table | None) -> Snapshot | None:
        """The snapshot as it is, dated by ``dumped``, if that dump found the table it shows
        (counters too) and no probe reported since; else None, to be rebuilt. A poll loop
        over an idle table then costs a dump, not a rebuild (~0.1 s at 10,000 servers)."""
        current, built = self._snapshot, self._built_over
        if (current is None or built is None or dumped is None
                or built[1] != self._observed() or not shows_the_same(built[0], dumped)):
            return None
        sync = self.view.status()
        return dataclasses.replace(current, taken_at=sync.dumped_at, sync=sync)

    def _observed(self) -> int:
        return self.health.observed + self.agents.observed

    def _guard(self, config: Config) -> None:
        assert self.vip_guard is not None
        self.vip_guard.configure(configured_vips(config), config.daemon.split_brain_probe)

    def _vips_changed(self, statuses: tuple[VipStatus, ...], _changes: object) -> None:
        if self._snapshot is not None:  # no rebuild for one field
            self._snapshot = dataclasses.replace(self._snapshot, vips=statuses)

    def sample_probe_load(self) -> ProbingStatus:
        """Close the probing window: how late the runner ran since the last sample, for
        /status, the page and ``lvsd_probe_engine_overloaded``."""
        now = time.monotonic()
        load = self.runner.load()
        probing = probing_status(load, now - self._load_window_start)
        self._load_window_start = now
        if probing != self.probing:
            self.probing = probing
            if self._snapshot is not None:  # no rebuild for one field
                self._snapshot = dataclasses.replace(self._snapshot, probing=probing)
        return probing

    def status_line(self) -> str:
        return (f"{len(self.config.services)} services, {len(self.health)} checks, "
                f"{self.health.not_up} not up")


def log_warnings(config: Config, held: Sequence[str] = ()) -> None:
    """What check-config warns about (legal, but probably not what the operator meant), and
    the ``held`` settings a reload changed that wait for the next start."""
    for warning in config.warnings:
        log.warning("config_warning", config=config.source, warning=str(warning))
    if held:
        log.warning("reload_needs_restart", settings=list(held),
                    detail="these daemon settings take effect at the next start")


def log_health_change(service: str, change: ServerChange, seen: Observed) -> None:
    log.info("health_change", service=service, **health_fields(change, seen))


async def warn_about_dr_path(config: Config) -> None:
    """DR-path replies come back from the VIP: say so if this director would drop them."""
    pairs = {
        (server.key.address, spec.key.address)
        for spec in config.services
        for server in spec.servers
        if any(check.dr_path for check in server.checks)
    }
    for address, vip in sorted(pairs, key=str):
        for problem in await director_problems(address, vip):
            log.warning("dr_path_director_problem", server=str(address), problem=problem)


def freeze_long_lived(enabled: bool) -> None:
    """Exempt what start-up or a reload built (config, checks, view) from the cyclic garbage
    collector: with 10,000 servers a full collection that walks it all stops the event loop
    for ~0.1-0.5 s, and a reload makes one due. Little of it is ever cyclic garbage (tens of
    objects per reload), which a frozen object never becomes free of."""
    if enabled:
        gc.freeze()


@contextlib.contextmanager
def collections_paused(enabled: bool) -> Iterator[None]:
    """No cyclic garbage collection during a reload: parsing the config makes a full
    collection due, which ran in the parse thread holding the GIL, or on the loop right
    after, and at 10,000 servers stopped the event loop for ~0.4 s. A reload that succeeds
    freezes what it built (``freeze_long_lived``) before collections resume; after one that
    fails, the next collection takes its garbage."""
    if not enabled or not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def probing_status(load: EngineLoad, window: float) -> ProbingStatus:
    return ProbingStatus(load.overloaded, round(window, 3), load.probes, load.late,
                         load.inconclusive, round(load.max_lateness, 6), round(load.max_lag, 6))


def loaded_overrides(slot: Mapping[str, Any]) -> Overrides:
    """The overrides in the state file; one it cannot read is logged and not applied."""
    try:
        return decode_overrides(slot)
    except (ValueError, TypeError, KeyError) as exc:
        log.error("overrides_unreadable", error=str(exc), detail="starting without overrides")
        return Overrides()


def configured_refs(config: Config) -> list[ServerRef]:
    return [(spec.key, server.key) for spec in config.services for server in spec.servers]


async def expiry_loop(changed: asyncio.Event, overrides: Overrides,
                      expire: Callable[[], Awaitable[None]]) -> None:
    """Ends weight overrides on time (``weight … --for``); woken when overrides change."""
    while True:
        due = overrides.next_expiry()
        timeout = None if due is None else max(0.0, due - time.time())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(changed.wait(), timeout)
        changed.clear()
        await expire()


async def load_loop(sample: Callable[[], object]) -> None:
    while True:
        await asyncio.sleep(LOAD_WINDOW)
        sample()


async def save_loop(requested: asyncio.Event, save_file: SaveFile, backend: IpvsBackend) -> None:
    while True:
        await requested.wait()
        await asyncio.sleep(SAVE_DEBOUNCE)  # one write for a burst of changes
        requested.clear()
        await save_file.write(backend)


async def withdrawn(backend: IpvsBackend, owned: frozenset[ServiceKey]) -> frozenset[ServiceKey]:
    """Delete the ``owned`` services from the kernel; those still owned after it."""
    try:
        present = (await backend.dump()).by_key()
        deletes = [DeleteService(key) for key in sorted(owned) if key in present]
        errors = await backend.apply(deletes)
    except Exception as exc:
        log.error("withdraw_failed", error=f"{type(exc).__name__}: {exc}")
        return owned
    finish(log_ops(deletes, errors))
    failed = {error.op for error in errors}
    return frozenset(op.key for op in deletes if op in failed)


LOG_EACH_OP = 100  # a larger pass logs a line per service, each op only at debug


def log_ops(ops: Sequence[Op], errors: Sequence[IpvsError]) -> Steps[None]:
    """Log a pass's changes, a step per service or few hundred ops (``lvsd.pacing``): a line
    per op, or for a pass of more than ``LOG_EACH_OP`` ops (a restart over an empty table,
    ``ipvsadm -C``) a line per service with its counts, so 10,000 changes are 100 lines."""
    if len(ops) <= LOG_EACH_OP:
        for op in ops:
            log.info("table_change", op=op.name, **op_fields(op))
    else:
        each = log.is_enabled_for(logging.DEBUG)
        counts: dict[ServiceKey | None, collections.Counter[str]] = {}
        for index, op in enumerate(ops):
            if index % 256 == 255:
                yield None
            counts.setdefault(service_of(op), collections.Counter())[op.name] += 1
            if each:
                log.debug("table_change", op=op.name, **op_fields(op))
        for service, by_name in counts.items():
            yield None
            log.info("table_changes", service=str(service) if service else None,
                     **dict(sorted(by_name.items())))
    for error in errors:
        log.error("table_change_failed", operation=error.operation, target=error.target,
                  errno=error.errno, reason=error.reason)


# --- process entry point ---------------------------------------------------------------------


async def serve(config_path: Path, config: Config, early: EarlySignals | None = None) -> int:
    """Bind the API first (a port in use fails here, the kernel table untouched; /readyz
    answers 503 until the first pass), then adopt the table and serve."""
    from lvsd.api import create_app, start_api
    from lvsd.control import ControlSocketError, create_control_app, start_control
    from lvsd.control_views import view_routes
    from lvsd.ipvs.netlink import NetlinkIpvs

    notifier = Notifier.from_environment()
    backend = NetlinkIpvs()
    daemon = Daemon(config, backend, config_path=config_path, notifier=notifier, freeze_gc=True,
                    vip_guard=VipGuard())
    listen = f"{config.daemon.listen_host}:{config.daemon.listen_port}"
    try:
        api = await start_api(create_app(daemon, daemon.metrics), config.daemon.listen_host,
                              config.daemon.listen_port)
    except (ListenError, OSError, ValueError, UnicodeError) as exc:
        log.error("api_listen_failed", listen=listen, error=str(exc),
                  detail="the kernel table was not touched")
        await backend.close()
        return 2
    settings = config.daemon
    try:
        app = create_control_app(daemon, settings.control_gid,
                                 routes=view_routes(daemon, daemon.events))
        control = await start_control(app, settings.control_socket, settings.control_gid)
    except ControlSocketError as exc:
        log.error("control_socket_failed", error=str(exc),
                  detail="the kernel table was not touched")
        await api.cleanup()
        await backend.close()
        return 2
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, daemon.request_reload)
    loop.add_signal_handler(signal.SIGTERM, daemon.request_stop)
    loop.add_signal_handler(signal.SIGINT, daemon.request_stop)
    if early is not None:
        early.replay(daemon)
    watchdog = start_watchdog(notifier)
    try:
        if daemon.stop_requested.is_set():
            log.info("stopped", detail="asked to stop during start-up; the kernel was not touched")
            return 0
        try:
            await daemon.start()
        except IpvsUnavailable as exc:
            log.error("start_failed", error=str(exc))
            return 3
        except LvsdError as exc:
            log.error("start_failed", error=str(exc))
            return 2
        notifier.ready(daemon.status_line())
        await daemon.run()
        await daemon.stop()
    finally:
        await control.close()
        await api.cleanup()
        if watchdog is not None:
            watchdog.cancel()
        await backend.close()
    return 0


def run_daemon(config_path: Path, early: EarlySignals | None = None) -> int:
    try:
        config = load(config_path)
    except ConfigError as exc:
        logs.configure()
        log.error(
            "config_invalid", config=str(config_path), problems=[str(p) for p in exc.problems]
        )
        return 2
    logs.configure(level=config.daemon.log_level)
    log_warnings(config)
    # Chosen outside the ``except``: tracebacks must not be chained to the missing uvloop.
    run: Callable[[Coroutine[Any, Any, int]], int]
    try:
        import uvloop
    except ImportError:
        run = asyncio.run
    else:
        run = uvloop.run
    return run(serve(config_path, config, early))
