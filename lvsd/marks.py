"""Stable DR-path probe marks: one fwmark per (service, server), remembered, never renumbered.

A DR-path probe socket carries a mark that a one-server fwmark service forwards to exactly
that server. Once a server has a mark it keeps it while it stays configured, whatever is
inserted above it (Seesaw's ``markBackend``); new servers take the lowest free mark of
``lvsd.limits.probe_mark_range(base)``. The marks are saved in the state file across restarts.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from types import MappingProxyType

from lvsd import logs
from lvsd.limits import probe_mark_range
from lvsd.model import ServiceKey, Table
from lvsd.spec import Config, ServerRef

log = logs.get_logger(__name__)


def marks_in_use(config: Config, actual: Table, owned: Collection[ServiceKey]) -> set[int]:
    """Marks a probe service must not take: configured fwmark services, and fwmark services in
    the kernel that lvsd did not create (lvsd never touches another's service)."""
    taken = {spec.key.fwmark for spec in config.services if spec.key.is_fwmark}
    taken.update(vs.key.fwmark for vs in actual.services
                 if vs.key.is_fwmark and vs.key not in owned)
    return taken


class ProbeMarks:
    def __init__(self, base: int, remembered: Mapping[ServerRef, int] | None = None) -> None:
        self._base = base
        self._marks: dict[ServerRef, int] = dict(remembered or {})

    @property
    def marks(self) -> Mapping[ServerRef, int]:
        return MappingProxyType(self._marks)

    def restore(self, remembered: Mapping[ServerRef, int]) -> None:
        """Take the marks a state file remembers (at start, before any is assigned)."""
        self._marks = dict(remembered)

    def probe_services(self) -> set[ServiceKey]:
        """The keys of lvsd's own DR-probe services."""
        return {ServiceKey.mark(mark, svc.family) for (svc, _), mark in self._marks.items()}

    def assign(self, wanted: Iterable[ServerRef], *, base: int,
               taken: Collection[int] = ()) -> Mapping[ServerRef, int]:
        """Marks for exactly ``wanted`` (in order): each keeps its mark unless it lies outside
        the range or in ``taken`` (marks that belong to services lvsd did not create); new
        ones take the lowest free mark. Servers no longer wanted free theirs."""
        self.adopt(self.choose(wanted, base=base, taken=taken), base=base)
        return self.marks

    def choose(self, wanted: Iterable[ServerRef], *, base: int,
               taken: Collection[int] = ()) -> dict[ServerRef, int]:
        """The marks ``assign`` would give, without taking them (``adopt`` does)."""
        refs = list(dict.fromkeys(wanted))
        span = probe_mark_range(base)
        used = set(taken)
        kept: dict[ServerRef, int] = {}
        for ref in refs:
            mark = self._marks.get(ref)
            if mark is not None and mark in span and mark not in used:
                kept[ref] = mark
                used.add(mark)
        marks: dict[ServerRef, int] = {}
        candidate = base
        short = 0
        for ref in refs:
            mark = kept.get(ref)
            if mark is None:
                while candidate in used:
                    candidate += 1
                if candidate not in span:
                    short += 1
                    continue
                mark = candidate
                used.add(mark)
            marks[ref] = mark
        if short:
            log.error("dr_probe_marks_exhausted", servers=short, base=base, size=len(span),
                      detail="these servers' DR-path checks get no probe service")
        return marks

    def adopt(self, marks: Mapping[ServerRef, int], *, base: int) -> None:
        """Take ``marks`` (from ``choose``) as the marks in use."""
        self._base = base
        self._marks = dict(marks)
