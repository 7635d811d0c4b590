"""What ``lvsd ctl status`` and ``lvsd ctl events`` read from the control socket.

- ``GET /v1/status[?service=NAME|KEY]``: the ``/status`` document (``lvsd.api``), of that one
  service when asked (by name or key, as the write commands take it; a foreign service by its
  key). It is built and encoded off the event loop: at 10,000 servers that takes a good part
  of a second, which probes should not wait for.
- ``GET /v1/events``: the event stream (``lvsd.events``) as JSON lines, chunked, from the
  moment of the request: a ``subscribed`` line first, then every event in the order lvsd
  made the changes, a ``lost`` line where this client read too slowly, a ``closed`` line when
  lvsd stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Mapping
from typing import Protocol

from aiohttp import web

from lvsd.api import latest_snapshot, status_document
from lvsd.control import Handler, RequestError, find_service
from lvsd.events import EventLog, TooManySubscribers
from lvsd.model import ServiceKey
from lvsd.snapshot import Snapshot, SnapshotSource
from lvsd.spec import Config

IDLE_CHECK = 2.0  # seconds: how soon a follower that went away while nothing happened is let go
NDJSON = "application/x-ndjson"


class ViewSource(SnapshotSource, Protocol):
    @property
    def config(self) -> Config: ...


def _only_query(request: web.Request, allowed: tuple[str, ...]) -> Mapping[str, str]:
    for name in request.query:
        if name not in allowed:
            known = ", ".join(allowed) or "none"
            raise RequestError(400, f"query.{name}", f"unknown parameter (known: {known})")
    return request.query


def requested_service(config: Config, snapshot: Snapshot, text: str) -> ServiceKey:
    """The service ``ctl status SERVICE`` names: a configured one as the write commands find
    it, or a foreign one by its key. Raises RequestError."""
    try:
        return find_service(config, text).key
    except RequestError as exc:
        if exc.status != 404:
            raise
        foreign = [vs.key for vs in snapshot.foreign if str(vs.key) == text]
        if foreign:
            return foreign[0]
        raise


def _encoded_status(snapshot: Snapshot, now: float, only: ServiceKey | None) -> bytes:
    document = status_document(snapshot, now, None if only is None else {only})
    return json.dumps(document).encode()


def view_routes(source: ViewSource, events: EventLog,
                clock: Callable[[], float] = time.time) -> list[tuple[str, str, Handler]]:
    """The routes for ``lvsd.control.create_control_app``."""

    async def status(request: web.Request) -> web.StreamResponse:
        text = _only_query(request, ("service",)).get("service")
        snapshot = await latest_snapshot(source)
        only = None if text is None else requested_service(source.config, snapshot, text)
        loop = asyncio.get_running_loop()
        body = await loop.run_in_executor(None, _encoded_status, snapshot, clock(), only)
        return web.Response(body=body, content_type="application/json")

    async def follow(request: web.Request) -> web.StreamResponse:
        _only_query(request, ())
        try:
            subscription = events.subscribe()
        except TooManySubscribers as exc:
            raise RequestError(503, "events", str(exc)) from None
        response = web.StreamResponse(headers={"Content-Type": NDJSON,
                                               "Cache-Control": "no-store"})
        response.enable_chunked_encoding()
        with subscription, contextlib.suppress(ConnectionError):
            await response.prepare(request)
            await response.write(subscription.greeting())
            while not subscription.finished:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(IDLE_CHECK):
                        await subscription.wait()
                transport = request.transport
                if transport is None or transport.is_closing():
                    break
                if lines := subscription.take():
                    await response.write(b"".join(lines))
            await response.write_eof()
        return response

    return [("GET", "/status", status), ("GET", "/events", follow)]
