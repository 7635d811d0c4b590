"""The role: pure parts (the address rule, keepalived's FIFO lines) and the watcher's FIFO
reading and change notifications; the kernel's address events are the VM's to test."""

from __future__ import annotations

import asyncio
import os
from ipaddress import ip_address
from pathlib import Path

import pytest

from lvsd.role import RoleChange, RoleWatcher, parse_fifo_line, role_of
from lvsd.trackfile import TrackFile

VIP = ip_address("198.51.100.10")
OTHER = ip_address("192.0.2.11")


def test_master_iff_a_role_address_is_present() -> None:
    assert role_of([OTHER, VIP], frozenset({VIP})) == "master"
    assert role_of([OTHER], frozenset({VIP})) == "backup"
    assert role_of([VIP], frozenset()) == "unknown"


@pytest.mark.parametrize(("line", "expected"), [
    ('INSTANCE "VI_1" MASTER 100', ("master", "instance 'VI_1' MASTER")),
    ('INSTANCE "VI_1" BACKUP 100\n', ("backup", "instance 'VI_1' BACKUP")),
    ('INSTANCE "VI_1" FAULT 0', ("backup", "instance 'VI_1' FAULT")),
    ('INSTANCE "VI_1" STOP 0', ("backup", "instance 'VI_1' STOP")),
    ('INSTANCE "VI 2" MASTER', ("master", "instance 'VI 2' MASTER")),
    ('GROUP "G1" MASTER', None),
    ('INSTANCE "VI_1" MASTER_PRIORITY 90', None),
    ('INSTANCE "VI_1" MASTER_RX_LOWER_PRI 90', None),
    ("garbage", None),
    ("", None),
])
def test_keepalived_fifo_lines(line: str, expected: tuple[str, str] | None) -> None:
    assert parse_fifo_line(line, None) == expected


def test_fifo_lines_of_other_instances_are_ignored_when_one_is_named() -> None:
    assert parse_fifo_line('INSTANCE "VI_2" MASTER 100', "VI_1") is None
    assert parse_fifo_line('INSTANCE "VI_1" MASTER 100', "VI_1") is not None


async def test_fifo_lines_change_the_role_in_order_and_subscribers_hear_each(
        tmp_path: Path) -> None:
    fifo = tmp_path / "notify.fifo"
    os.mkfifo(fifo)
    watcher = RoleWatcher(frozenset({VIP}), notify_fifo=fifo)
    heard: list[RoleChange] = []
    watcher.subscribe(heard.append)
    watcher.follow_fifo()
    await asyncio.sleep(0.05)
    writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    os.write(writer, b'INSTANCE "VI_1" MASTER 100\nINSTANCE "VI_1" BAC')
    os.write(writer, b'KUP 100\nINSTANCE "VI_1" MASTER 100\n')
    os.close(writer)  # keepalived going away is no end of the reader
    for _ in range(100):
        if len(heard) == 3:
            break
        await asyncio.sleep(0.01)
    assert [(c.role, c.previous, c.source) for c in heard] == [
        ("master", "unknown", "notify_fifo"), ("backup", "master", "notify_fifo"),
        ("master", "backup", "notify_fifo")]
    assert watcher.role == "master"
    writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    os.write(writer, b'INSTANCE "VI_1" FAULT 0\n')
    os.close(writer)
    for _ in range(100):
        if watcher.role == "backup":
            break
        await asyncio.sleep(0.01)
    assert watcher.role == "backup"
    watcher.stop()


def testtake_address_events_recompute_the_role_from_the_whole_set() -> None:
    watcher = RoleWatcher(frozenset({VIP}))
    heard: list[RoleChange] = []
    watcher.subscribe(heard.append)
    watcher.take_dump(frozenset({(2, OTHER)}), 1.0)
    watcher.take_address_event(True, (3, VIP), 2.0)
    watcher.take_address_event(True, (4, VIP), 3.0)  # a second holder: still master
    watcher.take_address_event(False, (3, VIP), 4.0)
    assert watcher.role == "master"
    watcher.take_address_event(False, (4, VIP), 5.0)
    assert [(c.role, c.at) for c in heard] == [("backup", 1.0), ("master", 2.0),
                                               ("backup", 5.0)]


def test_a_subscriber_that_raises_does_not_stop_the_others() -> None:
    watcher = RoleWatcher(frozenset({VIP}))
    heard: list[str] = []

    def broken(change: RoleChange) -> None:
        raise RuntimeError("bug")

    watcher.subscribe(broken)
    watcher.subscribe(lambda change: heard.append(change.role))
    watcher.take_dump(frozenset({(1, VIP)}), 1.0)
    assert heard == ["master"]


def test_the_track_file_holds_1_while_a_service_is_below_quorum(tmp_path: Path) -> None:
    track = TrackFile(tmp_path / "lvsd.track")
    track.update([])
    assert (tmp_path / "lvsd.track").read_text() == "0\n"
    track.update(["web"])
    assert (tmp_path / "lvsd.track").read_text() == "1\n"
    track.update([])
    assert (tmp_path / "lvsd.track").read_text() == "0\n"


def test_a_track_file_that_cannot_be_written_is_retried_not_fatal(tmp_path: Path) -> None:
    track = TrackFile(tmp_path / "missing-dir" / "lvsd.track")
    track.update(["web"])
    assert track.value is None
    (tmp_path / "missing-dir").mkdir()
    track.update(["web"])
    assert (tmp_path / "missing-dir" / "lvsd.track").read_text() == "1\n"
