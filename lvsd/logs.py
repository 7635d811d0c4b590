"""Logging: one key-value event per line, JSON for journald and pipes, readable on a terminal.

Every module takes its logger from :func:`get_logger` and logs events, not sentences::

    log = get_logger(__name__)
    log.info("health_change", service="tcp/192.0.2.1:80", server="198.51.100.7:80",
             status="down", reason="refused", latency_ms=1.2)

:func:`configure` is called once by the CLI before anything logs. Loggers taken earlier (at
import time) pick the configuration up on their next call.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, MutableMapping
from typing import Any, Literal, TextIO, cast

import structlog
from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger

LogFormat = Literal["auto", "json", "console"]

LEVELS: dict[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}

# syslog priorities, for journald's "<N>" line prefix (SyslogLevelPrefix=, on by default).
_SYSLOG_PRIORITY: dict[str, int] = {
    "debug": 7,
    "info": 6,
    "warning": 4,
    "error": 3,
    "critical": 2,
}

# Libraries (aiohttp, pyroute2, asyncio) log through the stdlib; only their warnings and
# errors matter to an operator, their info lines would drown ours.
_STDLIB_MIN_LEVEL = logging.WARNING

_LEADING_KEYS = ("timestamp", "level", "logger", "event")


def parse_level(level: str | int) -> int:
    """``"info"`` or ``logging.INFO`` → ``logging.INFO``; ValueError for anything else."""
    if isinstance(level, int):
        if level not in LEVELS.values():
            raise ValueError(f"unknown log level {level}")
        return level
    try:
        return LEVELS[level.strip().lower()]
    except KeyError:
        names = ", ".join(name for name in LEVELS if name != "warn")
        raise ValueError(f"unknown log level {level!r} (expected one of {names})") from None


def get_logger(name: str) -> FilteringBoundLogger:
    """The logger for module ``name``; its events carry ``logger=name``."""
    return cast(FilteringBoundLogger, structlog.get_logger(name))


class _NamedWriteLogger(structlog.WriteLogger):
    def __init__(self, file: TextIO, name: str) -> None:
        super().__init__(file)
        self.name = name


class _NamedWriteLoggerFactory:
    """Like ``structlog.WriteLoggerFactory``, keeping the name given to :func:`get_logger`."""

    def __init__(self, file: TextIO) -> None:
        self._file = file

    def __call__(self, *args: Any) -> _NamedWriteLogger:
        return _NamedWriteLogger(self._file, str(args[0]) if args else "lvsd")


def _add_logger_name(logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    name = getattr(logger, "name", None)
    if name is not None:
        event_dict.setdefault("logger", name)
    return event_dict


def is_journal_stream(stream: TextIO, environ: MutableMapping[str, str] | None = None) -> bool:
    """Whether ``stream`` is the journald connection systemd described in ``$JOURNAL_STREAM``."""
    env = os.environ if environ is None else environ
    value = env.get("JOURNAL_STREAM", "")
    device, _, inode = value.partition(":")
    try:
        status = os.fstat(stream.fileno())
        return (status.st_dev, status.st_ino) == (int(device), int(inode))
    except (OSError, ValueError, AttributeError):
        # Not a real file (a StringIO in tests) or a malformed variable.
        return False


def configure(
    level: str | int = "info",
    *,
    fmt: LogFormat = "auto",
    stream: TextIO | None = None,
    environ: MutableMapping[str, str] | None = None,
) -> None:
    """Set up structlog and route stdlib logging (at WARNING and above) through it.

    ``fmt="auto"`` renders JSON lines unless ``stream`` (default stderr) is a terminal. When
    the stream is journald's, each line gets a ``<N>`` priority prefix so ``journalctl -p``
    filters work. Safe to call again: the last call wins.
    """
    min_level = parse_level(level)
    out = sys.stderr if stream is None else stream
    use_json = fmt == "json" or (fmt == "auto" and not _isatty(out))

    renderer: Processor
    processors: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        _add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    if use_json:
        processors += [structlog.processors.format_exc_info, _leading_keys_first]
        # Addresses and paths in events are rendered by their str().
        renderer = structlog.processors.JSONRenderer(default=str, ensure_ascii=False)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=_isatty(out))
    if is_journal_stream(out, environ):
        renderer = _with_syslog_prefix(renderer)
    processors.append(renderer)

    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(min_level),
        logger_factory=_NamedWriteLoggerFactory(out),
        # Not cached: a logger taken at import time must follow a later configure() (and
        # structlog.testing.capture_logs in tests). Only events are logged, not probes, so
        # the few microseconds per call do not matter.
        cache_logger_on_first_use=False,
    )
    _route_stdlib_logging(max(min_level, _STDLIB_MIN_LEVEL))


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _leading_keys_first(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    ordered = {key: event_dict.pop(key) for key in _LEADING_KEYS if key in event_dict}
    ordered.update(event_dict)
    return ordered


def _with_syslog_prefix(renderer: Processor) -> Processor:
    def render(logger: WrappedLogger, method: str, event_dict: EventDict) -> str:
        priority = _SYSLOG_PRIORITY.get(str(event_dict.get("level", "info")), 6)
        line = renderer(logger, method, event_dict)
        return f"<{priority}>" + (line.decode() if isinstance(line, bytes) else str(line))

    return render


class _StructlogHandler(logging.Handler):
    """Hands stdlib log records to structlog as events named after the message."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            logger = get_logger(record.name)
            log_method = cast(Callable[..., Any], logger.log)
            extra = {"exc_info": record.exc_info} if record.exc_info else {}
            log_method(record.levelno, record.getMessage(), **extra)
        except Exception:
            self.handleError(record)


def _route_stdlib_logging(min_level: int) -> None:
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _StructlogHandler)]:
        root.removeHandler(handler)
    root.addHandler(_StructlogHandler(min_level))
    root.setLevel(min_level)
    logging.captureWarnings(True)
