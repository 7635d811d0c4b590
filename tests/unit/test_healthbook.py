"""The health book: several checks per server, rise/fall per probe, migration on reload."""

from __future__ import annotations

from lvsd.config import loads
from lvsd.health import Status
from lvsd.healthbook import HealthBook, combined
from lvsd.model import DestKey, Protocol, ServiceKey, parse_address
from lvsd.probe import CheckKey, ProbeReport, ProbeResult
from lvsd.spec import Config, ServerRef

WEB = ServiceKey.virtual(Protocol.TCP, "192.0.2.100", 80)
API = ServiceKey.virtual(Protocol.TCP, "192.0.2.101", 80)
RS1 = (WEB, DestKey(parse_address("192.0.2.11"), 80))
RS2 = (WEB, DestKey(parse_address("192.0.2.12"), 80))

TWO_CHECKS = """
[[services]]
address = "192.0.2.100"
port = 80
check = { type = "tcp", rise = 1, fall = 1 }
[[services.real_servers]]
address = "192.0.2.11"
checks = [{ type = "file", path = "/run/maintenance/rs11", rise = 1, fall = 1 }]
[[services.real_servers]]
address = "192.0.2.12"
"""


def book_of(config: Config, serving: bool = False,
            marks: dict[ServerRef, int] | None = None) -> HealthBook:
    book = HealthBook()
    book.rebuild(config, marks or {}, lambda ref: serving, now=1.0)
    return book


def report(key: CheckKey, ok: bool, *, inconclusive: bool = False) -> ProbeReport:
    return ProbeReport(key, ProbeResult(ok, "" if ok else "refused"), 0.0, 0.0, 0.0,
                       inconclusive)


def test_a_server_is_up_only_while_every_check_passes() -> None:
    book = book_of(loads(TWO_CHECKS))
    tcp, maintenance = book.checks_of(RS1)
    assert (tcp.spec.type, maintenance.spec.type) == ("tcp", "file")
    book.observe(report(tcp, True), now=2.0)
    assert book.status(RS1) is Status.UNKNOWN
    seen = book.observe(report(maintenance, True), now=2.0)
    assert seen is not None and [c.status for c in seen.servers] == [Status.UP]
    seen = book.observe(report(maintenance, False), now=3.0)
    assert seen is not None and [(c.ref, c.status) for c in seen.servers] == [(RS1, Status.DOWN)]
    assert book.status(RS1) is Status.DOWN


def test_a_probe_changing_while_another_check_is_down_moves_no_server() -> None:
    book = book_of(loads(TWO_CHECKS), serving=True)
    tcp, maintenance = book.checks_of(RS1)
    book.observe(report(maintenance, False), now=2.0)
    seen = book.observe(report(tcp, False), now=3.0)
    assert seen is not None and seen.state.status is Status.DOWN and seen.servers == ()


def test_an_inconclusive_report_changes_nothing() -> None:
    book = book_of(loads(TWO_CHECKS), serving=True)
    key = book.checks_of(RS2)[0]
    assert book.observe(report(key, False, inconclusive=True), now=2.0) is None
    assert book.status(RS2) is Status.UP and book.last_probe(key) is None


def test_a_report_for_a_removed_probe_is_ignored() -> None:
    book = book_of(loads(TWO_CHECKS))
    stale = book.checks_of(RS1)[1]
    without = TWO_CHECKS.replace(
        'checks = [{ type = "file", path = "/run/maintenance/rs11", rise = 1, fall = 1 }]\n', "")
    book.rebuild(loads(without), {}, lambda ref: False, now=2.0)
    assert len(book.checks_of(RS1)) == 1
    assert book.observe(report(stale, False), now=3.0) is None


def test_a_server_the_kernel_serves_starts_up_others_unknown() -> None:
    assert book_of(loads(TWO_CHECKS), serving=True).all_up()
    book = book_of(loads(TWO_CHECKS), serving=False)
    assert book.status(RS2) is Status.UNKNOWN and book.not_up == 3


def test_a_reload_keeps_the_state_and_key_of_an_unchanged_check() -> None:
    book = book_of(loads(TWO_CHECKS), serving=True)
    key = book.checks_of(RS2)[0]
    book.observe(report(key, False), now=2.0)
    above = TWO_CHECKS.replace("[[services]]", """[[services]]
address = "192.0.2.101"
port = 80
check = { type = "http", dr_path = true }
[[services.real_servers]]
address = "192.0.2.11"

[[services]]""", 1)
    book.rebuild(loads(above), {(API, RS1[1]): 7}, lambda ref: True, now=3.0)
    assert book.checks_of(RS2)[0] is key
    assert book.status(RS2) is Status.DOWN, "the server that failed stays down"


def test_a_changed_check_starts_afresh() -> None:
    book = book_of(loads(TWO_CHECKS), serving=False)
    key = book.checks_of(RS2)[0]
    book.observe(report(key, True), now=2.0)
    book.rebuild(loads(TWO_CHECKS.replace("fall = 1 }", "fall = 3 }", 1)), {},
                 lambda ref: False, now=3.0)
    assert book.checks_of(RS2)[0] != key
    assert book.status(RS2) is Status.UNKNOWN


def test_combined_status() -> None:
    assert combined([]) is Status.UP
    assert combined([Status.UP, Status.UNKNOWN]) is Status.UNKNOWN
    assert combined([Status.UNKNOWN, Status.DOWN, Status.UP]) is Status.DOWN


def test_a_rebuild_in_steps_yields_per_service_and_keeps_reports_taken_meanwhile() -> None:
    """A reload rebuilds the book in slices on the loop: probes that finish in between count."""
    two_services = TWO_CHECKS + """
[[services]]
address = "192.0.2.101"
port = 80
check = { type = "tcp", rise = 1, fall = 1 }
[[services.real_servers]]
address = "192.0.2.11"
"""
    config = loads(two_services)
    book = book_of(config)
    tcp, maintenance = book.checks_of(RS1)
    steps = book.rebuild_steps(config, {}, lambda ref: False, now=2.0)
    next(steps)  # the first service's keys are built; the book is still the old one
    assert book.observe(report(tcp, True), now=2.5) is not None
    assert sum(1 for _ in steps) == 1  # one more service, then the swap
    assert book.checks_of(RS1) == (tcp, maintenance)
    assert book.state(tcp).status is Status.UP
