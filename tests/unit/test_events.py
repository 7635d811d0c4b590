"""The event stream: ordered, numbered, bounded per subscriber; and the daemon feeds it."""

from __future__ import annotations

import asyncio
import errno
import json
from pathlib import Path
from typing import Any

import pytest

from lvsd.events import EventLog, Subscription, TooManySubscribers
from lvsd.model import EditDest
from tests.unit.test_daemon import RS1, RS2, config_text, feed, healthy_table, make


def lines(subscription: Subscription) -> list[dict[str, Any]]:
    taken: list[dict[str, Any]] = []
    while batch := subscription.take():
        taken.extend(json.loads(line) for line in batch)
    return taken


def daemon_lines(subscription: Subscription) -> list[dict[str, Any]]:
    """A daemon's events but its role's: the role watcher dumps this host's addresses after the
    first pass, and its answer lands whenever it comes."""
    return [event for event in lines(subscription) if event["type"] != "role"]


def test_each_subscriber_sees_every_later_event_once_in_publish_order() -> None:
    events = EventLog(clock=lambda: 1.5)
    events.publish("admin", {"n": 0})
    first = events.subscribe()
    for n in range(1, 4):
        events.publish("admin", {"n": n})
    second = events.subscribe()
    events.publish("reload", {"ok": True})
    assert [(e["seq"], e["type"], e.get("n")) for e in lines(first)] == [
        (2, "admin", 1), (3, "admin", 2), (4, "admin", 3), (5, "reload", None)]
    assert [e["seq"] for e in lines(second)] == [5]
    assert lines(first) == [], "taken lines are gone"
    assert json.loads(second.greeting()) == {"type": "subscribed", "after_seq": 4, "at": 1.5}


def test_a_slow_subscriber_loses_what_overflows_its_buffer_and_is_told_where() -> None:
    events = EventLog(buffer=3)
    slow, fast = events.subscribe(), events.subscribe()
    seen_fast: list[int] = []
    seen_slow: list[tuple[str, int | None, int | None]] = []
    for n in range(11):
        events.publish("admin", {"n": n})
        seen_fast.extend(e["seq"] for e in lines(fast))
        if n in (6, 10):  # the slow one reads twice
            seen_slow.extend((e["type"], e.get("seq"), e.get("first_seq"))
                             for e in lines(slow))
    assert seen_fast == list(range(1, 12)), "one subscriber's lag costs the others nothing"
    assert seen_slow == [("admin", 1, None), ("admin", 2, None), ("admin", 3, None),
                         ("lost", None, 4),
                         ("admin", 8, None), ("admin", 9, None), ("admin", 10, None),
                         ("lost", None, 11)]


def test_the_loss_marker_sits_where_the_events_went_missing() -> None:
    events = EventLog(buffer=2)
    slow = events.subscribe()
    for n in range(5):
        events.publish("health", {"n": n})
    taken = lines(slow)
    assert taken[:2] == [{"seq": 1, "at": taken[0]["at"], "type": "health", "n": 0},
                         {"seq": 2, "at": taken[1]["at"], "type": "health", "n": 1}]
    assert taken[2] == {"type": "lost", "count": 3, "first_seq": 3, "last_seq": 5}
    events.publish("health", {"n": 5})
    assert [e["seq"] for e in lines(slow)] == [6]


def test_a_loss_after_a_partial_read_comes_before_the_next_event() -> None:
    events = EventLog(buffer=2)
    slow = events.subscribe()
    for n in range(4):  # 1, 2 kept; 3, 4 lost
        events.publish("table", {"n": n})
    assert [e["seq"] for e in map(json.loads, slow.take(limit=1))] == [1]
    events.publish("table", {"n": 4})  # room again: the marker goes first, then 5
    assert [(e["type"], e.get("seq"), e.get("count")) for e in lines(slow)] == [
        ("table", 2, None), ("lost", None, 2), ("table", 5, None)]


def test_a_subscribers_memory_is_its_buffer_however_many_events() -> None:
    events = EventLog(buffer=100)
    idle = events.subscribe()
    for n in range(10_000):
        events.publish("health", {"n": n})
    taken = lines(idle)
    assert len(taken) == 101
    assert taken[-1] == {"type": "lost", "count": 9_900, "first_seq": 101, "last_seq": 10_000}


def test_an_unwatched_event_is_numbered_and_never_encoded() -> None:
    reads: list[float] = []

    def clock() -> float:
        reads.append(1.0)
        return 1.0

    events = EventLog(clock=clock)
    for _ in range(5):
        events.publish("admin", {"unencodable": object()})
    assert events.last_seq == 5 and reads == []
    with events.subscribe() as subscription:
        events.publish("admin", {"n": 1})
        assert [e["seq"] for e in lines(subscription)] == [6]
    assert events.subscribers == 0


def test_subscribers_are_limited_and_a_closed_one_frees_its_place() -> None:
    events = EventLog(max_subscribers=2)
    first = events.subscribe()
    events.subscribe()
    with pytest.raises(TooManySubscribers, match="2 event streams are open already"):
        events.subscribe()
    first.close()
    events.subscribe()


async def test_close_ends_every_stream_with_a_closed_line_after_what_was_waiting() -> None:
    events = EventLog()
    subscription = events.subscribe()
    waiter = asyncio.create_task(subscription.wait())
    await asyncio.sleep(0)
    assert not waiter.done()
    events.publish("reload", {"ok": True})
    await asyncio.wait_for(waiter, 1)
    events.close("lvsd is stopping")
    await asyncio.wait_for(subscription.wait(), 1)
    assert [e["type"] for e in lines(subscription)] == ["reload", "closed"]
    assert subscription.finished and events.subscribers == 0
    events.publish("reload", {"ok": True})
    assert lines(subscription) == []


# --- the daemon's hooks -------------------------------------------------------------------


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "lvsd.toml"
    path.write_text(config_text(tmp_path / "state", "192.0.2.11", "192.0.2.12"))
    return path


async def test_the_daemon_publishes_health_then_the_table_change_it_caused(
        config_file: Path) -> None:
    daemon, _backend = await make(config_file, healthy_table())
    subscription = daemon.events.subscribe()
    feed(daemon, RS2, ok=False, times=2)
    await daemon.reconcile(full=False)
    feed(daemon, RS2, ok=True, times=2)
    await daemon.reconcile(full=False)
    got = daemon_lines(subscription)
    assert [e["seq"] for e in got] == list(range(got[0]["seq"], got[0]["seq"] + 4))
    assert [(e["type"], e.get("status"), e.get("weight")) for e in got] == [
        ("health", "down", None), ("table", None, 0), ("health", "up", None), ("table", None, 1)]
    assert got[0] | {"at": 0, "seq": 0} == {
        "seq": 0, "at": 0, "type": "health", "service": "tcp:192.0.2.100:80", "name": "web",
        "server": "192.0.2.12:80", "status": "down", "previous": "up",
        "reason": "2 consecutive failures, last: refused", "latency_ms": 1.0, "check": "http"}
    assert got[1] | {"at": 0, "seq": 0} == {
        "seq": 0, "at": 0, "type": "table", "op": "edit_dest", "service": "tcp:192.0.2.100:80",
        "server": "192.0.2.12:80", "weight": 0, "ok": True}


async def test_a_refused_op_is_an_event_that_says_so(config_file: Path) -> None:
    daemon, backend = await make(config_file, healthy_table())
    backend.fail = lambda op: errno.ENOMEM if isinstance(op, EditDest) else None
    subscription = daemon.events.subscribe()
    feed(daemon, RS1, ok=False, times=2)
    await daemon.reconcile(full=False)
    table = [e for e in daemon_lines(subscription) if e["type"] == "table"]
    assert [(e["ok"], e["errno"], e["server"]) for e in table] == [
        (False, errno.ENOMEM, "192.0.2.11:80")]
    assert table[0]["error"]


async def test_reloads_are_events_the_good_before_its_table_changes_and_the_bad_with_problems(
        config_file: Path, tmp_path: Path) -> None:
    daemon, _backend = await make(config_file, healthy_table())
    subscription = daemon.events.subscribe()
    config_file.write_text(config_text(tmp_path / "state", "192.0.2.11", "192.0.2.12",
                                       weight2=5))
    assert await daemon.reload()
    config_file.write_text("[[services]]\naddress = 'nope'\nport = 80\n")
    assert not await daemon.reload()
    got = daemon_lines(subscription)
    assert [(e["type"], e["ok"]) for e in got] == [("reload", True), ("table", True),
                                                  ("reload", False)]
    assert got[0]["config"] == str(config_file) and got[0]["problems"] == []
    assert got[1]["server"] == str(RS2) and got[1]["weight"] == 5
    assert any("not an IP address" in problem for problem in got[2]["problems"])


async def test_stopping_the_daemon_closes_the_streams(config_file: Path) -> None:
    daemon, _backend = await make(config_file, healthy_table())
    subscription = daemon.events.subscribe()
    await daemon.stop()
    assert [e["type"] for e in lines(subscription)] == ["closed"]
    assert subscription.finished
