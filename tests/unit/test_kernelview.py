"""The kernel view: follows accepted ops, and backs off after failed passes."""

from __future__ import annotations

import errno

from lvsd.errors import IpvsError
from lvsd.kernelview import BACKOFF_MAX, KernelView
from lvsd.model import (
    AddDest,
    AddService,
    Dest,
    DestKey,
    Protocol,
    Service,
    ServiceKey,
    parse_address,
)

WEB = ServiceKey.virtual(Protocol.TCP, "192.0.2.100", 80)
RS = DestKey(parse_address("192.0.2.11"), 80)


def test_failed_passes_back_off_doubling_to_the_maximum() -> None:
    view = KernelView()
    delays = [view.failed("refused", unknown=False) for _ in range(8)]
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, BACKOFF_MAX, BACKOFF_MAX, BACKOFF_MAX]
    status = view.status()
    assert not status.in_sync and status.consecutive_failures == 8
    assert status.last_error == "refused" and status.failed_passes == 8
    view.succeeded()
    assert view.status().in_sync and view.status().failed_passes == 8
    assert view.failed("again", unknown=False) == 1.0


def test_only_the_ops_the_kernel_accepted_enter_the_view() -> None:
    view = KernelView()
    add = AddService(Service(WEB, "nope"))
    dest = AddDest(WEB, Dest(RS))
    view.applied([add, dest], [IpvsError.of(add, errno.ENOENT, "x"),
                               IpvsError.of(dest, errno.ESRCH, "y")])
    assert view.service(WEB) is None
    ok = AddService(Service(WEB, "rr"))
    view.applied([ok, dest], [])
    served = view.service(WEB)
    assert served is not None and [d.key for d in served.dests] == [RS]


def test_an_error_without_an_op_leaves_the_view_unknown() -> None:
    view = KernelView()
    view.stale = False
    view.applied([], [IpvsError("dump", "table", errno.EIO, "i/o error")])
    assert view.stale
