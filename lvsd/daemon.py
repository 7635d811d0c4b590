"""``lvsd run``: the asyncio wiring of config, probes, health, the planner and the kernel.

Data flow: probe result → ``health.observe`` → the service is marked dirty → a reconcile pass
plans against lvsd's view of the kernel and applies the plan → the save file and the snapshot
follow. A periodic resync (and any pass after a failed operation) plans against a fresh dump
instead, which repairs whatever changed behind lvsd's back. Signal handlers only set events.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import signal
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lvsd import logs
from lvsd.checks import CheckKey, CheckSpec, check_key
from lvsd.checks.drpath import director_problems
from lvsd.checks.workers import make_runner
from lvsd.config import load
from lvsd.errors import ConfigError, IpvsError, LvsdError
from lvsd.files import write_atomic
from lvsd.health import HealthState, Status, initial, observe
from lvsd.ipvs.backend import IpvsBackend
from lvsd.ipvs.memory import MemoryTable
from lvsd.ipvsadm.save import format_table
from lvsd.metrics import DaemonMetrics
from lvsd.model import (
    AddDest,
    AddService,
    DeleteDest,
    DeleteService,
    Dest,
    DestKey,
    EditDest,
    EditService,
    Op,
    Protocol,
    ServiceKey,
    SetTimeouts,
    Table,
    VirtualService,
)
from lvsd.probe import ProbeReport, Runner, RunnerFactory
from lvsd.reconcile import ServiceDecision, desired, desired_service, dr_probe_marks, plan
from lvsd.snapshot import (
    EMPTY_SNAPSHOT,
    Health,
    LastProbe,
    ReloadStatus,
    ServerStatus,
    ServiceStatus,
    Snapshot,
)
from lvsd.spec import Config, ServerSpec, ServiceSpec
from lvsd.systemd import Notifier, start_watchdog

log = logs.get_logger(__name__)

ServerRef = tuple[ServiceKey, DestKey]
SAVE_DEBOUNCE = 0.5
RETRY_AFTER_ERROR = 1.0
DRAIN_POLL = 1.0


@dataclass(frozen=True, slots=True)
class Drain:
    dest: Dest
    deadline: float  # monotonic


@dataclass(frozen=True, slots=True)
class Watched:
    """One probe, and the servers whose health it decides."""

    key: CheckKey
    servers: tuple[ServerRef, ...]


class Daemon:
    def __init__(
        self,
        config: Config,
        backend: IpvsBackend,
        *,
        config_path: Path | None = None,
        notifier: Notifier | None = None,
        runner: RunnerFactory | None = None,
        freeze_gc: bool = False,
    ) -> None:
        self.config = config
        self.freeze_gc = freeze_gc
        self.config_path = config_path
        self.backend = backend
        self.notifier = notifier or Notifier(None)
        self.metrics = DaemonMetrics()
        self.health: dict[CheckKey, HealthState] = {}
        self._not_up = 0  # checks in self.health whose status is not UP
        self.watched: dict[CheckKey, Watched] = {}
        self.check_of: dict[ServerRef, CheckKey] = {}
        self._made_keys: dict[ServerRef, tuple[CheckSpec, int, CheckKey]] = {}
        self.draining: dict[ServiceKey, dict[DestKey, Drain]] = {}
        self.owned: set[ServiceKey] = set()
        self.decisions: dict[ServiceKey, ServiceDecision] = {}
        self.view = MemoryTable()
        self.view_stale = True
        self.view_at = 0.0
        self.dirty_services: set[ServiceKey] = set()
        self.last_probe: dict[CheckKey, LastProbe] = {}
        self.last_reload: ReloadStatus | None = None
        self.ready = False
        self.kernel_version = ""
        self._snapshot = EMPTY_SNAPSHOT
        self._snapshot_stale = True
        self._last_saved: str | None = None
        self._lock = asyncio.Lock()
        self.wake = asyncio.Event()
        self.reload_requested = asyncio.Event()
        self.stop_requested = asyncio.Event()
        self.save_requested = asyncio.Event()
        self.runner: Runner = (
            runner(self._on_results)
            if runner is not None
            else make_runner(self._on_results, workers=config.daemon.probe_workers,
                             max_in_flight=config.daemon.max_probes_in_flight)
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._specs: dict[ServiceKey, ServiceSpec] = {}
        self._specs_config: Config | None = None

    # --- life cycle ------------------------------------------------------------------------

    async def start(self) -> None:
        """Adopt the kernel table as it is, start probes, and make the first pass."""
        info = await self.backend.info()
        self.kernel_version = info.version
        self.owned = self._load_owned()
        actual = await self._refresh_view()
        self._drain_unconfigured(self.config, actual, self.owned)  # changed while lvsd was down
        await self._watch(self.config, actual)
        await self.reconcile(full=True, dumped=actual)
        self.ready = True
        self._publish()
        self._tasks = [
            asyncio.create_task(self._save_loop(), name="lvsd-save"),
        ]
        self.runner.update(self.watched.keys())
        self.runner.start()
        self._freeze_long_lived()
        log.info(
            "started",
            services=len(self.config.services),
            checks=len(self.watched),
            owned=len(self.owned),
            kernel_ipvs=self.kernel_version,
        )

    async def run(self) -> None:
        """Serve until stopped: reconcile on health changes, reloads and the resync timer."""
        next_resync = time.monotonic() + self.config.daemon.resync_interval
        while not self.stop_requested.is_set():
            timeout = max(0.0, next_resync - time.monotonic())
            if self.draining:
                timeout = min(timeout, DRAIN_POLL)
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
            full = now >= next_resync or self.view_stale or bool(self.draining)
            if full:
                next_resync = now + self.config.daemon.resync_interval
            await self.reconcile(full=full)

    async def stop(self) -> None:
        self.notifier.stopping("stopping")
        await self.runner.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.config.daemon.on_stop == "withdraw":
            ops: list[Op] = [
                DeleteService(key) for key in sorted(self.owned) if key in self.view.entries
            ]
            errors = await self.backend.apply(ops)
            self._log_ops(ops, errors)
            self.owned.clear()
            self._store_owned()
        await self._save(force=True)
        log.info("stopped", withdrawn=self.config.daemon.on_stop == "withdraw")

    def request_reload(self) -> None:
        self.reload_requested.set()
        self.wake.set()

    def request_stop(self) -> None:
        self.stop_requested.set()
        self.wake.set()

    # --- reconcile -------------------------------------------------------------------------

    async def reconcile(self, *, full: bool, dumped: Table | None = None) -> list[Op]:
        """One pass. ``full`` plans every service against a fresh dump (``dumped`` when the
        caller has just made one); otherwise only the services whose health changed are
        planned, against lvsd's view of the kernel."""
        async with self._lock:
            started = time.perf_counter()
            if full or self.view_stale:
                actual = dumped if dumped is not None else await self._refresh_view()
                self._expire_drains(actual)
                # Cleared first: a health change while this pass yields stays dirty for the next.
                self.dirty_services.clear()
                want, self.decisions = desired(self.config, self._health_of, self._drain_dests())
                await asyncio.sleep(0)  # let probes start between the halves of a 10k pass
                ops = plan(want, actual, self.owned)
            else:
                want, actual = None, None
                ops = self._plan_dirty()
            errors: list[IpvsError] = []
            if ops:
                errors = await self.backend.apply(ops)
                self._record(ops, errors)
            if want is not None and actual is not None:
                self._update_owned(
                    {vs.key for vs in want.services},
                    {vs.key for vs in actual.services},
                    ops,
                    bool(errors),
                )
            self.metrics.reconcile(ops, errors, time.perf_counter() - started)
            if errors:
                self._retry_soon()
            self._publish()
            return ops

    def _plan_dirty(self) -> list[Op]:
        ops: list[Op] = []
        for key in list(self.dirty_services):
            spec = self._spec(key)
            if spec is None:
                continue
            drains = [d.dest for d in self.draining.get(key, {}).values()]
            want, self.decisions[key] = desired_service(spec, self._health_of, drains)
            entry = self.view.entries.get(key)
            have = Table(
                ()
                if entry is None
                else (VirtualService(entry.service, tuple(entry.dests.values())),)
            )
            ops.extend(plan(Table((want,)), have, self.owned))
        self.dirty_services.clear()
        return ops

    def _record(self, ops: list[Op], errors: list[IpvsError]) -> None:
        self._log_ops(ops, errors)
        if errors:
            self.view_stale = True
        else:
            for op in ops:
                self.view.execute(op)
        self.save_requested.set()

    def _update_owned(
        self, wanted: set[ServiceKey], present: set[ServiceKey], ops: list[Op], failed: bool
    ) -> None:
        """lvsd owns what it wants and what it created; it stops owning what it deleted and
        what is gone from the kernel. Remembered across restarts in the state file."""
        deleted = set() if failed else {op.key for op in ops if isinstance(op, DeleteService)}
        owned = ((self.owned | wanted) - deleted) & (present | wanted)
        if owned != self.owned:
            self.owned = owned
            self._store_owned()

    def _log_ops(self, ops: Iterable[Op], errors: list[IpvsError]) -> None:
        for op in ops:
            log.info("table_change", **describe_op(op))
        for error in errors:
            log.error(
                "table_change_failed",
                operation=error.operation,
                target=error.target,
                errno=error.errno,
                reason=error.reason,
            )

    def _retry_soon(self) -> None:
        async def later() -> None:
            await asyncio.sleep(RETRY_AFTER_ERROR)
            self.wake.set()

        self._tasks.append(asyncio.create_task(later()))
        self._tasks = [t for t in self._tasks if not t.done()]

    async def _refresh_view(self) -> Table:
        actual = await self.backend.dump()
        self.view = MemoryTable.from_table(actual)
        self.view_stale = False
        self.view_at = time.time()
        return actual

    # --- health ----------------------------------------------------------------------------

    async def _watch(self, config: Config, actual: Table) -> None:
        """(Re)build the probe set; keep the state of probes whose spec did not change.

        Probes run once between building the keys and taking them over (each half takes tens
        of ms at 10,000 servers); results that come in meanwhile are carried over.
        """
        servers_of, check_of = self._check_keys(config)
        await asyncio.sleep(0)
        kernel = actual.by_key()
        live: dict[ServiceKey, dict[DestKey, Dest]] = {}  # one dest map per service, not per server

        def serving(svc: ServiceKey, dest: DestKey) -> bool:
            if svc not in live:
                vs = kernel.get(svc)
                live[svc] = vs.dest_map() if vs is not None else {}
            current = live[svc].get(dest)
            return current is not None and current.weight > 0

        now = time.time()
        health: dict[CheckKey, HealthState] = {}
        for key, refs in servers_of.items():
            if key in self.health:
                health[key] = self.health[key]
            else:
                health[key] = initial(assume_up=any(serving(*ref) for ref in refs), now=now)
        self.health = health
        self._not_up = sum(1 for state in health.values() if state.status is not Status.UP)
        self.check_of = check_of
        await self._warn_about_dr_path(config)
        self.watched = {key: Watched(key, tuple(refs)) for key, refs in servers_of.items()}
        self.last_probe = {k: v for k, v in self.last_probe.items() if k in health}

    def _check_keys(
        self, config: Config
    ) -> tuple[dict[CheckKey, list[ServerRef]], dict[ServerRef, CheckKey]]:
        """The probe of every checked server, and the servers each probe decides.

        A server whose check and DR mark are unchanged keeps its ``CheckKey`` object: building
        10,000 keys again on a reload, and matching them against the old ones by equality,
        held the event loop for about half a second.
        """
        marks = dr_probe_marks(config)
        servers_of: dict[CheckKey, list[ServerRef]] = {}
        check_of: dict[ServerRef, CheckKey] = {}
        made: dict[ServerRef, tuple[CheckSpec, int, CheckKey]] = {}
        same_spec: dict[tuple[int, int], bool] = {}  # servers of a service share spec objects
        for spec in config.services:
            svc = spec.key
            for server in spec.servers:
                check = server.check
                if check is None:
                    continue
                ref = (svc, server.key)
                mark = marks.get(ref, 0) if check.dr_path else 0
                before = self._made_keys.get(ref)
                key = None
                if before is not None and before[1] == mark:
                    pair = (id(before[0]), id(check))
                    if pair not in same_spec:
                        same_spec[pair] = before[0] == check
                    if same_spec[pair]:
                        key = before[2]
                if key is None:
                    target = check.target(
                        server.key.address,
                        server.key.port,
                        vip=svc.address,
                        vport=svc.port,
                        protocol=None if svc.is_fwmark else svc.protocol,
                        dr_mark=mark,
                    )
                    key = check_key(target, check)
                made[ref] = (check, mark, key)
                servers_of.setdefault(key, []).append(ref)
                check_of[ref] = key
        self._made_keys = made
        return servers_of, check_of

    async def _warn_about_dr_path(self, config: Config) -> None:
        """DR-path replies come back from the VIP: say so if this director would drop them."""
        pairs = {
            (server.key.address, spec.key.address)
            for spec in config.services
            for server in spec.servers
            if server.check is not None and server.check.dr_path
        }
        for address, vip in sorted(pairs, key=str):
            for problem in await director_problems(address, vip):
                log.warning("dr_path_director_problem", server=str(address), problem=problem)

    def _health_of(self, spec: ServiceSpec, server: ServerSpec) -> Status:
        key = self.check_of.get((spec.key, server.key))
        return Status.UP if key is None else self.health[key].status

    def _on_results(self, reports: Sequence[ProbeReport]) -> None:
        for report in reports:
            if not report.inconclusive:
                self._on_result(report)

    def _on_result(self, report: ProbeReport) -> None:
        key, result = report.key, report.result
        watched = self.watched.get(key)
        state = self.health.get(key)
        if watched is None or state is None:
            return  # a probe that a reload removed, finishing late
        spec = key.spec
        self.metrics.probe(spec.type, result.ok, result.latency, report.lateness)
        now = time.time()
        self.last_probe[key] = LastProbe(result.ok, result.reason, result.latency, now)
        new = observe(state, result, spec.rise, spec.fall, now=now)
        self.health[key] = new
        if not new.changed:
            return
        self._not_up += (state.status is Status.UP) - (new.status is Status.UP)
        status = new.status.value
        for service_key, dest_key in watched.servers:
            service = self._spec(service_key)
            name = service.name if service else str(service_key)
            self.metrics.transition(spec.type, status)
            log.info(
                "health_change",
                service=name,
                server=str(dest_key),
                status=status,
                previous=state.status.value,
                reason=new.reason,
                latency_ms=round(result.latency * 1000, 1),
                check=spec.type,
            )
            if service is not None and service.on_change:
                self._run_hook(service, dest_key, new.status, result.reason)
            self.dirty_services.add(service_key)
        self.notifier.status(self._status_line())
        self.wake.set()

    def _run_hook(self, spec: ServiceSpec, dest_key: DestKey, status: Status, reason: str) -> None:
        env = {
            **os.environ,
            "LVSD_SERVICE": spec.name,
            "LVSD_SERVICE_KEY": str(spec.key),
            "LVSD_SERVER": str(dest_key),
            "LVSD_SERVER_ADDRESS": str(dest_key.address),
            "LVSD_SERVER_PORT": str(dest_key.port),
            "LVSD_STATUS": status.value,
            "LVSD_REASON": reason,
        }

        async def hook() -> None:
            try:
                proc = await asyncio.create_subprocess_exec(
                    *spec.on_change,
                    env=env,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.PIPE,
                    start_new_session=True,
                )
                _, stderr = await asyncio.wait_for(proc.communicate(), 30)
                if proc.returncode:
                    log.warning(
                        "on_change_failed",
                        service=spec.name,
                        server=str(dest_key),
                        exit_code=proc.returncode,
                        stderr=stderr.decode(errors="replace"),
                    )
            except (OSError, TimeoutError) as exc:
                log.warning(
                    "on_change_failed", service=spec.name, server=str(dest_key), error=str(exc)
                )

        self._tasks.append(asyncio.create_task(hook()))

    # --- reload and drain ------------------------------------------------------------------

    async def reload(self) -> bool:
        self.notifier.reloading("reloading configuration")
        assert self.config_path is not None
        try:
            # Parsing 10k servers takes long enough to delay probes: off the event loop.
            new = await asyncio.to_thread(load, self.config_path)
        except (ConfigError, LvsdError) as exc:
            self.last_reload = ReloadStatus(False, time.time(), str(exc))
            self.metrics.reload(False, time.time())
            log.error("reload_failed", config=str(self.config_path), error=str(exc))
            self.notifier.ready(f"reload failed, old config kept: {exc}")
            self._publish()
            return False
        restart_only = [
            name
            for name in ("listen_host", "listen_port", "max_probes_in_flight", "probe_workers")
            if getattr(new.daemon, name) != getattr(self.config.daemon, name)
        ]
        if restart_only:
            log.warning(
                "reload_needs_restart",
                settings=restart_only,
                detail="these daemon settings take effect at the next start",
            )
        actual = await self._refresh_view()
        self._drain_unconfigured(new, actual, {spec.key for spec in self.config.services})
        # Each step takes tens of ms at 10,000 servers: let probes start between them.
        await asyncio.sleep(0)
        self.config = new
        await self._watch(new, actual)
        self.runner.update(self.watched.keys())
        self.last_reload = ReloadStatus(True, time.time())
        self.metrics.reload(True, time.time())
        await asyncio.sleep(0)
        await self.reconcile(full=True, dumped=actual)
        self._freeze_long_lived()
        log.info(
            "reloaded",
            config=str(self.config_path),
            services=len(new.services),
            checks=len(self.watched),
        )
        self.notifier.ready(self._status_line())
        return True

    def _drain_unconfigured(self, config: Config, actual: Table, managed: set[ServiceKey]) -> None:
        """Servers in the kernel that ``config`` no longer names, in services that were
        ``managed`` before and still are, are drained (weight 0 until idle), not cut."""
        kernel = actual.by_key()
        for spec in config.services:
            vs = kernel.get(spec.key)
            if spec.key not in managed or vs is None:
                continue
            keep = {s.key for s in spec.servers}
            if spec.sorry_server is not None:
                keep.add(spec.sorry_server.key)
            for dest in vs.dests:
                if dest.key not in keep:
                    self._drain(spec.key, dest)

    def _drain(self, service: ServiceKey, dest: Dest) -> None:
        deadline = time.monotonic() + self.config.daemon.drain_timeout
        self.draining.setdefault(service, {})[dest.key] = Drain(dest, deadline)
        log.info(
            "drain_start",
            service=str(service),
            server=str(dest.key),
            active=dest.stats.active,
            inactive=dest.stats.inactive,
        )

    def _drain_dests(self) -> dict[ServiceKey, list[Dest]]:
        return {svc: [d.dest for d in drains.values()] for svc, drains in self.draining.items()}

    def _expire_drains(self, actual: Table) -> None:
        kernel = actual.by_key()
        now = time.monotonic()
        for service in list(self.draining):
            vs = kernel.get(service)
            live = vs.dest_map() if vs else {}
            spec = self._spec(service)
            configured = {s.key for s in spec.servers} if spec else set()
            for key, drain in list(self.draining[service].items()):
                dest = live.get(key)
                reason = None
                if key in configured:
                    reason = "back in config"
                elif dest is None:
                    reason = "gone"
                elif service.protocol is Protocol.UDP:
                    reason = "udp"
                elif dest.stats.active + dest.stats.inactive == 0:
                    reason = "idle"
                elif now >= drain.deadline:
                    reason = "drain_timeout"
                if reason is not None:
                    del self.draining[service][key]
                    log.info("drain_end", service=str(service), server=str(key), reason=reason)
            if not self.draining[service]:
                del self.draining[service]

    # --- persistence -----------------------------------------------------------------------

    def _load_owned(self) -> set[ServiceKey]:
        path = self.config.daemon.state_file
        try:
            data = json.loads(path.read_text())
            return {service_key_from_json(item) for item in data.get("owned", [])}
        except FileNotFoundError:
            return set()
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("state_file_unreadable", path=str(path), error=str(exc))
            return set()

    def _store_owned(self) -> None:
        path = self.config.daemon.state_file
        data = {"owned": [service_key_to_json(k) for k in sorted(self.owned)]}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, json.dumps(data, indent=1) + "\n")
        except OSError as exc:
            log.error("state_file_write_failed", path=str(path), error=str(exc))

    async def _save_loop(self) -> None:
        while True:
            await self.save_requested.wait()
            await asyncio.sleep(SAVE_DEBOUNCE)
            self.save_requested.clear()
            await self._save()

    async def _save(self, *, force: bool = False) -> None:
        """Rewrite the save file from a fresh dump, only when its text changes."""
        try:
            table = await self.backend.dump()
        except LvsdError as exc:
            log.error("save_dump_failed", error=str(exc))
            return
        text = format_table(table)
        if text == self._last_saved and not force:
            return
        path = self.config.daemon.save_file
        try:
            if path.exists() and path.read_text() == text:
                self._last_saved = text
                return
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, text)
            self._last_saved = text
            log.info(
                "saved", path=str(path), services=len(table.services), destinations=table.dest_count
            )
        except OSError as exc:
            log.error("save_failed", path=str(path), error=str(exc))

    # --- snapshot --------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        if self._snapshot_stale:
            self._snapshot = build_snapshot(self)
            self._snapshot_stale = False
        return self._snapshot

    async def fresh_snapshot(self, max_age: float) -> Snapshot:
        if time.time() - self.view_at > max_age and not self._lock.locked():
            async with self._lock:
                await self._refresh_view()
            self._publish()
        return self.snapshot()

    def _publish(self) -> None:
        """Readers build the next snapshot when they ask: a pass never pays for it."""
        self._snapshot_stale = True

    def _freeze_long_lived(self) -> None:
        """Exempt what start-up or a reload built (config, checks, view) from the cyclic
        garbage collector: with 10,000 servers a full collection that walks it all stops the
        event loop for ~0.1-0.5 s, and a reload makes one due. Little of it is ever cyclic
        garbage (tens of objects per reload), which a frozen object never becomes free of."""
        if self.freeze_gc:
            gc.freeze()

    def _spec(self, key: ServiceKey) -> ServiceSpec | None:
        """``self.config.service(key)`` through an index: health events and passes look
        services up, and a linear search made each event O(services)."""
        if self._specs_config is not self.config:
            self._specs = {spec.key: spec for spec in self.config.services}
            self._specs_config = self.config
        return self._specs.get(key)

    def _status_line(self) -> str:
        return (
            f"{len(self.config.services)} services, {len(self.watched)} checks, "
            f"{self._not_up} not up"
        )


def build_snapshot(daemon: Daemon) -> Snapshot:
    kernel = daemon.view.entries
    services: list[ServiceStatus] = []
    config_keys = set()
    for spec in daemon.config.services:
        config_keys.add(spec.key)
        entry = kernel.get(spec.key)
        live = entry.dests if entry else {}
        servers: list[ServerStatus] = []
        for server in spec.servers:
            key = daemon.check_of.get((spec.key, server.key))
            health: Health = "unchecked"
            check_type, last, since = None, None, None
            if key is not None:
                state = daemon.health[key]
                health = state.status.value
                check_type = key.spec.type
                last = daemon.last_probe.get(key)
                since = state.since
            servers.append(
                ServerStatus(
                    server.key,
                    "real",
                    server.dest.weight,
                    live.get(server.key),
                    health,
                    server.disabled,
                    check_type,
                    last,
                    since,
                )
            )
        if spec.sorry_server is not None:
            servers.append(
                ServerStatus(
                    spec.sorry_server.key,
                    "sorry",
                    spec.sorry_server.weight,
                    live.get(spec.sorry_server.key),
                    "unchecked",
                )
            )
        for drain in daemon.draining.get(spec.key, {}).values():
            servers.append(
                ServerStatus(
                    drain.dest.key,
                    "draining",
                    0,
                    live.get(drain.dest.key),
                    "unchecked",
                    drain_deadline=time.time() + drain.deadline - time.monotonic(),
                )
            )
        decision = daemon.decisions.get(spec.key, ServiceDecision(0, False, False, False))
        services.append(
            ServiceStatus(
                spec.key,
                spec.name,
                entry.service if entry else None,
                tuple(servers),
                spec.quorum,
                decision.healthy_weight,
                decision.below_quorum,
                decision.sorry_active,
                decision.fail_open_active,
            )
        )
    marks = {m for m in dr_probe_marks(daemon.config).values()}
    foreign = tuple(
        VirtualService(e.service, tuple(e.dests.values()))
        for k, e in kernel.items()
        if k not in config_keys and not (k.is_fwmark and k.fwmark in marks)
    )
    return Snapshot(
        tuple(services),
        foreign,
        daemon.view_at,
        daemon.ready,
        daemon.config.source,
        daemon.last_reload,
        daemon.kernel_version,
    )


def describe_op(op: Op) -> dict[str, object]:
    match op:
        case AddService(service) | EditService(service):
            return {
                "op": type(op).__name__,
                "service": str(service.key),
                "scheduler": service.scheduler,
            }
        case DeleteService(key):
            return {"op": "DeleteService", "service": str(key)}
        case AddDest(service, dest) | EditDest(service, dest):
            return {
                "op": type(op).__name__,
                "service": str(service),
                "server": str(dest.key),
                "weight": dest.weight,
            }
        case DeleteDest(service, dest_key):
            return {"op": "DeleteDest", "service": str(service), "server": str(dest_key)}
        case SetTimeouts(t):
            return {"op": "SetTimeouts", "tcp": t.tcp, "tcpfin": t.tcpfin, "udp": t.udp}
    return {"op": repr(op)}


def service_key_to_json(key: ServiceKey) -> list[object]:
    return [
        int(key.family),
        int(key.protocol),
        str(key.address) if key.address else None,
        key.port,
        key.fwmark,
    ]


def service_key_from_json(item: list[object]) -> ServiceKey:
    from lvsd.model import Family, parse_address

    family, protocol, address, port, fwmark = item
    assert isinstance(family, int) and isinstance(protocol, int)
    assert isinstance(port, int) and isinstance(fwmark, int)
    return ServiceKey(
        Family(family),
        Protocol(protocol),
        parse_address(address) if isinstance(address, str) else None,
        port,
        fwmark,
    )


# --- process entry point ---------------------------------------------------------------------


async def serve(config_path: Path, config: Config) -> int:
    from lvsd.api import create_app, start_api
    from lvsd.ipvs.netlink import NetlinkIpvs

    notifier = Notifier.from_environment()
    backend = NetlinkIpvs()
    daemon = Daemon(config, backend, config_path=config_path, notifier=notifier, freeze_gc=True)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, daemon.request_reload)
    loop.add_signal_handler(signal.SIGTERM, daemon.request_stop)
    loop.add_signal_handler(signal.SIGINT, daemon.request_stop)
    watchdog = start_watchdog(notifier)
    api = None
    try:
        await daemon.start()
        app = create_app(daemon, daemon.metrics)
        api = await start_api(app, config.daemon.listen_host, config.daemon.listen_port)
        notifier.ready(daemon._status_line())
        await daemon.run()
        await daemon.stop()
    finally:
        if api is not None:
            await api.cleanup()
        if watchdog is not None:
            watchdog.cancel()
        await backend.close()
    return 0


def run_daemon(config_path: Path) -> int:
    try:
        config = load(config_path)
    except ConfigError as exc:
        logs.configure()
        log.error(
            "config_invalid", config=str(config_path), problems=[str(p) for p in exc.problems]
        )
        return 2
    logs.configure(level=config.daemon.log_level)
    try:
        import uvloop
    except ImportError:
        return asyncio.run(serve(config_path, config))
    return uvloop.run(serve(config_path, config))
