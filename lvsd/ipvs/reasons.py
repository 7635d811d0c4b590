"""Why the kernel refused an IPVS operation, in words: one table for the kernel backend and the
in-memory one, so both report an error alike (``IpvsError.of(op, errno, reason(op, errno))``)."""

from __future__ import annotations

import errno
import os
from typing import assert_never

from lvsd.errors import IpvsError
from lvsd.model import (
    AddDest,
    AddService,
    DeleteDest,
    DeleteService,
    EditDest,
    EditService,
    Op,
    SetTimeouts,
    StartSyncDaemon,
    StopSyncDaemon,
    SyncOp,
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


def sync_reason(op: SyncOp, code: int) -> str:
    """What ``code`` means for starting or stopping a sync daemon (``ip_vs_sync.c``)."""
    match op:
        case StartSyncDaemon(daemon):
            if code == errno.EEXIST:
                return f"a {daemon.state.label} sync daemon is running already"
            if code == errno.ENODEV:
                return f"no interface {daemon.interface!r} (or it has no IPv4 address)"
            if code == errno.EINVAL:
                return ("refused: the group is not multicast, or the namespace has "
                        "mixed-family destinations, which the sync protocol cannot carry")
        case StopSyncDaemon(state):
            if code == errno.ESRCH:
                return f"no {state.label} sync daemon is running"
        case _:
            assert_never(op)
    if code == errno.EPERM:
        return "operation not permitted (needs CAP_NET_ADMIN)"
    return os.strerror(code).lower()


def sync_error(op: SyncOp, code: int, detail: str = "") -> IpvsError:
    """The error of a refused sync op: named by the op (``start_sync_daemon``)."""
    text = sync_reason(op, code)
    return IpvsError(op.operation, op.target, code, f"{text}: {detail}" if detail else text)
