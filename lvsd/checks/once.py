"""One probe run now, outside the schedule: what ``lvsd ctl check`` prints."""

from __future__ import annotations

import asyncio

from lvsd.probe import CheckKey, ProbeResult


async def probe_now(key: CheckKey) -> ProbeResult:
    """Run the probe of ``key`` once, with its own timeout; the result is not reported to
    the health book (a probe on demand must not move a server's health by itself)."""
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[ProbeResult] = loop.create_future()

    def done(result: ProbeResult) -> None:
        if not answer.done():
            answer.set_result(result)

    started = loop.time()
    running = key.spec.prober().start(key.target, done)
    try:
        return await asyncio.wait_for(asyncio.shield(answer), key.spec.timeout)
    except TimeoutError:
        stage = running.stage
        running.cancel()
        return ProbeResult(False, f"timeout ({stage})" if stage else "timeout",
                           loop.time() - started)
