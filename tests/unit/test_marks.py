"""ProbeMarks: one DR-probe mark per (service, server), remembered, never renumbered."""

from __future__ import annotations

from lvsd.limits import PROBE_MARK_SPAN
from lvsd.marks import ProbeMarks
from lvsd.model import DestKey, Protocol, ServiceKey, parse_address
from lvsd.spec import ServerRef

BASE = 1000


def ref(service: int, server: int) -> ServerRef:
    return (ServiceKey.virtual(Protocol.TCP, f"192.0.2.{service}", 80),
            DestKey(parse_address(f"198.51.100.{server}"), 80))


def test_new_servers_take_the_lowest_free_marks_in_order() -> None:
    marks = ProbeMarks(BASE)
    assert dict(marks.assign([ref(1, 1), ref(1, 2)], base=BASE)) == {
        ref(1, 1): BASE, ref(1, 2): BASE + 1}


def test_a_server_inserted_above_does_not_renumber_the_others() -> None:
    marks = ProbeMarks(BASE)
    marks.assign([ref(2, 1), ref(2, 2)], base=BASE)
    after = marks.assign([ref(1, 9), ref(2, 1), ref(2, 2)], base=BASE)
    assert after[ref(2, 1)] == BASE and after[ref(2, 2)] == BASE + 1
    assert after[ref(1, 9)] == BASE + 2


def test_a_removed_server_frees_its_mark_for_a_new_one() -> None:
    marks = ProbeMarks(BASE)
    marks.assign([ref(1, 1), ref(1, 2)], base=BASE)
    after = marks.assign([ref(1, 2), ref(1, 3)], base=BASE)
    assert after == {ref(1, 2): BASE + 1, ref(1, 3): BASE}


def test_remembered_marks_survive_a_restart_whatever_the_config_order() -> None:
    remembered = {ref(1, 1): BASE + 7, ref(1, 2): BASE + 3}
    marks = ProbeMarks(BASE, remembered)
    assert dict(marks.assign([ref(1, 2), ref(1, 1)], base=BASE)) == remembered


def test_a_mark_another_service_uses_is_never_given_or_kept() -> None:
    marks = ProbeMarks(BASE, {ref(1, 1): BASE})
    after = marks.assign([ref(1, 1), ref(1, 2)], base=BASE, taken={BASE, BASE + 1})
    assert after == {ref(1, 1): BASE + 2, ref(1, 2): BASE + 3}


def test_a_new_base_moves_every_mark_into_the_new_range() -> None:
    marks = ProbeMarks(BASE)
    marks.assign([ref(1, 1)], base=BASE)
    assert dict(marks.assign([ref(1, 1)], base=5000)) == {ref(1, 1): 5000}


def test_duplicated_remembered_marks_keep_only_the_first() -> None:
    marks = ProbeMarks(BASE, {ref(1, 1): BASE, ref(1, 2): BASE})
    after = marks.assign([ref(1, 1), ref(1, 2)], base=BASE)
    assert after == {ref(1, 1): BASE, ref(1, 2): BASE + 1}


def test_servers_beyond_the_range_get_no_mark() -> None:
    marks = ProbeMarks(BASE)
    taken = set(range(BASE, BASE + PROBE_MARK_SPAN - 1))
    after = marks.assign([ref(1, 1), ref(1, 2)], base=BASE, taken=taken)
    assert after == {ref(1, 1): BASE + PROBE_MARK_SPAN - 1}
