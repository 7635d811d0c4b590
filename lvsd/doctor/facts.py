"""What ``lvsd doctor`` knows about a director, and what it reports: pure value types."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from lvsd.model import Address, Forward, Table

if TYPE_CHECKING:
    from lvsd.checks.drpath import Routing
    from lvsd.spec import Config, ServiceSpec
    from lvsd.splitbrain.book import VipStatus


class Severity(enum.IntEnum):
    """Ordered: the worst finding sets ``lvsd doctor``'s exit code (its value)."""

    NOTE = 0  # worth knowing, nothing wrong
    WARNING = 1  # traffic may misbehave in some case (a failure, a drain, a reboot)
    ERROR = 2  # traffic does not work as configured

    @property
    def word(self) -> Literal["note", "warning", "error"]:
        match self:
            case Severity.NOTE:
                return "note"
            case Severity.WARNING:
                return "warning"
            case Severity.ERROR:
                return "error"


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing found: ``subject`` is where (a sysctl, a VIP, a scheduler), ``fix`` the command
    or change that cures it."""

    check: str  # the registry name of the check area that found it
    severity: Severity
    subject: str
    message: str
    fix: str

    def as_json(self) -> dict[str, str]:
        return {"check": self.check, "severity": self.severity.word, "subject": self.subject,
                "message": self.message, "fix": self.fix}

    def __str__(self) -> str:
        return f"{self.severity.word}: {self.subject}: {self.message}\n  fix: {self.fix}"


@dataclass(frozen=True, slots=True)
class IpvsFacts:
    version: str
    conn_table_size: int
    table: Table  # the live table, for its connection counts


@dataclass(frozen=True, slots=True)
class FirewallFacts:
    """Rule sets as their tools print them; None where the tool is absent or failed."""

    nft: str | None = None
    iptables: str | None = None  # iptables-save
    ip6tables: str | None = None  # ip6tables-save


def sysctl_name(*parts: str) -> str:
    """The sysctl(8) name of a /proc/sys path's parts: dots inside a part (eth0.100) become
    slashes, as sysctl(8) writes them."""
    return ".".join(part.replace(".", "/") for part in parts)


@dataclass(frozen=True, slots=True)
class Facts:
    config: Config
    kernel_release: str = ""
    ipvs: IpvsFacts | None = None  # None: the kernel answered no IPVS (see ipvs_problem)
    ipvs_problem: str = ""
    loaded_modules: frozenset[str] = frozenset()
    available_modules: frozenset[str] = frozenset()  # loadable: built in or a .ko on disk
    sysctls: Mapping[str, str] = field(default_factory=dict)  # "net.ipv4.ip_forward" -> "1"
    addresses: Mapping[str, frozenset[Address]] = field(default_factory=dict)  # per interface
    rtnetlink_problem: str = ""  # set when addresses and routes could not be read
    routes: Mapping[Address, str] = field(default_factory=dict)  # VIP -> interface routed out
    dr_paths: Mapping[tuple[Address, Address], Routing] = field(default_factory=dict)
    firewall: FirewallFacts = FirewallFacts()
    # one split-brain probe round (lvsd.splitbrain): each held VIP, and any other holder
    vip_probes: tuple[VipStatus, ...] = ()
    vip_probe_problems: Mapping[str, str] = field(default_factory=dict)  # where -> error

    def sysctl(self, name: str) -> int | None:
        """An integer sysctl, None where it is absent (or not an integer)."""
        try:
            return int(self.sysctls[name])
        except (KeyError, ValueError):
            return None

    def holders(self, address: Address) -> list[str]:
        """The interfaces that hold ``address``, sorted."""
        return sorted(name for name, held in self.addresses.items() if address in held)

    def vips(self) -> list[tuple[ServiceSpec, Address]]:
        """Every configured service with an address (not fwmark), with it."""
        return [(spec, spec.key.address) for spec in self.config.services
                if spec.key.address is not None]

    def forwards(self, method: Forward) -> list[ServiceSpec]:
        """The services with at least one real server forwarded by ``method``."""
        return [spec for spec in self.config.services
                if any(server.dest.forward == method for server in spec.servers)]
