"""The exceptions lvsd raises; the CLI and the daemon turn them into exit codes and log events."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lvsd.model import Op


class LvsdError(Exception):
    """Base of every error lvsd reports to an operator."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with an input, and where: ``services[2].real_servers[0].port``."""

    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.where else self.message


class ConfigError(LvsdError):
    """The configuration file is unreadable or invalid; ``problems`` lists every finding."""

    def __init__(self, source: str, problems: list[Problem]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} problem(s)\n{lines}")


class SaveFormatError(LvsdError):
    """A line of an ipvsadm-save file could not be understood."""

    def __init__(self, source: str, line_no: int, line: str, message: str) -> None:
        self.source = source
        self.line_no = line_no
        self.line = line
        self.reason = message
        super().__init__(f"{source}:{line_no}: {message}: {line.strip()!r}")


class IpvsError(LvsdError):
    """A netlink operation on the IPVS table failed.

    ``op`` is the planned operation that failed (None for table-wide requests such as a dump);
    ``operation`` and ``target`` are its words ("add destination", "tcp:192.0.2.1:80 -> …").
    """

    def __init__(
        self, operation: str, target: str, errno: int, message: str, op: Op | None = None
    ) -> None:
        self.operation = operation
        self.target = target
        self.errno = errno
        self.reason = message
        self.op = op
        super().__init__(f"{operation} {target}: {message} (errno {errno})")

    @classmethod
    def of(cls, op: Op, errno: int, message: str) -> IpvsError:
        return cls(op.operation, op.target, errno, message, op)

    @property
    def name(self) -> str:
        """The metric label: the op's (``add_dest``), or the request's (``dump``)."""
        return self.op.name if self.op is not None else self.operation.replace(" ", "_").lower()


class IpvsUnavailable(LvsdError):
    """The kernel has no IPVS (module not loaded or not built) or we lack CAP_NET_ADMIN."""


class ListenError(LvsdError):
    """The HTTP API cannot listen on its configured address (in use, not local, unresolvable)."""

    def __init__(self, host: str, port: int, reason: str) -> None:
        self.host = host
        self.port = port
        self.reason = reason
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        super().__init__(f"daemon.listen: cannot listen on {address}: {reason}")
