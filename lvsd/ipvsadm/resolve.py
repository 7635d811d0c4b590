"""Host and service-name lookups as ipvsadm makes them: the only part of the package that may
touch the system, injected so formatting and parsing stay pure."""

from __future__ import annotations

import ipaddress
import socket
import typing

from lvsd.ipvsadm.names import PROTOCOL_NAMES
from lvsd.model import Address, Protocol


class NameResolver(typing.Protocol):
    def host_name(self, address: Address) -> str | None:
        """The name ``gethostbyaddr`` gives, or None to print the address."""
        ...

    def service_name(self, port: int, protocol: Protocol) -> str | None:
        """The services-database name of ``port``, or None to print the number."""
        ...

    def host_address(self, name: str) -> ipaddress.IPv4Address | None:
        """``gethostbyname``: ipvsadm looks host names up as IPv4 only."""
        ...

    def service_port(self, name: str, protocol: Protocol) -> int | None: ...


class SystemResolver:
    """The C library's lookups, as ipvsadm makes them: hosts and the services database."""

    def host_name(self, address: Address) -> str | None:
        try:
            return socket.gethostbyaddr(str(address))[0]
        except (OSError, UnicodeError):
            return None

    def service_name(self, port: int, protocol: Protocol) -> str | None:
        proto = PROTOCOL_NAMES.get(protocol)
        if proto is None:
            return None
        try:
            return socket.getservbyport(port, proto)
        except (OSError, OverflowError):
            return None

    def host_address(self, name: str) -> ipaddress.IPv4Address | None:
        try:
            return ipaddress.IPv4Address(socket.gethostbyname(name))
        except (OSError, UnicodeError, ValueError):
            return None

    def service_port(self, name: str, protocol: Protocol) -> int | None:
        proto = PROTOCOL_NAMES.get(protocol)
        if proto is None:
            return None
        try:
            return socket.getservbyname(name, proto)
        except OSError:
            return None


class NumericResolver:
    """Knows no names: formats numerically and refuses host and service names when parsing."""

    def host_name(self, address: Address) -> str | None:
        return None

    def service_name(self, port: int, protocol: Protocol) -> str | None:
        return None

    def host_address(self, name: str) -> ipaddress.IPv4Address | None:
        return None

    def service_port(self, name: str, protocol: Protocol) -> int | None:
        return None
