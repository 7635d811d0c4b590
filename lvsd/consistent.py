"""Consistent hashing across directors (``consistent_hash = true``): pure planning for ``mh``.

Behind an ECMP router every director must build the same ``mh`` (Maglev) table, so that a
flow the router moves to another director reaches the same real server there. The kernel
builds the table from three inputs, and this module keeps each equal on every director:

* **the destination order.** The kernel adds a destination at the *head* of the service's
  list and ``mh`` fills its slots walking that list, so the order decides who wins a
  contested slot. lvsd adds destinations in address order (the list, newest first, is then
  highest address first) and, when the kernel's order is another, deletes and re-adds the
  destinations in front of the longest tail that is already right. A deleted destination
  with connections waits in the kernel's trash and is taken back by the re-add, connections
  and counters included;
* **each destination's last non-zero weight** (``last_weight``), which the kernel keeps
  through weight 0 and does not report. A destination is always added at its configured
  weight, and one that must be out of rotation is set to 0 right after, in the same batch;
  one at weight 0 whose last weight lvsd does not know to be the configured one is set to
  it and back to 0. lvsd remembers the last weights in its state file;
* **the table size** (a kernel build option) and the ``mh-fallback`` and ``mh-port`` flags.

``fingerprint`` hashes these inputs, so directors can be compared from /status or metrics.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from lvsd.model import (
    SVC_F_SCHED1,
    SVC_F_SCHED2,
    AddDest,
    DeleteDest,
    Dest,
    DestKey,
    EditDest,
    Op,
    ServiceKey,
    VirtualService,
)
from lvsd.spec import Config, ServerRef, ServiceSpec

MH_FLAGS = SVC_F_SCHED1 | SVC_F_SCHED2  # mh-fallback, mh-port: what the lookup depends on
MH_TABLE_SIZES = (251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071)
DEFAULT_TAB_INDEX = 12  # CONFIG_IP_VS_MH_TAB_INDEX's default; Debian's kernels keep it


def table_size(tab_index: int) -> int | None:
    """The ``mh`` table size a kernel built with ``CONFIG_IP_VS_MH_TAB_INDEX`` uses."""
    position = tab_index - 8
    return MH_TABLE_SIZES[position] if 0 <= position < len(MH_TABLE_SIZES) else None


def add_order_key(key: DestKey) -> tuple[int, int, int]:
    return (key.address.version, int(key.address), key.port)


def canonical_order(dests: Iterable[Dest]) -> tuple[Dest, ...]:
    """``dests`` as the kernel lists them once lvsd added them in address order: the list
    is newest first, so the highest address comes first."""
    return tuple(sorted(dests, key=lambda dest: add_order_key(dest.key), reverse=True))


@dataclass(frozen=True, slots=True)
class Hashing:
    """What the planner needs for the consistent-hash services beyond the desired table: the
    configured weight of each of their servers, and the last non-zero weight lvsd gave or
    saw each one have (the kernel builds the table from it)."""

    weights: Mapping[ServiceKey, Mapping[DestKey, int]] = field(default_factory=dict)
    last: Mapping[ServerRef, int] = field(default_factory=dict)

    def __contains__(self, key: object) -> bool:
        return key in self.weights

    @property
    def refs(self) -> frozenset[ServerRef]:
        return frozenset((service, dest) for service, dests in self.weights.items()
                         for dest in dests)


NO_HASHING = Hashing()


def hashing_of(config: Config, last: Mapping[ServerRef, int]) -> Hashing:
    return Hashing({spec.key: configured_weights(spec) for spec in config.services
                    if spec.consistent_hash}, last)


def configured_weights(spec: ServiceSpec) -> dict[DestKey, int]:
    weights = {server.key: server.dest.weight for server in spec.servers}
    if spec.sorry_server is not None:
        weights[spec.sorry_server.key] = spec.sorry_server.weight
    return weights


@dataclass(frozen=True, slots=True)
class DestOps:
    deletes: list[Op]
    writes: list[Op]
    seen: dict[ServerRef, int]  # non-zero weights the service's destinations have now


def dest_ops(want: VirtualService, have: VirtualService | None, hashing: Hashing) -> DestOps:
    """The destination ops that make ``have`` (as the kernel lists it) into ``want`` (in
    canonical order) with the weight history every director shares. Deletes come first,
    then the adds (tail first, each followed by its edit to weight 0 if it is down), then
    the edits of the destinations that stay in place."""
    key = want.key
    weights = hashing.weights.get(key, {})
    listed = have.dests if have is not None else ()
    wanted = {dest.key for dest in want.dests}
    seen = {(key, dest.key): dest.weight for dest in listed if dest.weight > 0}
    deletes: list[Op] = [DeleteDest(key, dest.key) for dest in listed if dest.key not in wanted]
    kept = [dest for dest in listed if dest.key in wanted]
    in_place = _common_tail(kept, want.dests)
    to_add = want.dests[:len(want.dests) - in_place]
    current = {dest.key: dest for dest in kept}
    writes: list[Op] = []
    for dest in reversed(to_add):
        old = current.get(dest.key)
        if old is not None:
            deletes.append(DeleteDest(key, dest.key))
        slots_weight = weights.get(dest.key) or _known_last(key, old, hashing) or dest.weight
        writes.append(AddDest(key, dest.with_weight(slots_weight)))
        if dest.weight != slots_weight:
            writes.append(EditDest(key, dest))
    for dest in want.dests[len(want.dests) - in_place:]:
        old = current[dest.key]
        configured = weights.get(dest.key, 0)
        if dest.weight == 0 and configured and _known_last(key, old, hashing) != configured:
            writes.append(EditDest(key, dest.with_weight(configured)))
            writes.append(EditDest(key, dest))
        elif old != dest:
            writes.append(EditDest(key, dest))
    return DestOps(deletes, writes, seen)


def _common_tail(kept: Sequence[Dest], want: Sequence[Dest]) -> int:
    count = 0
    while (count < len(kept) and count < len(want)
           and kept[-1 - count].key == want[-1 - count].key):
        count += 1
    return count


def _known_last(service: ServiceKey, dest: Dest | None, hashing: Hashing) -> int | None:
    if dest is None:
        return None
    if dest.weight > 0:
        return dest.weight
    return hashing.last.get((service, dest.key))


def last_weights_after(
    last: Mapping[ServerRef, int],
    seen: Mapping[ServerRef, int],
    ops: Iterable[Op],
    failed: Collection[Op],
    hashed: Collection[ServiceKey],
    keep: Collection[ServerRef] | None = None,
) -> dict[ServerRef, int]:
    """The last non-zero weights after a pass: what the planned destinations had (``seen``),
    then every non-zero weight an accepted op of a consistent-hash service gave. ``keep``
    (after a full pass): only these servers are remembered."""
    after = dict(last)
    after.update(seen)
    for op in ops:
        if (isinstance(op, AddDest | EditDest) and op.dest.weight > 0 and op.service in hashed
                and op not in failed):
            after[(op.service, op.dest.key)] = op.dest.weight
    if keep is not None:
        after = {ref: weight for ref, weight in after.items() if ref in keep}
    return after


def fingerprint(vs: VirtualService, last: Mapping[ServerRef, int], size: int) -> str | None:
    """13 hex digits (52 bits, exact as a metric's float) over what the kernel builds the
    service's ``mh`` table and its lookups from: the table size, the mh flags, and each
    destination in list order with its last non-zero weight. None while the last weight of
    a destination at weight 0 is unknown to lvsd."""
    digest = hashlib.sha256(f"mh {size} {vs.service.sched_flags & MH_FLAGS}\n".encode())
    for dest in vs.dests:
        weight = dest.weight or last.get((vs.key, dest.key))
        if weight is None:
            return None
        digest.update(f"{dest.key} {weight}\n".encode())
    return digest.hexdigest()[:13]


@dataclass(frozen=True, slots=True)
class MhTableStatus:
    """A consistent-hash service's mh table as lvsd sees it, for /status and metrics."""

    key: ServiceKey
    name: str
    fingerprint: str | None  # None: not in the kernel, or a last weight unknown
    in_order: bool  # the kernel lists the destinations in canonical order
    table_size: int


def mh_tables(config: Config, kernel: Mapping[ServiceKey, VirtualService],
              last: Mapping[ServerRef, int], size: int) -> tuple[MhTableStatus, ...]:
    tables: list[MhTableStatus] = []
    for spec in config.services:
        if not spec.consistent_hash:
            continue
        vs = kernel.get(spec.key)
        if vs is None:
            tables.append(MhTableStatus(spec.key, spec.name, None, False, size))
            continue
        in_order = [d.key for d in vs.dests] == [d.key for d in canonical_order(vs.dests)]
        tables.append(MhTableStatus(spec.key, spec.name, fingerprint(vs, last, size), in_order,
                                    size))
    return tuple(tables)
