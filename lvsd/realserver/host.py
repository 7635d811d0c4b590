"""The real server's kernel, through pyroute2 (links, addresses) and /proc/sys (sysctls).

Every failure comes out as ``HostError("place: what is wrong")``. The IPRoute socket opens in
the calling thread's network namespace.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lvsd.errors import LvsdError
from lvsd.model import Address
from lvsd.realserver.plan import (
    Change,
    HostState,
    Link,
    LinkUp,
    Piece,
    Sysctl,
    Tunnel,
    VipAddress,
    prefix_of,
    sysctl_path,
)

IFF_UP = 0x1


class HostError(LvsdError):
    """A read or a change of the real server's kernel failed."""


def _netlink_reason(exc: Exception) -> str:
    code = getattr(exc, "code", None)
    if isinstance(code, int) and code > 0:
        import os

        return os.strerror(code)
    return str(exc) or type(exc).__name__


class Host:
    def __init__(self, proc_sys: Path = Path("/proc/sys")) -> None:
        self.proc_sys = proc_sys
        self._rtnl: Any = None

    def __enter__(self) -> Host:
        try:
            from pyroute2 import IPRoute

            self._rtnl = IPRoute()
        except Exception as exc:  # pyroute2 raises its own types too
            raise HostError(f"rtnetlink: cannot open a socket: {_netlink_reason(exc)}") from exc
        return self

    def __exit__(self, *_: object) -> None:
        if self._rtnl is not None:
            self._rtnl.close()
            self._rtnl = None

    # --- reading -------------------------------------------------------------------------------

    def state(self, sysctls: Iterable[str] = ()) -> HostState:
        try:
            links = {}
            names = {}
            for message in self._rtnl.link("dump"):
                name = message.get("IFLA_IFNAME")
                names[message["index"]] = name
                links[name] = Link(message["index"],
                                   message.get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND"),
                                   bool(message["flags"] & IFF_UP))
            held: dict[str, set[Address]] = {name: set() for name in links}
            for message in self._rtnl.addr("dump"):
                value = message.get("IFA_LOCAL") or message.get("IFA_ADDRESS")
                name = names.get(message["index"])
                if name is not None and value is not None:
                    held[name].add(ipaddress.ip_address(value))
        except Exception as exc:
            raise HostError(f"rtnetlink: cannot list links and addresses: "
                            f"{_netlink_reason(exc)}") from exc
        return HostState(links, {name: frozenset(a) for name, a in held.items()},
                         {name: self.read_sysctl(name) for name in sysctls})

    def read_sysctl(self, name: str) -> str | None:
        try:
            return (self.proc_sys.joinpath(*sysctl_path(name))).read_text().strip()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise HostError(f"{name}: cannot read: {exc.strerror or exc}") from exc

    # --- changing ------------------------------------------------------------------------------

    def _index(self, device: str) -> int:
        found = self._rtnl.link_lookup(ifname=device)
        if not found:
            raise HostError(f"{device}: no such interface")
        return int(found[0])

    def make(self, piece: Piece) -> Change | None:
        """Make ``piece`` true; the change made, None where it already held."""
        try:
            return self._make(piece)
        except HostError:
            raise
        except Exception as exc:  # pyroute2's own types, OSError: all are "this step failed"
            raise HostError(f"{piece.fix}: {_netlink_reason(exc)}") from exc

    def undo(self, change: Change) -> str | None:
        """Put back what ``change`` changed; a sentence when it was left as it is, and why."""
        try:
            return self._undo(change)
        except HostError:
            raise
        except Exception as exc:
            raise HostError(f"undoing {change.piece.fix}: {_netlink_reason(exc)}") from exc

    def _make(self, piece: Piece) -> Change | None:
        match piece:
            case Sysctl():
                current = self.read_sysctl(piece.name)
                if piece.satisfied_by(current):
                    return None
                self._write_sysctl(piece.name, piece.value)
                return Change(piece, current)
            case VipAddress():
                if piece.address in self.state().addresses.get(piece.device, frozenset()):
                    return None
                self._address("add", piece.device, piece.address)
                return Change(piece)
            case Tunnel():
                if self._rtnl.link_lookup(ifname=piece.device):
                    return None
                try:
                    self._rtnl.link("add", ifname=piece.device, kind=piece.kind)
                except Exception as exc:
                    if getattr(exc, "code", None) == 17:  # loading the module made it (EEXIST)
                        return None
                    raise HostError(f"{piece.device}: cannot add the {piece.kind} tunnel: "
                                    f"{_netlink_reason(exc)}") from exc
                return Change(piece)
            case LinkUp():
                link = self.state().links.get(piece.device)
                if link is not None and link.up:
                    return None
                self._set_state(piece.device, "up")
                return Change(piece)

    def _undo(self, change: Change) -> str | None:
        piece = change.piece
        match piece:
            case Sysctl():
                current = self.read_sysctl(piece.name)
                if current is None:
                    return f"{piece.name}: gone (its interface was removed)"
                if current != piece.value:
                    return f"{piece.name}: is {current} now, not {piece.value} as set: left"
                if change.previous is not None:
                    self._write_sysctl(piece.name, change.previous)
                return None
            case VipAddress():
                if piece.address not in self.state().addresses.get(piece.device, frozenset()):
                    return f"{piece.device}: {piece.address} is gone already"
                self._address("del", piece.device, piece.address)
                return None
            case Tunnel():
                if not self._rtnl.link_lookup(ifname=piece.device):
                    return f"{piece.device}: gone already"
                try:
                    self._rtnl.link("del", index=self._index(piece.device))
                except Exception as exc:
                    raise HostError(f"{piece.device}: cannot delete: "
                                    f"{_netlink_reason(exc)}") from exc
                return None
            case LinkUp():
                if not self._rtnl.link_lookup(ifname=piece.device):
                    return None  # deleted with its tunnel
                self._set_state(piece.device, "down")
                return None

    def _write_sysctl(self, name: str, value: str) -> None:
        try:
            self.proc_sys.joinpath(*sysctl_path(name)).write_text(value)
        except OSError as exc:
            raise HostError(f"{name}: cannot set {value}: {exc.strerror or exc}") from exc

    def _address(self, verb: str, device: str, address: Address) -> None:
        family = socket.AF_INET if address.version == 4 else socket.AF_INET6
        try:
            self._rtnl.addr(verb, index=self._index(device), address=str(address),
                            prefixlen=prefix_of(address), family=family)
        except HostError:
            raise
        except Exception as exc:
            what = "add" if verb == "add" else "delete"
            raise HostError(f"{device}: cannot {what} {address}/{prefix_of(address)}: "
                            f"{_netlink_reason(exc)}") from exc

    def _set_state(self, device: str, state: str) -> None:
        try:
            self._rtnl.link("set", index=self._index(device), state=state)
        except HostError:
            raise
        except Exception as exc:
            raise HostError(f"{device}: cannot set it {state}: {_netlink_reason(exc)}") from exc
