"""The exceptions lvsd raises; the CLI and the daemon turn them into exit codes and log events."""

from __future__ import annotations

from dataclasses import dataclass


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
    """A netlink operation on the IPVS table failed."""

    def __init__(self, operation: str, target: str, errno: int, message: str) -> None:
        self.operation = operation
        self.target = target
        self.errno = errno
        self.reason = message
        super().__init__(f"{operation} {target}: {message} (errno {errno})")


class IpvsUnavailable(LvsdError):
    """The kernel has no IPVS (module not loaded or not built) or we lack CAP_NET_ADMIN."""
