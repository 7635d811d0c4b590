"""The daemon's state file: what lvsd must remember across restarts.

- ``owned``: the services lvsd created or adopted, so a restart can delete the ones the config
  dropped while lvsd was down, and never a service it did not make;
- ``probe_marks``: the DR-path probe mark of each (service, server), so marks survive a restart;
- ``overrides``: the operator overrides of ``lvsd ctl``, as ``lvsd.overrides`` encodes them;
- ``mh_last_weights``: the last non-zero weight of each server of a consistent-hash service
  (``lvsd.consistent``): the kernel builds the mh table from it and does not report it. An
  older lvsd ignores the key.

Versioned JSON, written atomically. A file that cannot be read or understood is logged, moved
aside (``state.json.corrupt-<time>``) and taken as empty, which is conservative: lvsd then owns
nothing it did not create in this run, so it deletes nothing it cannot prove is its own.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lvsd import logs
from lvsd.files import write_atomic
from lvsd.model import DestKey, Family, Protocol, ServiceKey, parse_address
from lvsd.spec import ServerRef

VERSION = 2

log = logs.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class DaemonState:
    owned: frozenset[ServiceKey] = frozenset()
    marks: Mapping[ServerRef, int] = field(default_factory=dict)
    overrides: Mapping[str, Any] = field(default_factory=dict)
    last_weights: Mapping[ServerRef, int] = field(default_factory=dict)


class StateFile:
    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._clock = clock
        self._written: str | None = None
        self._latest: DaemonState | None = None  # as last asked to store, or read
        self._writing = threading.Lock()  # a write in a thread against one on the loop
        self._asked = 0  # stores asked for, in order
        self._done = 0  # the latest of them that is on disk (or failed)

    def load(self) -> DaemonState:
        try:
            text = self.path.read_bytes().decode("utf-8")
        except FileNotFoundError:
            return DaemonState()
        except (OSError, UnicodeDecodeError) as exc:
            self._set_aside(f"unreadable: {exc}")
            return DaemonState()
        try:
            state = decode(json.loads(text))
        except (ValueError, TypeError, KeyError, RecursionError) as exc:
            self._set_aside(f"not a state file lvsd understands: {exc}")
            return DaemonState()
        self._written = text
        self._latest = state
        return state

    def store(self, state: DaemonState) -> bool:
        """Write ``state`` when it changed; False (logged) when the write failed."""
        if state == self._latest:
            return True
        self._latest = state
        self._asked += 1
        return self._write(state, self._asked)

    async def store_in_thread(self, state: DaemonState) -> bool:
        """``store``, encoding and writing (with its fsyncs) in a worker thread: at 10,000
        servers that held the event loop for 15-50 ms. Stores finish in the order asked."""
        if state == self._latest:
            return True
        self._latest = state
        self._asked += 1
        return await asyncio.to_thread(self._write, state, self._asked)

    def _write(self, state: DaemonState, order: int) -> bool:
        with self._writing:
            if order < self._done:
                return True  # a later state is on disk already
            self._done = order
            text = json.dumps(encode(state), indent=1) + "\n"
            if text == self._written:
                return True
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                write_atomic(self.path, text)
            except OSError as exc:
                log.error("state_file_write_failed", path=str(self.path), error=str(exc))
                self._latest = None  # the next store tries again
                return False
            self._written = text
            return True

    def _set_aside(self, problem: str) -> None:
        aside = self.path.with_name(f"{self.path.name}.corrupt-{int(self._clock())}")
        try:
            self.path.rename(aside)
        except OSError as exc:
            log.error("state_file_unreadable", path=str(self.path), problem=problem,
                      detail=f"could not move it aside: {exc}; starting with an empty state")
            return
        log.error("state_file_unreadable", path=str(self.path), problem=problem,
                  moved_to=str(aside), detail="starting with an empty state")


def encode(state: DaemonState) -> dict[str, Any]:
    return {
        "version": VERSION,
        "owned": [service_to_json(key) for key in sorted(state.owned)],
        "probe_marks": [
            {"service": service_to_json(svc), "server": dest_to_json(dest), "mark": mark}
            for (svc, dest), mark in sorted(state.marks.items(), key=lambda item: item[1])
        ],
        "overrides": dict(state.overrides),
        "mh_last_weights": [
            {"service": service_to_json(svc), "server": dest_to_json(dest), "weight": weight}
            for (svc, dest), weight in sorted(state.last_weights.items(),
                                              key=lambda item: (str(item[0][0]),
                                                                str(item[0][1])))
        ],
    }


def decode(data: object) -> DaemonState:
    """Version 1 (no ``version``) held only ``owned``."""
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    version = data.get("version", 1)
    if version not in (1, VERSION):
        raise ValueError(f"version {version!r}, this lvsd reads 1 and {VERSION}")
    owned = frozenset(service_from_json(item) for item in _list(data.get("owned", [])))
    marks: dict[ServerRef, int] = {}
    for item in _list(data.get("probe_marks", [])):
        if not isinstance(item, dict):
            raise ValueError("a probe mark is not an object")
        mark = item["mark"]
        if not _is_int(mark):
            raise ValueError(f"mark {mark!r} is not an integer")
        marks[(service_from_json(item["service"]), dest_from_json(item["server"]))] = mark
    overrides = data.get("overrides", {})
    if not isinstance(overrides, dict):
        raise ValueError("overrides is not an object")
    last_weights: dict[ServerRef, int] = {}
    for item in _list(data.get("mh_last_weights", [])):
        if not isinstance(item, dict):
            raise ValueError("an mh last weight is not an object")
        weight = item["weight"]
        if not _is_int(weight) or weight <= 0:
            raise ValueError(f"mh last weight {weight!r} is not a positive integer")
        last_weights[(service_from_json(item["service"]),
                      dest_from_json(item["server"]))] = weight
    return DaemonState(owned, marks, overrides, last_weights)


def _list(value: object) -> list[Any]:
    if not isinstance(value, list):
        raise ValueError(f"{value!r} is not a list")
    return value


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def service_to_json(key: ServiceKey) -> list[object]:
    return [int(key.family), int(key.protocol), str(key.address) if key.address else None,
            key.port, key.fwmark]


def service_from_json(item: object) -> ServiceKey:
    family, protocol, address, port, fwmark = _list(item)
    if not all(_is_int(v) for v in (family, protocol, port, fwmark)):
        raise ValueError(f"service {item!r}: numbers expected")
    return ServiceKey(Family(family), Protocol(protocol),
                      parse_address(address) if isinstance(address, str) else None, port, fwmark)


def dest_to_json(key: DestKey) -> list[object]:
    return [str(key.address), key.port]


def dest_from_json(item: object) -> DestKey:
    address, port = _list(item)
    if not isinstance(address, str) or not _is_int(port):
        raise ValueError(f"server {item!r}: an address and a port expected")
    return DestKey(parse_address(address), port)
