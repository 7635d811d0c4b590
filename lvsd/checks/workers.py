"""Probing sharded across worker processes, when one core is not enough.

``ShardedRunner`` has the ``lvsd.probe.Runner`` surface. Each worker is a process of its own
(``python -m lvsd.checks.workers FD``) running a ``ProbeRunner`` on its own event loop; the
checks are partitioned by key (``hash(key) % workers``), so a check lives on one worker and
keeps its schedule there. Health, planning and the kernel stay in the main process.

The main process and a worker talk over a socketpair in frames (4-byte length, 1-byte kind):
- to a worker, rarely: the specs (pickled once per spec), checks added (id, spec id, target)
  and removed (ids): what ``update()`` changed, nothing per probe;
- from a worker, once per loop iteration with results: a batch of fixed 35-byte records
  (check id, flags, reason id, latency, scheduled, started, finished), each reason text
  sent once beforehand and then named by its number; and every second, its load.

A worker that dies (crash, OOM kill, a stray signal) is started again after at most
``RESTART_DELAY`` and given every check of its shard: no check is lost, their schedules
start over. A worker whose parent goes away reads end-of-file and exits. ``stop()`` ends
the workers, ``start()`` starts them again.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from collections.abc import Set as AbstractSet
from typing import Any, cast

from lvsd.checks.base import CheckSpec
from lvsd.checks.runner import ProbeRunner, log_overload
from lvsd.checks.target import ProbeTarget
from lvsd.probe import CheckKey, EngineLoad, ProbeReport, ProbeResult, ResultsCallback

log = logging.getLogger(__name__)

RESTART_DELAY = 1.0
LOAD_EVERY = 1.0
MAX_REASONS = 4096  # a worker starts its reason table over beyond this many distinct texts

_FRAME = struct.Struct("<IB")
_RECORD = struct.Struct("<IBHfddd")
_REASON = struct.Struct("<H")
_OK, _INCONCLUSIVE = 1, 2

# frame kinds
_SPECS, _ADD, _REMOVE = b"S"[0], b"A"[0], b"D"[0]  # to a worker
_HELLO, _REASON_TEXT, _RESET_REASONS, _BATCH, _LOAD = (  # from a worker
    b"H"[0], b"N"[0], b"Z"[0], b"B"[0], b"L"[0])


def frame(kind: int, payload: bytes) -> bytes:
    return _FRAME.pack(len(payload) + 1, kind) + payload


class FrameReader:
    """Splits a byte stream into (kind, payload) frames."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        buffer = self._buffer
        buffer += data
        frames = []
        offset = 0
        while len(buffer) - offset >= _FRAME.size:
            length, kind = _FRAME.unpack_from(buffer, offset)
            end = offset + 4 + length
            if end > len(buffer):
                break
            frames.append((kind, bytes(buffer[offset + _FRAME.size:end])))
            offset = end
        del buffer[:offset]
        return frames


AUTO_SHARD_RATE = 2000.0  # probes/s beyond which "auto" moves probing to workers


def resolve_workers(setting: int | str, cpus: int | None = None) -> int:
    """How many workers ``"auto"`` may use: one per usable core, none on one core."""
    if isinstance(setting, int):
        return setting
    count = cpus if cpus is not None else len(os.sched_getaffinity(0))
    return count if count > 1 else 0


def make_runner(on_results: ResultsCallback, *, workers: int | str = "auto",
                max_in_flight: int = 1000) -> ProbeRunner | ShardedRunner | AutoRunner:
    """The probe runner for ``[daemon] probe_workers``: in-process (0), sharded across that
    many workers, or ``"auto"``."""
    if workers == "auto":
        return AutoRunner(on_results, workers=resolve_workers("auto"),
                          max_in_flight=max_in_flight)
    count = resolve_workers(workers)
    if count == 0:
        return ProbeRunner(on_results, max_in_flight=max_in_flight)
    return ShardedRunner(on_results, workers=count, max_in_flight=max_in_flight)


class AutoRunner:
    """``probe_workers = "auto"``: probes run in the daemon's own process while they are
    few (below ``AUTO_SHARD_RATE`` probes/s, a fraction of a core: no worker's memory and
    start-up for a small site), and in ``workers`` processes above it. A change of side
    (an ``update`` crossing the rate) starts every check's schedule over, once."""

    def __init__(self, on_results: ResultsCallback, *, workers: int,
                 max_in_flight: int = 1000) -> None:
        self._on_results = on_results
        self._workers = workers
        self._max_in_flight = max_in_flight
        self._runner: ProbeRunner | ShardedRunner = ProbeRunner(
            on_results, max_in_flight=max_in_flight)
        self._running = False
        self._retiring: set[asyncio.Task[None]] = set()

    @property
    def sharded(self) -> bool:
        return isinstance(self._runner, ShardedRunner)

    def __len__(self) -> int:
        return len(self._runner)

    def __contains__(self, key: object) -> bool:
        return key in self._runner

    def load(self) -> EngineLoad:
        return self._runner.load()

    def update(self, keys: Iterable[CheckKey]) -> None:
        wanted = keys if isinstance(keys, AbstractSet) else set(keys)
        rate = sum(1.0 / key.spec.interval for key in wanted)
        shard = self._workers > 0 and rate > AUTO_SHARD_RATE
        if shard != self.sharded:
            retired = self._runner
            self._runner = (ShardedRunner(self._on_results, workers=self._workers,
                                          max_in_flight=self._max_in_flight) if shard
                            else ProbeRunner(self._on_results, max_in_flight=self._max_in_flight))
            task = asyncio.get_running_loop().create_task(retired.stop())
            self._retiring.add(task)
            task.add_done_callback(self._retiring.discard)
            log.info("probing %.0f checks/s %s", rate,
                     f"in {self._workers} worker processes" if shard else "in this process")
            if self._running:
                self._runner.start()
        self._runner.update(wanted)

    def start(self) -> None:
        self._running = True
        self._runner.start()

    async def stop(self) -> None:
        self._running = False
        await self._runner.stop()
        await asyncio.gather(*self._retiring, return_exceptions=True)


# --- the main process's side -----------------------------------------------------------------

class _Worker(asyncio.Protocol):
    """One worker process and the checks of its shard, as the main process sees them."""

    def __init__(self, index: int, owner: ShardedRunner) -> None:
        self.index = index
        self.owner = owner
        self.keys: dict[int, CheckKey] = {}  # check id -> key, every check of the shard
        self.spec_ids: dict[CheckSpec, int] = {}
        self.reasons: dict[int, str] = {}
        self.process: subprocess.Popen[bytes] | None = None
        self.transport: asyncio.Transport | None = None
        self.outbox: list[bytes] = []
        self.reader = FrameReader()
        self.started_at = -math.inf
        self.connecting: asyncio.Task[Any] | None = None
        self.up = asyncio.Event()  # the process said hello: its imports are done

    # the process

    def spawn(self, max_in_flight: int) -> None:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "lvsd.checks.workers", str(theirs.fileno()),
                 str(max_in_flight)],
                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.started_at = loop.time()
        self.up.clear()
        self.reader = FrameReader()
        self.reasons = {}
        self.spec_ids = {}
        self.outbox = []
        self._send_checks(list(self.keys.items()))
        self.connecting = loop.create_task(
            loop.create_unix_connection(lambda: self, sock=ours))

    def end(self) -> None:
        """Stop the process and forget the connection (the checks stay, for a restart)."""
        if self.connecting is not None:
            self.connecting.cancel()
            self.connecting = None
        if self.transport is not None:
            transport, self.transport = self.transport, None
            transport.abort()
        if self.process is not None:
            process, self.process = self.process, None
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            process.wait()

    # checks

    def add(self, items: list[tuple[int, CheckKey]]) -> None:
        for check_id, key in items:
            self.keys[check_id] = key
        if self.process is not None:
            self._send_checks(items)

    def remove(self, check_ids: list[int]) -> None:
        for check_id in check_ids:
            del self.keys[check_id]
        if self.process is not None and check_ids:
            self._send(frame(_REMOVE, struct.pack(f"<{len(check_ids)}I", *check_ids)))

    def _send_checks(self, items: list[tuple[int, CheckKey]]) -> None:
        if not items:
            return
        new_specs: dict[int, CheckSpec] = {}
        checks: list[tuple[int, int, ProbeTarget]] = []
        for check_id, key in items:
            spec_id = self.spec_ids.get(key.spec)
            if spec_id is None:
                spec_id = self.spec_ids[key.spec] = len(self.spec_ids)
                new_specs[spec_id] = key.spec
            checks.append((check_id, spec_id, key.target))
        if new_specs:
            self._send(frame(_SPECS, pickle.dumps(new_specs)))
        self._send(frame(_ADD, pickle.dumps(checks)))

    def _send(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)
        else:
            self.outbox.append(data)

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        self.connecting = None
        outbox, self.outbox = self.outbox, []
        transport.writelines(outbox)

    def data_received(self, data: bytes) -> None:
        for kind, payload in self.reader.feed(data):
            if kind == _BATCH:
                self.owner.deliver(self._decode(payload))
            elif kind == _REASON_TEXT:
                (number,) = _REASON.unpack_from(payload)
                self.reasons[number] = payload[_REASON.size:].decode()
            elif kind == _RESET_REASONS:
                self.reasons = {}
            elif kind == _LOAD:
                self.owner.add_load(EngineLoad(*pickle.loads(payload)))
            elif kind == _HELLO:
                self.up.set()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:  # not ended by us: the worker died
            self.transport = None
            self.owner.lost(self)

    def _decode(self, payload: bytes) -> list[ProbeReport]:
        keys, reasons = self.keys, self.reasons
        reports = []
        for check_id, flags, reason, latency, scheduled, started, finished in (
                _RECORD.iter_unpack(payload)):
            key = keys.get(check_id)
            if key is not None:  # else removed while its probe ran
                reports.append(ProbeReport(
                    key, ProbeResult(bool(flags & _OK), reasons.get(reason, ""), latency),
                    scheduled, started, finished, bool(flags & _INCONCLUSIVE)))
        return reports


class ShardedRunner:
    """The checks of a ``ProbeRunner``, partitioned across ``workers`` processes."""

    def __init__(self, on_results: ResultsCallback, *, workers: int,
                 max_in_flight: int = 1000) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self._on_results = on_results
        self._max_in_flight = max(1, math.ceil(max_in_flight / workers))
        self._workers = [_Worker(index, self) for index in range(workers)]
        self._ids: dict[CheckKey, tuple[int, _Worker]] = {}
        self._next_id = 0
        self._running = False
        self._load = EngineLoad()
        self._window = EngineLoad()
        self._logged_at = -math.inf
        self._restarts: dict[int, asyncio.TimerHandle] = {}
        self.restarted = 0  # workers started again after they died

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, key: object) -> bool:
        return key in self._ids

    def pids(self) -> list[int]:
        return [w.process.pid for w in self._workers if w.process is not None]

    def load(self) -> EngineLoad:
        load, self._load = self._load, EngineLoad()
        return load

    async def wait_up(self) -> None:
        """Until every started worker runs (a worker takes a moment to import lvsd)."""
        await asyncio.gather(*(worker.up.wait() for worker in self._workers
                               if worker.process is not None))

    def update(self, keys: Iterable[CheckKey]) -> None:
        wanted = keys if isinstance(keys, AbstractSet) else set(keys)
        removed: dict[int, list[int]] = {}
        for key in [key for key in self._ids if key not in wanted]:
            check_id, worker = self._ids.pop(key)
            removed.setdefault(worker.index, []).append(check_id)
        for index, check_ids in removed.items():
            self._workers[index].remove(check_ids)
        added: dict[int, list[tuple[int, CheckKey]]] = {}
        count = len(self._workers)
        for key in wanted:
            if key not in self._ids:
                worker = self._workers[hash(key) % count]
                self._next_id += 1
                self._ids[key] = (self._next_id, worker)
                added.setdefault(worker.index, []).append((self._next_id, key))
        for index, items in added.items():
            self._workers[index].add(items)

    def start(self) -> None:
        if self._running:
            return
        self._running = True
        for worker in self._workers:
            worker.spawn(self._max_in_flight)

    async def stop(self) -> None:
        self._running = False
        for timer in self._restarts.values():
            timer.cancel()
        self._restarts.clear()
        for worker in self._workers:
            worker.end()

    # from the workers

    def deliver(self, reports: Sequence[ProbeReport]) -> None:
        if reports:
            try:
                self._on_results(reports)
            except Exception:
                log.exception("the results callback failed for %d reports", len(reports))

    def add_load(self, load: EngineLoad) -> None:
        self._load += load
        self._window += load
        now = asyncio.get_running_loop().time()
        if now - self._logged_at >= 10.0:
            if self._window.overloaded:
                log_overload(self._window)
            self._window = EngineLoad()
            self._logged_at = now

    def lost(self, worker: _Worker) -> None:
        loop = asyncio.get_running_loop()
        code = worker.process.poll() if worker.process is not None else None
        log.warning("probe worker %d (pid %s) ended (%s); starting it again with its %d checks",
                    worker.index, worker.process.pid if worker.process else "?",
                    "still running" if code is None else f"exit status {code}",
                    len(worker.keys))
        worker.end()
        if not self._running:
            return
        delay = max(0.0, worker.started_at + RESTART_DELAY - loop.time())
        self._restarts[worker.index] = loop.call_later(delay, self._restart, worker)

    def _restart(self, worker: _Worker) -> None:
        self._restarts.pop(worker.index, None)
        if self._running and worker.process is None:
            self.restarted += 1
            worker.spawn(self._max_in_flight)


# --- the worker process ----------------------------------------------------------------------

class _Serving(asyncio.Protocol):
    """The worker's end: checks in, batches of results out."""

    def __init__(self, max_in_flight: int, done: asyncio.Future[None]) -> None:
        self.done = done
        self.reader = FrameReader()
        self.specs: dict[int, CheckSpec] = {}
        self.checks: dict[int, CheckKey] = {}
        self.ids: dict[CheckKey, int] = {}
        self.reasons: dict[str, int] = {}
        self.transport: asyncio.Transport | None = None
        self.runner = ProbeRunner(self.send_results, max_in_flight=max_in_flight,
                                  log_load=False)
        self.load_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(frame(_HELLO, b""))
        self.runner.start()
        self.load_timer = asyncio.get_running_loop().call_later(LOAD_EVERY, self.send_load)

    def data_received(self, data: bytes) -> None:
        changed = False
        for kind, payload in self.reader.feed(data):
            if kind == _SPECS:
                self.specs.update(pickle.loads(payload))
            elif kind == _ADD:
                for check_id, spec_id, target in pickle.loads(payload):
                    key = CheckKey(self.specs[spec_id], target)
                    self.checks[check_id] = key
                    self.ids[key] = check_id
                changed = True
            elif kind == _REMOVE:
                for check_id in struct.unpack(f"<{len(payload) // 4}I", payload):
                    key = self.checks.pop(check_id)
                    del self.ids[key]
                changed = True
        if changed:
            self.runner.update(self.ids.keys())
            # The checks live until removed, and then leave no cycle behind: out of the
            # collector's way, so that its passes stay short (no stall of the probes).
            gc.freeze()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.load_timer is not None:
            self.load_timer.cancel()
        if not self.done.done():
            self.done.set_result(None)

    def send_results(self, reports: Sequence[ProbeReport]) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        records = bytearray()
        ids, reasons, pack = self.ids, self.reasons, _RECORD.pack
        for report in reports:
            check_id = ids.get(report.key)
            if check_id is None:
                continue
            result = report.result
            number = reasons.get(result.reason)
            if number is None:
                if len(reasons) >= MAX_REASONS:
                    if records:
                        transport.write(frame(_BATCH, bytes(records)))
                        records.clear()
                    reasons.clear()
                    transport.write(frame(_RESET_REASONS, b""))
                number = reasons[result.reason] = len(reasons)
                transport.write(frame(_REASON_TEXT, _REASON.pack(number)
                                      + result.reason.encode()))
            records += pack(check_id, (_OK if result.ok else 0)
                            | (_INCONCLUSIVE if report.inconclusive else 0), number,
                            result.latency, report.scheduled, report.started, report.finished)
        if records:
            transport.write(frame(_BATCH, bytes(records)))

    def send_load(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            load = self.runner.load()
            self.transport.write(frame(_LOAD, pickle.dumps(
                (load.probes, load.inconclusive, load.late, load.max_lateness, load.max_lag))))
        self.load_timer = asyncio.get_running_loop().call_later(LOAD_EVERY, self.send_load)


async def serve(fd: int, max_in_flight: int) -> None:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    sock = socket.socket(fileno=fd)
    transport, serving = await loop.create_unix_connection(
        lambda: _Serving(max_in_flight, done), sock=sock)
    try:
        await done
    finally:
        await serving.runner.stop()
        transport.close()


def _ignore(number: int, frame: object) -> None:
    return None


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    fd, max_in_flight = int(args[0]), int(args[1])
    # The daemon ends its workers, or its exit does (end of file on the pipe). A handler,
    # not SIG_IGN: an ignored signal would stay ignored in the programs exec checks run.
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, _ignore)
    logging.basicConfig(level=logging.WARNING, format="lvsd probe worker: %(message)s")
    run: Callable[[Any], None]
    try:
        import uvloop
    except ImportError:
        run = asyncio.run
    else:
        run = uvloop.run
    run(serve(fd, max_in_flight))


if __name__ == "__main__":
    main()
