"""Why the kernel refused an IPVS operation, in words: one table for the kernel backend and the
in-memory one, so both report an error alike (``IpvsError.of(op, errno, reason(op, errno))``)."""

from __future__ import annotations

import errno
import os
from typing import assert_never

from lvsd.model import (
    AddDest,
    AddService,
    DeleteDest,
    DeleteService,
    EditDest,
    EditService,
    Op,
    SetTimeouts,
)


def reason(op: Op, code: int) -> str:
    """What ``code`` means for ``op``: IPVS reuses a handful of errnos for everything."""
    scheduler: str | None
    pe_name: str | None
    match op:
        case AddService(service) | EditService(service):
            on_service, scheduler, pe_name = True, service.scheduler, service.pe_name
        case DeleteService():
            on_service, scheduler, pe_name = True, None, None
        case AddDest() | EditDest() | DeleteDest() | SetTimeouts():
            on_service, scheduler, pe_name = False, None, None
        case _:
            assert_never(op)
    if code == errno.ESRCH:
        return "no such virtual service"
    if code == errno.EEXIST:
        return "virtual service already exists" if on_service else "destination already exists"
    if code == errno.ENOENT:
        if scheduler is not None and pe_name:
            return f"scheduler {scheduler!r} or persistence engine {pe_name!r} not found"
        if scheduler is not None:
            return f"scheduler {scheduler!r} not found (no module ip_vs_{scheduler})"
        return "no such destination"
    if code == errno.EPERM:
        return "operation not permitted (needs CAP_NET_ADMIN)"
    if code == errno.ERANGE and isinstance(op, AddDest | EditDest):
        return "upper threshold is lower than lower threshold"
    return os.strerror(code).lower()
