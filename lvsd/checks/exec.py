"""Exec check: run a program (an argv list, never a shell); exit status 0 passes.

The program runs in a session and process group of its own, with the real server described
in its environment (``LVSD_RS_ADDRESS``, ``LVSD_RS_PORT``, ``LVSD_VIP``, ``LVSD_VPORT``,
``LVSD_PROTOCOL``, ``LVSD_CONNECT_ADDRESS``, ``LVSD_CONNECT_PORT``, ``LVSD_MARK``,
``LVSD_TIMEOUT``). When the probe times out the whole group is killed, grandchildren
included; when the program exits, whatever it left running in its group is killed too, so
that a check run every few seconds cannot pile up processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from lvsd.checks.base import CheckSpec, Prober, Text, set_stage
from lvsd.checks.target import ProbeTarget
from lvsd.probe import ProbeResult

_OUTPUT_KEPT = 200


class ExecCheck(CheckSpec):
    type: Literal["exec"] = "exec"
    connects: ClassVar[bool] = False
    argv: tuple[Text, ...] = Field(min_length=1)
    env: tuple[tuple[Text, Text], ...] = ()

    @field_validator("argv")
    @classmethod
    def _program_named(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value[0]:
            raise ValueError("argv[0] (the program) is empty")
        if any("\x00" in arg for arg in value):
            raise ValueError("argv contains a NUL byte")
        return value

    @field_validator("env", mode="before")
    @classmethod
    def _env_from_mapping(cls, value: Any) -> Any:
        pairs = list(value.items()) if isinstance(value, dict) else value
        if isinstance(pairs, list | tuple):
            for pair in pairs:
                if not (isinstance(pair, list | tuple) and len(pair) == 2
                        and all(isinstance(part, str) for part in pair)):
                    raise ValueError(f"expected NAME = \"value\" strings, got {pair!r}")
                name, content = pair
                if not name or "=" in name or "\x00" in name + content:
                    raise ValueError(f"bad environment variable {name!r}")
        return pairs

    def prober(self) -> Prober:
        return ExecProber(self)

    def describe(self, target: ProbeTarget) -> str:
        return f"exec {self.argv[0]} {target}"

    def relevant(self, target: ProbeTarget) -> ProbeTarget:
        return target  # the whole target reaches the program through its environment


def target_environment(target: ProbeTarget, timeout: float) -> dict[str, str]:
    rs_address = target.rs_address if target.rs_address is not None else target.address
    return {
        "LVSD_RS_ADDRESS": str(rs_address),
        "LVSD_RS_PORT": str(target.rs_port or target.port),
        "LVSD_VIP": "" if target.vip is None else str(target.vip),
        "LVSD_VPORT": str(target.vport),
        "LVSD_PROTOCOL": "" if target.protocol is None else target.protocol.name.lower(),
        "LVSD_CONNECT_ADDRESS": str(target.address),
        "LVSD_CONNECT_PORT": str(target.port),
        "LVSD_MARK": str(target.mark),
        "LVSD_TIMEOUT": f"{timeout:g}",
    }


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


class _Program(asyncio.SubprocessProtocol):
    """Keeps the first bytes of the output; tells when the program exits and when its
    output pipe closes (later, if something it started still holds the pipe)."""

    def __init__(self, exited: asyncio.Future[None], closed: asyncio.Future[None]) -> None:
        self.exited = exited
        self.closed = closed
        self.output = bytearray()

    def pipe_data_received(self, fd: int, data: bytes | str) -> None:
        room = _OUTPUT_KEPT - len(self.output)
        if room > 0:
            self.output += data[:room] if isinstance(data, bytes) else data[:room].encode()

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


class ExecProber(Prober):
    def __init__(self, spec: ExecCheck) -> None:
        self.spec = spec

    async def probe(self, target: ProbeTarget) -> ProbeResult:
        loop = asyncio.get_running_loop()
        start = loop.time()
        env = {**os.environ, **dict(self.spec.env),
               **target_environment(target, self.spec.timeout)}
        exited: asyncio.Future[None] = loop.create_future()
        closed: asyncio.Future[None] = loop.create_future()
        set_stage("start")
        try:
            transport, program = await loop.subprocess_exec(
                lambda: _Program(exited, closed), *self.spec.argv,
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                env=env, start_new_session=True)
        except OSError as exc:
            return ProbeResult(False, f"cannot run {self.spec.argv[0]}: {exc.strerror or exc}",
                               loop.time() - start)
        group = transport.get_pid()  # the program leads a session, hence a group, of its own
        set_stage("exit")
        try:
            await exited
            status = transport.get_returncode()
            _kill_group(group)  # its leftovers, which would also hold the output pipe open
            await closed
        except BaseException:
            _kill_group(group)
            await asyncio.wait([exited], timeout=1.0)  # reap it before the loop may close
            raise
        finally:
            transport.close()
        latency = loop.time() - start
        if status == 0:
            return ProbeResult(True, "exit 0", latency)
        reason = (f"killed by {signal.Signals(-status).name}" if status is not None and status < 0
                  else f"exit {status}")
        first_line = program.output.decode(errors="replace").strip().split("\n", 1)[0].strip()
        return ProbeResult(False, f"{reason}: {first_line}" if first_line else reason, latency)
