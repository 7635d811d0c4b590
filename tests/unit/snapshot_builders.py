"""Small synthetic snapshots for the metrics and API tests, built from the model types."""

from __future__ import annotations

from lvsd.model import (
    Dest,
    DestKey,
    DestStats,
    Forward,
    Persistence,
    Protocol,
    Service,
    ServiceKey,
    ServiceStats,
    VirtualService,
    parse_address,
)
from lvsd.snapshot import Health, LastProbe, ReloadStatus, ServerStatus, ServiceStatus, Snapshot

NOW = 1_700_000_000.0

WEB = ServiceKey.virtual(Protocol.TCP, "192.0.2.10", 80)
DNS = ServiceKey.virtual(Protocol.UDP, "2001:db8::53", 53)
MARKED = ServiceKey.mark(10)
FOREIGN = ServiceKey.virtual(Protocol.TCP, "203.0.113.7", 443)


def traffic(seed: int) -> ServiceStats:
    return ServiceStats(conns=seed, inpkts=seed * 10, outpkts=seed * 9, inbytes=seed * 1000,
                        outbytes=seed * 900, cps=seed % 7, inpps=seed % 11, outpps=seed % 13,
                        inbps=seed * 3, outbps=seed * 2)


def kernel_dest(address: str, port: int, weight: int, seed: int,
                forward: Forward = Forward.ROUTE) -> Dest:
    return Dest(DestKey(parse_address(address), port), weight, forward,
                stats=DestStats(active=seed % 5, inactive=seed % 3, persistent=seed % 2,
                                traffic=traffic(seed)))


def server(address: str, port: int = 80, *, health: Health = "up", weight: int = 10,
           kernel_weight: int | None = None, in_kernel: bool = True, seed: int = 1,
           role: str = "real", drain_deadline: float | None = None,
           last_probe: LastProbe | None = None, disabled: bool = False) -> ServerStatus:
    key = DestKey(parse_address(address), port)
    live = None
    if in_kernel:
        live = kernel_dest(address, port, weight if kernel_weight is None else kernel_weight,
                           seed)
    probe = last_probe if last_probe is not None else LastProbe(
        health == "up", "HTTP 200" if health == "up" else "connection refused", 0.0042, NOW - 1
    )
    return ServerStatus(key, role, weight, live, health, disabled,  # type: ignore[arg-type]
                        "http", probe, NOW - 60, drain_deadline)


def service(key: ServiceKey, name: str, servers: list[ServerStatus], *, quorum: int = 1,
            in_kernel: bool = True, persistent: bool = False, seed: int = 100,
            sorry_active: bool = False) -> ServiceStatus:
    healthy = sum(s.configured_weight for s in servers
                  if s.health == "up" and s.role == "real")
    kernel = None
    if in_kernel:
        kernel = Service(key, "wrr", persistence=Persistence(300) if persistent else None,
                         stats=traffic(seed))
    return ServiceStatus(key, name, kernel, tuple(servers), quorum, healthy, healthy < quorum,
                         sorry_active, False)


def foreign(key: ServiceKey = FOREIGN) -> VirtualService:
    return VirtualService(Service(key, "rr", stats=traffic(7)),
                          (kernel_dest("198.51.100.99", 443, 3, 8, Forward.MASQ),))


def lab_snapshot(*, ready: bool = True) -> Snapshot:
    """Three managed services (TCP, IPv6 UDP, fwmark) and one foreign one."""
    return Snapshot(
        services=(
            service(WEB, "web", [server("198.51.100.1", seed=11),
                                 server("198.51.100.2", health="down", kernel_weight=0, seed=12)]),
            service(DNS, "dns", [server("2001:db8::1", 53, seed=21)], persistent=True),
            service(MARKED, "marked", [server("198.51.100.3", 0, seed=31)]),
        ),
        foreign=(foreign(),),
        taken_at=NOW - 0.5,
        ready=ready,
        config_source="/etc/lvsd/lvsd.toml",
        last_reload=ReloadStatus(True, NOW - 30),
        kernel_version="1.2.1",
    )
