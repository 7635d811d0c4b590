"""The ordered stream of what lvsd changes, for ``lvsd ctl events``: health, table, admin and
reload events as JSON lines.

Each event takes the next sequence number at the moment lvsd makes the change, on the event
loop, so every subscriber sees the changes in the order lvsd made them (keepalived runs its
notify scripts concurrently, and they arrive out of order: keepalived #996, #1055, #2012).

A subscriber holds at most ``buffer`` lines. One that reads too slowly loses the events past
that, and is told so in its stream, at the place they went missing (a ``lost`` line with
their count and sequence numbers); it never slows lvsd down nor grows lvsd's memory beyond
its buffer. An event is encoded once, however many subscribe, and not at all while nobody
does: the sequence number is all an unwatched event costs.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, assert_never

from lvsd.errors import LvsdError
from lvsd.model import (
    AddDest,
    AddService,
    DeleteDest,
    DeleteService,
    EditDest,
    EditService,
    Op,
    SetTimeouts,
)

if TYPE_CHECKING:
    from lvsd.errors import IpvsError
    from lvsd.healthbook import Observed, ServerChange

EventType = Literal["health", "table", "admin", "reload", "role", "announcement"]

SUBSCRIBER_BUFFER = 65_536  # lines: all 10,000 servers of a big table flipping, and their ops
MAX_SUBSCRIBERS = 32
BATCH = 1024  # lines handed out per ``Subscription.take``, one write to the client


class TooManySubscribers(LvsdError):
    pass


def _line(document: Mapping[str, Any]) -> bytes:
    return (json.dumps(document, separators=(",", ":"), default=str) + "\n").encode()


class Subscription:
    """One follower's view of the stream: the events published after it subscribed, each
    exactly once and in order, with a ``lost`` line where its buffer overflowed."""

    def __init__(self, events: EventLog, after: int, buffer: int) -> None:
        self._events = events
        self.after = after  # the last sequence number published before this subscription
        self._buffer = buffer
        self._lines: deque[bytes] = deque()
        self._lost = 0
        self._lost_first = 0
        self._lost_last = 0
        self._ready = asyncio.Event()
        self.closed = False

    def greeting(self) -> bytes:
        """The stream's first line: where it starts."""
        return _line({"type": "subscribed", "after_seq": self.after,
                      "at": round(self._events.clock(), 6)})

    def offer(self, seq: int, line: bytes) -> None:
        if self.closed:
            return
        if len(self._lines) >= self._buffer:
            if not self._lost:
                self._lost_first = seq
            self._lost += 1
            self._lost_last = seq
        else:
            self._mark_loss()
            self._lines.append(line)
        self._ready.set()

    def _mark_loss(self) -> None:
        if self._lost:
            self._lines.append(_line({"type": "lost", "count": self._lost,
                                      "first_seq": self._lost_first,
                                      "last_seq": self._lost_last}))
            self._lost = 0

    def take(self, limit: int = BATCH) -> list[bytes]:
        """The lines waiting, oldest first (at most ``limit``)."""
        if len(self._lines) < limit:
            self._mark_loss()  # the loss came after everything still buffered
        taken = [self._lines.popleft() for _ in range(min(limit, len(self._lines)))]
        if not self._lines:
            self._ready.clear()
        return taken

    async def wait(self) -> None:
        """Until a line is waiting or the stream closed."""
        if self._lines or self._lost or self.closed:
            return
        await self._ready.wait()

    @property
    def finished(self) -> bool:
        """Closed, and everything before the close taken."""
        return self.closed and not self._lines and not self._lost

    def close(self, reason: str | None = None) -> None:
        """Stop following; with a ``reason`` the stream ends with a ``closed`` line."""
        if self.closed:
            return
        if reason is not None:
            self._mark_loss()
            self._lines.append(_line({"type": "closed", "reason": reason}))
        self.closed = True
        self._ready.set()
        self._events.unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventLog:
    """The daemon's one event stream. ``publish`` is all a new kind of event needs."""

    def __init__(self, *, buffer: int = SUBSCRIBER_BUFFER, max_subscribers: int = MAX_SUBSCRIBERS,
                 clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._buffer = buffer
        self._max_subscribers = max_subscribers
        self._seq = 0
        self._subscribers: list[Subscription] = []

    @property
    def last_seq(self) -> int:
        return self._seq

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def publish(self, type: EventType, fields: Mapping[str, Any]) -> int:
        """Record one change lvsd just made; its sequence number."""
        self._seq += 1
        if self._subscribers:
            line = _line({"seq": self._seq, "at": round(self.clock(), 6), "type": type, **fields})
            for subscriber in self._subscribers:
                subscriber.offer(self._seq, line)
        return self._seq

    def subscribe(self) -> Subscription:
        """Follow every event published from now on. Raises ``TooManySubscribers``."""
        if len(self._subscribers) >= self._max_subscribers:
            raise TooManySubscribers(f"{len(self._subscribers)} event streams are open already "
                                     f"(at most {self._max_subscribers})")
        subscription = Subscription(self, self._seq, self._buffer)
        self._subscribers.append(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        if subscription in self._subscribers:
            self._subscribers.remove(subscription)

    def close(self, reason: str) -> None:
        """End every stream (lvsd is stopping): each gets a ``closed`` line."""
        for subscriber in list(self._subscribers):
            subscriber.close(reason)

    # --- the daemon's changes, one method each ----------------------------------------------

    def health_changed(self, service: str, name: str | None, change: ServerChange,
                       seen: Observed) -> None:
        if self._subscribers:
            self.publish("health", {"service": service, "name": name,
                                    **health_fields(change, seen)})
        else:
            self._seq += 1

    def table_changed(self, ops: Sequence[Op], errors: Iterable[IpvsError]) -> None:
        if not self._subscribers:
            self._seq += len(ops)
            return
        failed = {error.op: error for error in errors if error.op is not None}
        for op in ops:
            error = failed.get(op)
            outcome: dict[str, Any] = {"ok": True} if error is None else {
                "ok": False, "errno": error.errno, "error": error.reason}
            self.publish("table", {"op": op.name, **op_fields(op), **outcome})

    def reloaded(self, ok: bool, config: str, problems: Sequence[str] = ()) -> None:
        self.publish("reload", {"ok": ok, "config": config, "problems": list(problems)})


def health_fields(change: ServerChange, seen: Observed) -> dict[str, Any]:
    """What a server's health change says, for its log line and its event."""
    result = seen.state.last
    return {"server": str(change.ref[1]), "status": change.status.value,
            "previous": change.previous.value, "reason": seen.state.reason,
            "latency_ms": round(result.latency * 1000, 1) if result else None,
            "check": seen.key.spec.type}


def op_fields(op: Op) -> dict[str, Any]:
    """What an operator looks for in an op (``service``, ``server`` …), for its log line and
    its event."""
    match op:
        case AddService(service) | EditService(service):
            return {"service": str(service.key), "scheduler": service.scheduler}
        case DeleteService(key):
            return {"service": str(key)}
        case AddDest(key, dest) | EditDest(key, dest):
            return {"service": str(key), "server": str(dest.key), "weight": dest.weight}
        case DeleteDest(key, dest_key):
            return {"service": str(key), "server": str(dest_key)}
        case SetTimeouts(timeouts):
            return {"tcp": timeouts.tcp, "tcpfin": timeouts.tcpfin, "udp": timeouts.udp}
        case _:
            assert_never(op)
