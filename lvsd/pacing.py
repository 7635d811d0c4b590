"""Long CPU work in slices, so the event loop keeps answering while it runs.

A full pass over 10,000 destinations (plan, log, bookkeeping) or a dump of them is seconds of
Python under emulation; done in one go it stalls probes, ``/healthz`` and the control socket for
all of that time. Pure work is written as a generator that yields ``None`` after each unit (a
service, usually) and returns its result; ``finish`` runs it at once (tests, tools), ``paced``
runs it on the loop, giving the loop a turn whenever a slice of CPU time has gone by.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Generator
from typing import TypeVar

T = TypeVar("T")

Steps = Generator[None, None, T]

SLICE = 0.01  # seconds of work between two turns of the loop


class Pacer:
    """Gives the loop a turn when ``slice_seconds`` of work have gone by since the last one."""

    __slots__ = ("_since", "_slice")

    def __init__(self, slice_seconds: float = SLICE) -> None:
        self._slice = slice_seconds
        self._since = time.perf_counter()

    async def tick(self) -> None:
        if time.perf_counter() - self._since >= self._slice:
            await asyncio.sleep(0)
            self._since = time.perf_counter()


def finish(steps: Steps[T]) -> T:
    """Run ``steps`` to the end at once; its result."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            result: T = done.value
            return result


async def paced(steps: Steps[T], pacer: Pacer | None = None) -> T:
    """Run ``steps`` on the loop in slices; its result."""
    pacer = pacer or Pacer()
    while True:
        try:
            next(steps)
        except StopIteration as done:
            result: T = done.value
            return result
        await pacer.tick()
