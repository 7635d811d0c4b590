"""The systemd notification protocol (sd_notify) without libsystemd.

A service of ``Type=notify`` reports its state by sending newline-separated ``KEY=VALUE``
datagrams to the unix socket named in ``$NOTIFY_SOCKET``: ``READY=1`` once serving,
``RELOADING=1`` and ``READY=1`` around a reload, ``STOPPING=1`` on the way out, ``STATUS=`` for
``systemctl status``, and ``WATCHDOG=1`` at least once per ``WatchdogSec``. Outside systemd (a
terminal, a container) there is no ``$NOTIFY_SOCKET`` and every call is a quiet no-op.

The watchdog is fed by a task on the event loop, never by a thread: if the loop freezes, the
pings stop and systemd kills and restarts the daemon.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable, Mapping, MutableMapping

from lvsd.logs import get_logger

log = get_logger(__name__)

NOTIFY_SOCKET = "NOTIFY_SOCKET"
WATCHDOG_USEC = "WATCHDOG_USEC"
WATCHDOG_PID = "WATCHDOG_PID"

# PID 1 reads its notification socket promptly; a send that blocks longer than this means
# systemd itself is stuck, and waiting longer would only freeze our event loop with it.
_SEND_TIMEOUT_S = 1.0


def _socket_address(value: str) -> str | bytes | None:
    """Turn ``$NOTIFY_SOCKET`` into a ``sendto`` address; None if not a unix socket name."""
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        # Abstract namespace: a leading NUL byte instead of the "@".
        return b"\0" + value[1:].encode()
    return None


class Notifier:
    """Sends sd_notify messages to one socket; with no socket, does nothing.

    Build it with :meth:`from_environment` once at start-up. Every method returns whether
    the message was handed to systemd, and never raises: a daemon must not die because its
    supervisor went away.
    """

    def __init__(self, address: str | bytes | None) -> None:
        self._address = address
        self._socket: socket.socket | None = None

    @classmethod
    def from_environment(
        cls,
        environ: MutableMapping[str, str] | None = None,
        *,
        unset: bool = True,
    ) -> Notifier:
        """The notifier systemd asked for in ``$NOTIFY_SOCKET``.

        With ``unset`` (the default) the variable is removed from the environment, so child
        processes (exec health checks) cannot send notifications on our behalf. The watchdog
        variables are left for :func:`watchdog_interval`.
        """
        env = os.environ if environ is None else environ
        value = env.pop(NOTIFY_SOCKET, None) if unset else env.get(NOTIFY_SOCKET)
        if not value:
            return cls(None)
        address = _socket_address(value)
        if address is None:
            log.warning("notify_socket_unsupported", notify_socket=value)
        return cls(address)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def notify(self, *assignments: str) -> bool:
        """Send ``KEY=VALUE`` assignments as one datagram."""
        if self._address is None or not assignments:
            return False
        payload = "\n".join(assignments).encode()
        try:
            if self._socket is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                sock.settimeout(_SEND_TIMEOUT_S)
                self._socket = sock
            self._socket.sendto(payload, self._address)
        except OSError as exc:
            log.warning("sd_notify_failed", message=assignments[0], error=str(exc))
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """Start-up (or a reload) is complete: systemd finishes the start/reload job."""
        return self.notify("READY=1", *_status(status))

    def reloading(self, status: str | None = None) -> bool:
        """A reload has begun; answer with :meth:`ready` when it has finished or failed."""
        monotonic_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec}", *_status(status))

    def stopping(self, status: str | None = None) -> bool:
        """Shutdown has begun."""
        return self.notify("STOPPING=1", *_status(status))

    def status(self, text: str) -> bool:
        """One line shown by ``systemctl status``."""
        return self.notify(*_status(text))

    def watchdog(self) -> bool:
        """Tell systemd we are alive; needed at least once per ``WatchdogSec``."""
        return self.notify("WATCHDOG=1")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _status(text: str | None) -> tuple[str, ...]:
    if text is None:
        return ()
    # A newline would end the assignment and start a bogus one.
    return ("STATUS=" + " ".join(text.splitlines()),)


def watchdog_interval(
    environ: Mapping[str, str] | None = None, *, pid: int | None = None
) -> float | None:
    """The watchdog timeout in seconds that systemd set for this process, or None.

    ``$WATCHDOG_USEC`` holds the timeout; when ``$WATCHDOG_PID`` is set it names the process
    that must ping, and any other process (a child that inherited the environment) gets None.
    """
    env = os.environ if environ is None else environ
    usec_text = env.get(WATCHDOG_USEC)
    if not usec_text:
        return None
    pid_text = env.get(WATCHDOG_PID)
    if pid_text:
        try:
            if int(pid_text) != (os.getpid() if pid is None else pid):
                return None
        except ValueError:
            return None
    try:
        usec = int(usec_text)
    except ValueError:
        return None
    if usec <= 0:
        return None
    return usec / 1_000_000


async def feed_watchdog(
    notifier: Notifier,
    watchdog_s: float,
    *,
    alive: Callable[[], bool] | None = None,
) -> None:
    """Send ``WATCHDOG=1`` every ``watchdog_s / 2`` seconds, from the event loop, until cancelled.

    Because the ping runs as an ordinary task, it stops when the loop is blocked. ``alive``,
    when given, is asked before each ping; answering False skips the ping, so a daemon can
    also get restarted when its loop spins but its work has stalled.
    """
    period = watchdog_s / 2
    while True:
        if alive is None or alive():
            notifier.watchdog()
        else:
            log.warning("watchdog_ping_withheld", watchdog_s=watchdog_s)
        await asyncio.sleep(period)


def start_watchdog(
    notifier: Notifier,
    environ: Mapping[str, str] | None = None,
    *,
    alive: Callable[[], bool] | None = None,
) -> asyncio.Task[None] | None:
    """Start :func:`feed_watchdog` on the running loop if systemd asked for a watchdog.

    Returns the task (cancel it on shutdown), or None when there is no watchdog or no
    notification socket.
    """
    watchdog_s = watchdog_interval(environ)
    if watchdog_s is None or not notifier.enabled:
        return None
    log.info("watchdog_enabled", watchdog_s=watchdog_s, ping_every_s=watchdog_s / 2)
    return asyncio.get_running_loop().create_task(
        feed_watchdog(notifier, watchdog_s, alive=alive), name="lvsd-watchdog"
    )
