"""``lvsd announce exabgp``: an ExaBGP process that follows lvsd's announcements.

ExaBGP spawns it (``process lvsd { run lvsd announce exabgp; encoder text; }``) and reads API
lines from its stdout: ``announce route 198.51.100.10/32 next-hop self`` while lvsd announces
the VIP, ``withdraw route …`` when lvsd withdraws it. It learns lvsd's decisions from the
kernel table lvsd owns, over rtnetlink: the routes of lvsd's protocol in ``[announce] table``.
So it needs no API of lvsd's, keeps working across lvsd restarts and reloads, and says exactly
what the kernel table says: it lists the table once it listens, then follows each change.

It ends when ExaBGP closes its stdin (ExaBGP went away), or on SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import stat
import sys
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field

from lvsd.routes import Prefix, RouteEvent, watch_routes


def api_line(prefix: Prefix, announced: bool, next_hop: str = "self") -> str:
    verb = "announce" if announced else "withdraw"
    return f"{verb} route {prefix} next-hop {next_hop}"


@dataclass(slots=True)
class Follower:
    """The routes ExaBGP has been told of; ``lines(event)`` are the API lines of one change
    (none when ExaBGP already knows it: a dump and an event can tell the same thing)."""

    next_hop: str = "self"
    told: set[Prefix] = field(default_factory=set)

    def lines(self, event: RouteEvent) -> list[str]:
        if event.present == (event.prefix in self.told):
            return []
        if event.present:
            self.told.add(event.prefix)
        else:
            self.told.discard(event.prefix)
        return [api_line(event.prefix, event.present, self.next_hop)]


async def follow(events: AsyncIterator[RouteEvent], write: Callable[[str], None],
                 next_hop: str = "self") -> None:
    follower = Follower(next_hop)
    async for event in events:
        for line in follower.lines(event):
            write(line)


def lines_for(events: Iterable[RouteEvent], next_hop: str = "self") -> list[str]:
    follower = Follower(next_hop)
    return [line for event in events for line in follower.lines(event)]


def _write(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def _stdin_closed() -> None:
    """Wait until ExaBGP closes our stdin (it reads our stdout; it writes acks to stdin, which
    are read and dropped so that the pipe never fills). Forever when stdin is no pipe."""
    if not stat.S_ISFIFO(os.fstat(sys.stdin.fileno()).st_mode):
        await asyncio.Event().wait()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while await reader.read(4096):
        pass


async def run(table: int, protocol: int, next_hop: str = "self") -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    tasks = [asyncio.create_task(follow(watch_routes(table, protocol), _write, next_hop)),
             asyncio.create_task(_stdin_closed()), asyncio.create_task(stop.wait())]
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    for task in pending:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    for task in done:
        error = task.exception()
        if error is not None:
            print(f"lvsd announce exabgp: {type(error).__name__}: {error}", file=sys.stderr)
            return 1
    return 0
