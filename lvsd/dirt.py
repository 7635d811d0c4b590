"""What the next pass over part of the table plans: whole services, and single servers.

A server whose health or agent's report moved is planned alone (``reconcile.server_plan``),
so a health event costs the same in a service of 10 servers or of 1,000; anything else that
changes a service (a ramp's step, an override, a refused op) plans it whole.
"""

from __future__ import annotations

from collections.abc import Iterable

from lvsd.model import DestKey, ServiceKey
from lvsd.spec import ServerRef, ServerSpec, ServiceIndex, ServiceSpec


class Dirty:
    def __init__(self) -> None:
        self._whole: set[ServiceKey] = set()
        self._servers: dict[ServiceKey, set[DestKey]] = {}

    def add(self, key: ServiceKey) -> None:
        """Plan the service whole."""
        self._whole.add(key)

    def update(self, keys: Iterable[ServiceKey]) -> None:
        self._whole.update(keys)

    def add_server(self, ref: ServerRef) -> None:
        """Plan this server of its service (the rest of the service stays as planned)."""
        service_key, dest_key = ref
        self._servers.setdefault(service_key, set()).add(dest_key)

    def clear(self) -> None:
        self._whole.clear()
        self._servers.clear()

    def __bool__(self) -> bool:
        return bool(self._whole or self._servers)

    def take(self, index: ServiceIndex
             ) -> tuple[list[ServiceSpec], dict[ServiceKey, list[ServerSpec]]]:
        """The configured services to plan, and for those to plan only in part, their
        servers to plan; then nothing is dirty. A server the config no longer has makes its
        service planned whole."""
        specs = [spec for key in self._whole | self._servers.keys()
                 if (spec := index.get(key)) is not None]
        servers: dict[ServiceKey, list[ServerSpec]] = {}
        for key, dest_keys in self._servers.items():
            if key in self._whole:
                continue
            found = [server for dest_key in dest_keys
                     if (server := index.server(key, dest_key)) is not None]
            if len(found) == len(dest_keys):
                servers[key] = found
        self.clear()
        return specs, servers
