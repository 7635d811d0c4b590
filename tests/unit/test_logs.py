"""Log output: JSON lines on pipes and files (journald), colored key=value text on a terminal."""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import pty
import re
import warnings
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import pytest
import structlog

from lvsd import logs

ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.captureWarnings(False)


class Pipe:
    """A real pipe, as journald or `docker logs` would give us on stderr."""

    def __init__(self) -> None:
        read_fd, write_fd = os.pipe()
        self.reader = os.fdopen(read_fd, "r")
        self.writer: TextIO = os.fdopen(write_fd, "w")

    def lines(self) -> list[str]:
        self.writer.close()
        return self.reader.read().splitlines()

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines()]


@pytest.fixture
def pipe() -> Iterator[Pipe]:
    p = Pipe()
    yield p
    p.reader.close()
    if not p.writer.closed:
        p.writer.close()


def test_json_lines_when_not_a_terminal(pipe: Pipe) -> None:
    logs.configure("info", stream=pipe.writer)
    logs.get_logger("lvsd.health").info(
        "health_change",
        service="tcp/192.0.2.1:80",
        server=ipaddress.ip_address("198.51.100.7"),
        status="down",
        reason="refused",
        latency_ms=1.5,
    )
    (record,) = pipe.records()
    assert list(record)[:4] == ["timestamp", "level", "logger", "event"]
    assert record["level"] == "info"
    assert record["logger"] == "lvsd.health"
    assert record["event"] == "health_change"
    assert record["service"] == "tcp/192.0.2.1:80"
    assert record["server"] == "198.51.100.7"
    assert (record["status"], record["reason"], record["latency_ms"]) == ("down", "refused", 1.5)
    timestamp = datetime.fromisoformat(record["timestamp"])
    assert timestamp.utcoffset() is not None and timestamp.utcoffset().total_seconds() == 0


def test_level_filters_events(pipe: Pipe) -> None:
    logs.configure("warning", stream=pipe.writer)
    log = logs.get_logger("lvsd.test")
    log.debug("hidden_debug")
    log.info("hidden_info")
    log.warning("shown_warning")
    log.error("shown_error")
    assert [r["event"] for r in pipe.records()] == ["shown_warning", "shown_error"]


def test_a_logger_taken_before_configure_follows_it(pipe: Pipe) -> None:
    early = logs.get_logger("lvsd.early")
    logs.configure("debug", stream=pipe.writer)
    early.debug("after_configure", n=1)
    (record,) = pipe.records()
    assert (record["logger"], record["event"], record["n"]) == ("lvsd.early", "after_configure", 1)


def test_stdlib_warnings_and_errors_are_routed_info_is_not(pipe: Pipe) -> None:
    logs.configure("debug", stream=pipe.writer)
    logging.getLogger("aiohttp.access").info("GET /metrics 200")
    logging.getLogger("pyroute2.ipvs").warning("odd reply %d", 7)
    try:
        raise ConnectionResetError("peer went away")
    except ConnectionResetError:
        logging.getLogger("aiohttp.server").exception("handler failed")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("old option", DeprecationWarning, stacklevel=1)
    records = pipe.records()
    assert [(r["logger"], r["level"]) for r in records] == [
        ("pyroute2.ipvs", "warning"),
        ("aiohttp.server", "error"),
        ("py.warnings", "warning"),
    ]
    assert records[0]["event"] == "odd reply 7"
    assert "ConnectionResetError: peer went away" in records[1]["exception"]
    assert "old option" in records[2]["event"]


def test_exceptions_are_one_json_line(pipe: Pipe) -> None:
    logs.configure("info", stream=pipe.writer)
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        logs.get_logger("lvsd.daemon").exception("reconcile_failed", service="fwm/7")
    (record,) = pipe.records()
    assert record["event"] == "reconcile_failed"
    assert record["exception"].startswith("Traceback")
    assert record["exception"].rstrip().endswith("ZeroDivisionError: division by zero")


def read_terminal(master: int) -> str:
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO once the other side is closed
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode()


@pytest.fixture
def terminal() -> Iterator[tuple[int, TextIO]]:
    master, slave = pty.openpty()
    stream = os.fdopen(slave, "w")
    yield master, stream
    if not stream.closed:
        stream.close()
    os.close(master)


def test_readable_colored_text_on_a_terminal(terminal: tuple[int, TextIO]) -> None:
    master, stream = terminal
    assert stream.isatty()
    logs.configure("info", stream=stream)
    logs.get_logger("lvsd.health").info(
        "health_change", service="tcp/192.0.2.1:80", server="198.51.100.7:80", reason="refused"
    )
    stream.close()
    output = read_terminal(master)
    assert ANSI.search(output), "a terminal gets colors"
    (line,) = ANSI.sub("", output).splitlines()
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)
    assert "[info" in line
    assert "health_change" in line
    assert "[lvsd.health]" in line
    assert "server=198.51.100.7:80" in line
    assert "service=tcp/192.0.2.1:80" in line
    assert "reason=refused" in line


def test_format_can_be_forced_either_way(terminal: tuple[int, TextIO], pipe: Pipe) -> None:
    master, stream = terminal
    logs.configure("info", fmt="json", stream=stream)
    logs.get_logger("t").info("forced_json", k=1)
    stream.close()
    (line,) = read_terminal(master).splitlines()
    assert json.loads(line)["event"] == "forced_json"

    logs.configure("info", fmt="console", stream=pipe.writer)
    logs.get_logger("t").info("forced_console", k=2)
    (text,) = pipe.lines()
    assert not ANSI.search(text), "no colors when the console format goes to a pipe"
    assert "forced_console" in text and "k=2" in text


def test_journald_gets_a_syslog_priority_prefix(tmp_path: Path) -> None:
    path = tmp_path / "journal"
    with path.open("w") as stream:
        status = os.fstat(stream.fileno())
        env = {"JOURNAL_STREAM": f"{status.st_dev}:{status.st_ino}"}
        logs.configure("info", stream=stream, environ=env)
        log = logs.get_logger("lvsd.ipvs")
        log.info("table_change", op="add_dest", service="tcp/192.0.2.1:80")
        log.warning("netlink_retry")
        log.error("netlink_failed")
    lines = path.read_text().splitlines()
    assert [line[:4] for line in lines] == ["<6>{", "<4>{", "<3>{"]
    assert json.loads(lines[0][3:])["op"] == "add_dest"


def test_no_prefix_on_a_stream_that_is_not_the_journal(tmp_path: Path, pipe: Pipe) -> None:
    other = tmp_path / "other"
    other.write_text("")
    status = os.stat(other)
    env = {"JOURNAL_STREAM": f"{status.st_dev}:{status.st_ino}"}
    logs.configure("info", stream=pipe.writer, environ=env)
    logs.get_logger("t").info("plain")
    (line,) = pipe.lines()
    assert line.startswith("{")


@pytest.mark.parametrize(("given", "expected"), [("INFO", 20), ("warn", 30), (" debug ", 10)])
def test_parse_level_accepts_names(given: str, expected: int) -> None:
    assert logs.parse_level(given) == expected


@pytest.mark.parametrize("given", ["verbose", "", 5])
def test_parse_level_rejects_unknown_levels(given: str | int) -> None:
    with pytest.raises(ValueError, match="unknown log level"):
        logs.parse_level(given)
