"""The in-memory backend refuses what the kernel refuses, with the kernel backend's words."""

from __future__ import annotations

import errno

import pytest

from lvsd.errors import IpvsError
from lvsd.ipvs.fake import FakeIpvs
from lvsd.ipvs.memory import MemoryTable
from lvsd.ipvs.reasons import reason
from lvsd.model import (
    AddDest,
    AddService,
    DeleteDest,
    DeleteService,
    Dest,
    DestKey,
    EditDest,
    EditService,
    Op,
    Protocol,
    Service,
    ServiceKey,
    parse_address,
)

WEB = ServiceKey.virtual(Protocol.TCP, "192.0.2.100", 80)
RS = DestKey(parse_address("192.0.2.11"), 80)


@pytest.mark.parametrize(("op", "code"), [
    (AddService(Service(WEB, "nope")), errno.ENOENT),
    (EditService(Service(WEB, "rr")), errno.ESRCH),
    (DeleteService(WEB), errno.ESRCH),
    (AddDest(WEB, Dest(RS)), errno.ESRCH),
    (EditDest(WEB, Dest(RS)), errno.ESRCH),
    (DeleteDest(WEB, RS), errno.ESRCH),
])
def test_a_refused_op_names_itself_like_the_kernel_backend(op: Op, code: int) -> None:
    with pytest.raises(IpvsError) as caught:
        MemoryTable().execute(op)
    error = caught.value
    assert (error.op, error.errno, error.name) == (op, code, op.name)
    assert (error.operation, error.target, error.reason) == (op.operation, op.target,
                                                             reason(op, code))
    assert str(error) == f"{op.operation} {op.target}: {reason(op, code)} (errno {code})"


async def test_a_vetoed_op_fails_in_the_same_form() -> None:
    backend = FakeIpvs()
    backend.fail = lambda op: errno.ENOMEM
    add = AddService(Service(WEB, "rr"))
    (error,) = await backend.apply([add])
    assert (error.op, error.operation, error.target, error.reason) == (
        add, "add service", str(WEB), "cannot allocate memory")


async def test_an_edit_of_a_missing_destination_is_enoent() -> None:
    table = MemoryTable()
    table.execute(AddService(Service(WEB, "rr")))
    with pytest.raises(IpvsError) as caught:
        table.execute(EditDest(WEB, Dest(RS)))
    assert caught.value.reason == "no such destination"
