"""The state file: versioned JSON; a corrupt file is moved aside and taken as empty."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from lvsd.model import DestKey, Protocol, ServiceKey, parse_address
from lvsd.statefile import VERSION, DaemonState, StateFile

WEB = ServiceKey.virtual(Protocol.TCP, "192.0.2.100", 80)
PROBE = ServiceKey.mark(0x4C560000)
RS1 = DestKey(parse_address("2001:db8::11"), 8080)


def test_what_is_stored_loads_back_equal(tmp_path: Path) -> None:
    state = DaemonState(frozenset({WEB, PROBE}), {(WEB, RS1): 0x4C560000}, {"drain": ["x"]},
                        {(WEB, RS1): 3, (WEB, DestKey(parse_address("192.0.2.1"), 80)): 65535})
    assert StateFile(tmp_path / "state.json").store(state)
    assert StateFile(tmp_path / "state.json").load() == state
    assert json.loads((tmp_path / "state.json").read_text())["version"] == VERSION


def test_a_version_2_file_without_mh_last_weights_is_read(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text('{"version": 2, "owned": [[2, 6, "192.0.2.100", 80, 0]]}\n')
    assert StateFile(path).load() == DaemonState(frozenset({WEB}))


def test_a_missing_file_is_an_empty_state(tmp_path: Path) -> None:
    assert StateFile(tmp_path / "state.json").load() == DaemonState()


def test_the_version_1_file_with_only_owned_is_read(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text('{"owned": [[2, 6, "192.0.2.100", 80, 0]]}\n')
    assert StateFile(path).load() == DaemonState(frozenset({WEB}))


@pytest.mark.parametrize("content", [
    b"\xff\xfe not utf-8",
    b"{truncated",
    b"[1, 2]",
    b'{"version": 99}',
    b'{"owned": [[2, 6, "not an address", 80, 0]]}',
    b'{"owned": [[2, 6, "192.0.2.1", true, 0]]}',
    b'{"owned": "all"}',
    b'{"probe_marks": [{"service": [2, 6, "192.0.2.1", 80, 0], "server": ["x", 1], "mark": 1}]}',
    b"[" * 100_000,
    b'{"mh_last_weights": [{"service": [2, 6, "192.0.2.1", 80, 0], "server": ["192.0.2.2", 80],'
    b' "weight": 0}]}',
    b'{"mh_last_weights": {"a": 1}}',
])
def test_a_corrupt_file_is_moved_aside_and_taken_as_empty(tmp_path: Path,
                                                           content: bytes) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(content)
    assert StateFile(path, clock=lambda: 1234.0).load() == DaemonState()
    assert not path.exists()
    assert (tmp_path / "state.json.corrupt-1234").read_bytes() == content


def test_an_unwritable_directory_is_reported_not_raised(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    assert not StateFile(tmp_path / "file" / "state.json").store(DaemonState(frozenset({WEB})))


async def test_a_store_in_a_thread_never_lands_over_a_later_store(tmp_path: Path) -> None:
    """The reload and the pass write the state file from a worker thread; an operator's
    change writes it at once. Whichever finishes last, the file holds the last asked."""
    path = tmp_path / "state.json"
    earlier = DaemonState(owned=frozenset({WEB}))
    later = DaemonState(owned=frozenset())
    for _ in range(20):  # either order of the thread and the loop
        file = StateFile(path)
        writing = asyncio.create_task(file.store_in_thread(earlier))
        await asyncio.sleep(0)  # the thread is started
        assert file.store(later)
        assert await writing
        assert StateFile(path).load() == later


async def test_a_failed_store_in_a_thread_is_tried_again(tmp_path: Path) -> None:
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")
    file = StateFile(blocked / "state.json")
    state = DaemonState(owned=frozenset({WEB}))
    assert not await file.store_in_thread(state)
    blocked.unlink()
    assert await file.store_in_thread(state), "the same state is written once it can be"
    assert StateFile(blocked / "state.json").load() == state
