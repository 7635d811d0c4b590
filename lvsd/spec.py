"""What a loaded configuration is: the pure value types the daemon, the planner and the API run on.

``lvsd.config`` builds these from TOML; nothing here imports a checker, pydantic or any other
third-party library, so the planner and its tests load without them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from lvsd.errors import Problem
from lvsd.model import (
    SYNC_DEFAULT_GROUP,
    SYNC_DEFAULT_PORT,
    SYNC_DEFAULT_TTL,
    Address,
    Dest,
    DestKey,
    Service,
    ServiceKey,
    SyncDaemon,
    SyncState,
    Timeouts,
)

if TYPE_CHECKING:
    from lvsd.checks.agent import AgentCheck
    from lvsd.checks.base import CheckSpec


ServerRef = tuple[ServiceKey, DestKey]
"""A configured real server of a service: the identity health and probe marks are kept by."""


@dataclass(frozen=True, slots=True)
class DaemonSettings:
    state_dir: Path
    save_file: Path
    listen_host: str
    listen_port: int
    resync_interval: float
    reconcile_delay: float
    drain_timeout: float
    on_stop: Literal["keep", "withdraw"]
    log_level: str
    max_probes_in_flight: int
    dr_check_mark_base: int
    allow_empty: bool = False  # a config without services may delete every owned service
    probe_workers: int | Literal["auto"] = "auto"  # processes probing; 0: the daemon itself
    control_socket: Path = Path("/run/lvsd/lvsd.sock")  # lvsd ctl's unix socket
    control_group: str | None = None  # a group whose members may use it too (0660)
    control_gid: int | None = None  # control_group's id, looked up when the config loads
    split_brain_probe: float | None = 1.0  # seconds between VIP conflict probes; None: off

    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"


@dataclass(frozen=True, slots=True)
class ServerSpec:
    """A configured real server: the destination at its configured weight, and its checks
    (all must pass for it to serve; none means it always serves); ``slow_start`` (seconds, 0:
    off) ramps its weight when it comes back; ``agent`` scales or overrides its weight."""

    dest: Dest
    checks: tuple[CheckSpec, ...] = ()
    disabled: bool = False
    slow_start: float = 0.0
    agent: AgentCheck | None = None

    @property
    def key(self) -> DestKey:
        return self.dest.key


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    service: Service
    name: str
    servers: tuple[ServerSpec, ...]
    on_failure: Literal["weight0", "remove"] = "weight0"
    quorum: int = 1
    sorry_server: Dest | None = None
    fail_open: bool = False
    on_change: tuple[str, ...] = ()
    # the same mh table on every director (lvsd.consistent): canonical order, weight history
    consistent_hash: bool = False

    @property
    def key(self) -> ServiceKey:
        return self.service.key


QuorumRule = Literal["all", "any"]
"""Whether a VIP needs every one of its services at quorum, or any one."""


@dataclass(frozen=True, slots=True)
class AnnouncedVip:
    address: Address
    rule: QuorumRule = "all"


@dataclass(frozen=True, slots=True)
class AnnounceSettings:
    """``[announce]``: lvsd keeps a host route per healthy VIP in a kernel routing table it
    owns (``table``), tagged with its own route protocol number (``protocol``), for a routing
    daemon (BIRD's kernel protocol with ``learn``, FRR's import-table) to announce."""

    table: int
    protocol: int
    hold_down: float  # seconds a VIP's quorum must hold without a break before a re-announce
    withdraw_on_stop: bool
    vips: tuple[AnnouncedVip, ...]
SyncMode = Literal["both", "follow-role", "off", "external"]
SYNC_MODES: tuple[SyncMode, ...] = ("both", "follow-role", "off", "external")


@dataclass(frozen=True, slots=True)
class SyncSettings:
    """``[sync]``: which of the kernel's connection-sync daemons lvsd runs.

    ``both``: master and backup on every director (no role needed, failback safe);
    ``follow-role``: the master daemon while this director holds the VIP, else the backup;
    ``off``: stop the daemons lvsd started; ``external``: leave every daemon to someone else.
    """

    mode: SyncMode = "off"
    interface: str = ""
    syncid: int = 0
    group: Address = SYNC_DEFAULT_GROUP
    port: int = SYNC_DEFAULT_PORT
    ttl: int = SYNC_DEFAULT_TTL
    maxlen: int | None = None

    def daemon(self, state: SyncState) -> SyncDaemon:
        return SyncDaemon(state, self.interface, self.syncid, self.group, self.port, self.ttl,
                          self.maxlen)


@dataclass(frozen=True, slots=True)
class RoleSettings:
    """``[role]``: how lvsd learns whether this director is the master, and tells keepalived
    about its services. ``addresses`` empty: every service VIP counts."""

    addresses: tuple[Address, ...] = ()
    notify_fifo: Path | None = None
    instance: str | None = None  # the VRRP instance whose FIFO lines count (None: any)
    track_file: Path | None = None


@dataclass(frozen=True, slots=True)
class Config:
    daemon: DaemonSettings
    services: tuple[ServiceSpec, ...] = ()
    timeouts: Timeouts | None = None
    source: str = "<config>"
    sync: SyncSettings = SyncSettings()
    role: RoleSettings = RoleSettings()
    # legal but probably wrong (check-config prints them, the daemon logs them)
    warnings: tuple[Problem, ...] = ()
    announce: AnnounceSettings | None = None


def role_addresses(config: Config) -> frozenset[Address]:
    """The addresses whose presence on this director makes it the master."""
    if config.role.addresses:
        return frozenset(config.role.addresses)
    return frozenset(spec.key.address for spec in config.services
                     if spec.key.address is not None)


class ServiceIndex:
    """The services of the config in force by key, rebuilt when the config is swapped: a
    linear search made each health event O(services)."""

    def __init__(self, config: Callable[[], Config]) -> None:
        self._config = config
        self._built: tuple[Config | None, dict[ServiceKey, ServiceSpec]] = (None, {})
        # Per service, built at its first lookup: most services never have one.
        self._servers: dict[ServiceKey, dict[DestKey, ServerSpec]] = {}

    def get(self, key: ServiceKey) -> ServiceSpec | None:
        config = self._config()
        if self._built[0] is not config:
            self._built = (config, {spec.key: spec for spec in config.services})
            self._servers = {}
        return self._built[1].get(key)

    def server(self, key: ServiceKey, dest_key: DestKey) -> ServerSpec | None:
        """The configured server ``dest_key`` of service ``key``."""
        spec = self.get(key)
        if spec is None:
            return None
        servers = self._servers.get(key)
        if servers is None:
            servers = self._servers[key] = {server.key: server for server in spec.servers}
        return servers.get(dest_key)
