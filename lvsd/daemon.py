"""``lvsd run``: the asyncio wiring of config, probes, health, the planner and the kernel.

Data flow: probe reports → the health book → the services whose servers changed are marked
dirty → a reconcile pass plans them against lvsd's view of the kernel and applies the plan →
the save file and the snapshot follow. A periodic resync (and the retry after a failed pass)
plans every service against a fresh dump, which repairs whatever changed behind lvsd's back.

The state lives in owners, each behind a small surface: the health book
(``lvsd.healthbook``), the agents (``lvsd.agents``), the slow-start ramps
(``lvsd.slowstart``), the probe marks (``lvsd.marks``), the drains (``lvsd.drains``), the
operator overrides (``lvsd.overrides``), what the state file remembers
(``lvsd.statekeeper``), the kernel view (``lvsd.kernelview``), the save file
(``lvsd.savefile``), the last reload (``lvsd.reloader``), with ``[announce]`` the VIP routes
(``lvsd.announcing``) and the snapshot the HTTP API reads (``lvsd.statussource``). Probe
reports come in through ``lvsd.intake``; the control socket steers through
``lvsd.steering``. The daemon holds the life cycle, the loop and one pass. Signal handlers
only set events.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import logging
import signal
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from lvsd import logs
from lvsd.agents import Agents
from lvsd.announcing import Announcement
from lvsd.checks.workers import make_runner
from lvsd.config import load
from lvsd.dirt import Dirty
from lvsd.drains import Drains
from lvsd.errors import ConfigError, IpvsError, IpvsUnavailable, ListenError, LvsdError
from lvsd.events import EventLog, op_fields
from lvsd.healthbook import HealthBook
from lvsd.intake import ProbeIntake
from lvsd.ipvs.backend import IpvsBackend, SyncBackend
from lvsd.kernelconfig import MhTableSize, mh_table_size
from lvsd.kernelview import KernelView
from lvsd.marks import ProbeMarks
from lvsd.metrics import DaemonMetrics
from lvsd.model import DeleteService, Op, ServiceKey, Table
from lvsd.overrides import Overrides
from lvsd.pacing import Pacer, Steps, finish, paced
from lvsd.pair import DirectorPair
from lvsd.probe import Runner, RunnerFactory
from lvsd.reconcile import (
    Plan,
    ServiceDecision,
    below_quorum,
    desired_steps,
    dirty_plan,
    full_plan_steps,
    service_of,
)
from lvsd.reloader import Reloader
from lvsd.reloading import refuses_emptying
from lvsd.routes import KernelRoutes, Routes
from lvsd.savefile import SaveFile
from lvsd.signals import EarlySignals
from lvsd.slowstart import Ramps
from lvsd.spec import Config, ServiceIndex
from lvsd.splitbrain.guard import VipGuard
from lvsd.staging import Stager
from lvsd.statefile import StateFile
from lvsd.statekeeper import StateKeeper
from lvsd.statussource import StatusSource
from lvsd.steering import Steering
from lvsd.systemd import Notifier, start_watchdog

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
        self.keeper = StateKeeper(StateFile(settings.state_file), self.overrides, self.marks)
        self.reloads = Reloader(config_path, metrics=self.metrics, events=self.events,
                                notifier=self.notifier)
        self.save_file = SaveFile(settings.save_file)
        # The role, the sync daemons and the keepalived track file (same netns as the table).
        self.pair = DirectorPair(config, sync_backend if sync_backend is not None else (
            backend if isinstance(backend, SyncBackend) else None), self.metrics)
        self.pair.on_role_change(lambda change: self.events.publish("role", change.to_json()))
        self.announcement = Announcement(
            routes if routes is not None else KernelRoutes(), config=lambda: self.config,
            health=self.health, events=self.events, spawn=self._spawn,
            changed=lambda: self.status.invalidate())  # noqa: PLW0108 (built below)
        self.decisions: dict[ServiceKey, ServiceDecision] = {}
        self.specs = ServiceIndex(lambda: self.config)
        self.dirty = Dirty()
        self.retry_at: float | None = None  # monotonic; the one pending retry of a failed pass
        self.wake = asyncio.Event()
        self.reload_requested = asyncio.Event()
        self.stop_requested = asyncio.Event()
        self.save_requested = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()  # one pass at a time
        self._control_lock = asyncio.Lock()  # one control request, reload or expiry at a time
        self.intake = ProbeIntake(
            self.health, self.agents, self.ramps, self.overrides, metrics=self.metrics,
            events=self.events, dirty=self.dirty, spec=self.specs.get, spawn=self._spawn,
            changed=self._probes_changed, probed=self.announcement.poke)
        self.runner: Runner = (
            runner(self.intake.on_results) if runner is not None
            else make_runner(self.intake.on_results, workers=settings.probe_workers,
                             max_in_flight=settings.max_probes_in_flight)
        )
        self.status = StatusSource(
            lambda: self.config, view=self.view, backend=backend, pass_lock=self._lock,
            health=self.health, agents=self.agents, ramps=self.ramps, marks=self.marks,
            drains=self.drains, overrides=self.overrides, decisions=self.decisions,
            keeper=self.keeper, reloads=self.reloads, vip_guard=vip_guard, pair=self.pair,
            mh_size=self.mh_size, announcement=self.announcement, load=self.runner.load)
        self.steering = Steering(
            self.overrides, keeper=self.keeper, health=self.health, view=self.view,
            events=self.events, replan=self.replan, reload=self.reload, reloads=self.reloads,
            config=lambda: self.config, ready=lambda: self.status.ready, lock=self._control_lock)
        self.stager = Stager(self.marks, self.drains, self.intake, self.keeper,
                             runner=self.runner, steering=self.steering)

    # --- life cycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Adopt the kernel table as it is, start probes, make the first pass. Raises
        ``LvsdError`` (the table untouched) if the config would delete all lvsd owns."""
        self.status.kernel_version = (await self.backend.info()).version
        state = self.keeper.load()
        self.steering.load(state.overrides)
        self.marks.restore(state.marks)
        actual = await self.view.refresh(self.backend)
        present = {vs.key for vs in actual.services}
        if refusal := refuses_emptying(self.config, state.owned & present):
            raise LvsdError(refusal)
        # Drains: the servers the config dropped while lvsd was down.
        staged = await self.stager.stage(self.config, actual, state.owned)
        self.stager.commit(self.config, staged)
        await self.stager.stored(staged)
        await self.pair.start()
        await self.reconcile(full=True, dumped=actual)
        await self.announcement.configure(self.config.announce)
        self.status.ready = True
        self.status.invalidate()
        self._spawn(save_loop(self.save_requested, self.save_file, self.backend))
        self._spawn(load_loop(self.status.sample_probe_load))
        self._spawn(self.steering.expire_on_time())
        self.runner.start()
        self.pair.watch()
        if self.vip_guard is not None:
            self.vip_guard.follow(self.config)
            self.vip_guard.start(self.status.vips_changed)
        freeze_long_lived(self.freeze_gc)
        log.info("started", services=len(self.config.services), checks=len(self.health),
                 owned=len(self.keeper.state.owned), kernel_ipvs=self.status.kernel_version)

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
                # A reload that shortens resync_interval brings the next full pass forward.
                next_resync = min(next_resync,
                                  time.monotonic() + self.config.daemon.resync_interval)
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
        await self.announcement.stop()  # first: a withdraw must not wait for the probes
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
            self.keeper.store(owned=await withdrawn(self.backend, self.keeper.state.owned))
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
                self.status.invalidate()
                return []
            await self._record(done, errors, pacer)
            self.metrics.reconcile(done.ops, errors, time.perf_counter() - started)
            self.pair.after_pass(below_quorum(self.config.services, self.decisions))
            if errors:
                more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
                self._pass_failed(f"{errors[0]}{more}", unknown=False)
            elif full:
                self.view.succeeded()
                self.retry_at = None
            self.status.invalidate()
            return done.ops

    async def _plan(self, full: bool, dumped: Table | None, pacer: Pacer) -> Plan:
        if not full:
            specs, servers = self.dirty.take(self.specs)
            return dirty_plan(specs, self.intake.health_of, self.drains.dests(),
                              self.view, self.keeper.state.owned,
                              standing=self.intake.standings(),
                              hashing=self.keeper.hashing(self.config),
                              servers=servers, previous=self.decisions)
        actual = dumped if dumped is not None else await self.view.refresh(self.backend)
        self.drains.expire(actual, self.config, now=time.monotonic())
        self.dirty.clear()  # first: a health change while this pass yields stays dirty
        want, decisions = await paced(desired_steps(
            self.config, self.intake.health_of, self.drains.dests(), self.marks.marks,
            self.intake.standings()), pacer)
        return await paced(full_plan_steps(want, decisions, actual, self.keeper.state.owned,
                                           self.keeper.hashing(self.config)), pacer)

    async def _record(self, done: Plan, errors: Sequence[IpvsError], pacer: Pacer) -> None:
        if done.wanted is not None:
            self.decisions.clear()  # in place: the status source reads this dict
        self.decisions.update(done.decisions)
        await paced(log_ops(done.ops, errors), pacer)
        self.events.table_changed(done.ops, errors)
        await paced(self.view.applied_steps(done.ops, errors), pacer)
        # A refused op's service is planned again by the next pass, against the view.
        self.dirty.update(key for e in errors if e.op and (key := service_of(e.op)) is not None)
        if done.ops:
            self.save_requested.set()
        await self.keeper.after_pass(done, {e.op for e in errors if e.op is not None},
                                     self.config)

    def _pass_failed(self, error: str, *, unknown: bool) -> None:
        delay = self.view.failed(error, unknown=unknown)
        self.retry_at = time.monotonic() + delay
        log.error("reconcile_failed", error=error, consecutive=self.view.failures,
                  retry_in=delay)

    # --- reload ----------------------------------------------------------------------------

    async def reload(self) -> bool:
        """Build, validate, swap, migrate. Any failure before the swap keeps the old config.
        A reload asked for during one waits for it (``SIGHUP``: the next turn of ``run``)."""
        async with self._control_lock:
            with collections_paused(self.freeze_gc):  # until the new config is frozen
                return await self._reload()

    async def _reload(self) -> bool:
        """Everything for the new config is built to the side in slices, the loop probing and
        answering between them, and put in use in one step: until then /status, the planner
        and the probes see the old config whole, and a failure leaves it running."""
        self.notifier.reloading("reloading configuration")
        try:
            new, held = await self.reloads.prepare(self.config, self.keeper.state.owned)
            pacer = Pacer()
            actual = await self.view.refresh(self.backend, pacer)
            staged = await self.stager.stage(new, actual,
                                             {spec.key for spec in self.config.services}, pacer)
        except Exception as exc:  # any failure is a failed reload, never the daemon's end
            self.reloads.failed(exc)
            self.status.invalidate()
            return False
        log_warnings(new, held)
        # The swap: no await from here to the invalidation.
        self.config = new
        self.reloads.swapped()
        if self.vip_guard is not None:
            self.vip_guard.follow(new)
        self.pair.configure(new)
        self.stager.commit(new, staged)
        self.reloads.succeeded()
        self.status.invalidate()
        await asyncio.sleep(0)  # the swap took a slice
        await self.stager.stored(staged)
        await self.reconcile(full=True, dumped=actual)
        await self.pair.resync()
        await self.announcement.configure(new.announce)
        freeze_long_lived(self.freeze_gc)
        log.info("reloaded", config=str(self.reloads.config_path), services=len(new.services),
                 checks=len(self.health))
        self.notifier.ready(status_line(self.config, self.health))
        return True

    # --- background, snapshot ----------------------------------------------------------------

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def replan(self, services: Iterable[ServiceKey]) -> None:
        """A pass over ``services`` (an operator's change, an override's end)."""
        self.dirty.update(services)
        await self.reconcile(full=False)

    def _probes_changed(self) -> None:
        self.notifier.status(status_line(self.config, self.health))
        self.wake.set()


def status_line(config: Config, health: HealthBook) -> str:
    return f"{len(config.services)} services, {len(health)} checks, {health.not_up} not up"


def log_warnings(config: Config, held: Sequence[str] = ()) -> None:
    """What check-config warns about (legal, but probably not what the operator meant), and
    the ``held`` settings a reload changed that wait for the next start."""
    for warning in config.warnings:
        log.warning("config_warning", config=config.source, warning=str(warning))
    if held:
        log.warning("reload_needs_restart", settings=list(held),
                    detail="these daemon settings take effect at the next start")


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
        api = await start_api(create_app(daemon.status, daemon.metrics), config.daemon.listen_host,
                              config.daemon.listen_port)
    except (ListenError, OSError, ValueError, UnicodeError) as exc:
        log.error("api_listen_failed", listen=listen, error=str(exc),
                  detail="the kernel table was not touched")
        await backend.close()
        return 2
    settings = config.daemon
    try:
        app = create_control_app(daemon.steering, settings.control_gid,
                                 routes=view_routes(daemon.status, daemon.events))
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
            with collections_paused(True):  # until start freezes what it built
                await daemon.start()
        except IpvsUnavailable as exc:
            log.error("start_failed", error=str(exc))
            return 3
        except LvsdError as exc:
            log.error("start_failed", error=str(exc))
            return 2
        notifier.ready(status_line(daemon.config, daemon.health))
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
        with collections_paused(True):  # the config lives as long as the process
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
