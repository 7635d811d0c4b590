"""The order ``ipvsadm -S`` and ``ipvsadm -L`` print a table in.

ipvsadm sorts services and real servers before printing. Its comparators (libipvs
``ipvs_cmp_services``/``ipvs_cmp_dests``) subtract unsigned 32-bit numbers and read the result
as a signed int, so 10.0.0.3 sorts *after* 200.0.0.254, and glibc's merge sort turns the
resulting cycles into an order that depends on the kernel's dump order. ``ipvsadm_order``
reproduces this exactly, which is what makes lvsd's output byte-identical with ipvsadm's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from lvsd.model import Address, Dest, DestKey, Family, ServiceKey, Table, VirtualService

T = TypeVar("T")


def int32(value: int) -> int:
    """An unsigned difference read as a C ``int``, as ipvsadm's comparators do."""
    value &= 0xFFFFFFFF
    return value - 0x1_0000_0000 if value & 0x8000_0000 else value


def _words(address: Address | None) -> tuple[int, int, int, int]:
    """The address as libipvs's ``union nf_inet_addr``: four host-order 32-bit words."""
    if address is None:
        return (0, 0, 0, 0)
    if address.version == 4:
        return (int(address), 0, 0, 0)
    value = int(address)
    return (value >> 96, (value >> 64) & 0xFFFFFFFF, (value >> 32) & 0xFFFFFFFF,
            value & 0xFFFFFFFF)


def _compare_addresses(family: Family, a: tuple[int, ...], b: tuple[int, ...]) -> int:
    if family is Family.INET6:
        for wa, wb in zip(a, b, strict=True):
            r = int32(wa - wb)
            if r:
                return r
        return 0
    return int32(a[0] - b[0])


def _service_sort_key(key: ServiceKey) -> tuple[int, ...]:
    return (key.fwmark, int(key.family), int(key.protocol), *_words(key.address), key.port)


def _compare_services(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    """libipvs ``ipvs_cmp_services`` over ``_service_sort_key`` tuples."""
    r = int32(a[0] - b[0])
    if r:
        return r
    if a[1] != b[1]:
        return a[1] - b[1]
    if a[2] != b[2]:
        return a[2] - b[2]
    r = _compare_addresses(Family(a[1]), a[3:7], b[3:7])
    return r if r else a[7] - b[7]


def _dest_sort_key(key: DestKey) -> tuple[int, ...]:
    return (int(Family.of(key.address)), *_words(key.address), key.port)


def _compare_dests(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    """libipvs ``ipvs_cmp_dests``: the first entry's family decides how much address counts."""
    r = _compare_addresses(Family(a[0]), a[1:5], b[1:5])
    return r if r else a[5] - b[5]


def _glibc_merge_sort(items: list[tuple[tuple[int, ...], T]],
                      compare: Callable[[tuple[int, ...], tuple[int, ...]], int],
                      ) -> list[tuple[tuple[int, ...], T]]:
    """glibc 2.36 ``qsort``: top-down merge sort, first half ``n/2``, ties taken from the left."""
    n = len(items)
    if n <= 1:
        return list(items)
    left = _glibc_merge_sort(items[: n // 2], compare)
    right = _glibc_merge_sort(items[n // 2 :], compare)
    merged: list[tuple[tuple[int, ...], T]] = []
    i = j = 0
    while i < len(left) and j < len(right):
        if compare(left[i][0], right[j][0]) <= 0:
            merged.append(left[i])
            i += 1
        else:
            merged.append(right[j])
            j += 1
    merged.extend(left[i:])
    merged.extend(right[j:])
    return merged


def _is_total_order(keys: Sequence[tuple[int, ...]], wrapping: Sequence[int],
                    family_index: int | None) -> bool:
    """True when no subtraction in the comparator can wrap, so it is a plain numeric order."""
    if not keys:
        return True
    if family_index is not None and len({k[family_index] for k in keys}) > 1:
        return False
    for index in wrapping:
        values = [k[index] for k in keys]
        if max(values) - min(values) >= 2**31:
            return False
    return True


def _ipvsadm_sorted(items: Sequence[T], sort_key: Callable[[T], tuple[int, ...]],
                    compare: Callable[[tuple[int, ...], tuple[int, ...]], int],
                    wrapping: Sequence[int], family_index: int | None) -> list[T]:
    keyed = [(sort_key(item), item) for item in items]
    if _is_total_order([k for k, _ in keyed], wrapping, family_index):
        # Keys are unique, so any correct sort gives the one order the merge sort gives.
        return [item for _, item in sorted(keyed, key=lambda pair: pair[0])]
    return [item for _, item in _glibc_merge_sort(keyed, compare)]


def ipvsadm_order(table: Table) -> Table:
    """The table in the order ``ipvsadm -S``/``-L`` prints it, given it is in kernel dump order."""
    return Table(tuple(VirtualService(vs.service, dests_in_ipvsadm_order(vs.dests))
                       for vs in services_in_ipvsadm_order(table.services)), table.timeouts)


def services_in_ipvsadm_order(services: Sequence[VirtualService]) -> list[VirtualService]:
    """The services in ipvsadm's order (their real servers as they are)."""
    return _ipvsadm_sorted(services, lambda vs: _service_sort_key(vs.key), _compare_services,
                           (0, 3, 4, 5, 6), None)


def dests_in_ipvsadm_order(dests: Sequence[Dest]) -> tuple[Dest, ...]:
    """One service's real servers in ipvsadm's order: ``ipvsadm_order`` a service at a time,
    for work done in slices (``lvsd.pacing``)."""
    return tuple(_ipvsadm_sorted(dests, lambda d: _dest_sort_key(d.key), _compare_dests,
                                 (1, 2, 3, 4), 0))
