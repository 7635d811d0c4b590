"""The ``on_change`` hook: a program run when a server of the service changes health."""

from __future__ import annotations

import asyncio
import os

from lvsd import logs
from lvsd.health import Status
from lvsd.model import DestKey
from lvsd.spec import ServiceSpec

HOOK_TIMEOUT = 30.0

log = logs.get_logger(__name__)


async def run_hook(spec: ServiceSpec, dest_key: DestKey, status: Status, reason: str) -> None:
    """Run ``spec.on_change`` with the change in ``LVSD_*`` variables; failures are logged."""
    env = {
        **os.environ,
        "LVSD_SERVICE": spec.name,
        "LVSD_SERVICE_KEY": str(spec.key),
        "LVSD_SERVER": str(dest_key),
        "LVSD_SERVER_ADDRESS": str(dest_key.address),
        "LVSD_SERVER_PORT": str(dest_key.port),
        "LVSD_STATUS": status.value,
        "LVSD_REASON": reason,
    }
    try:
        proc = await asyncio.create_subprocess_exec(
            *spec.on_change,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        _, stderr = await asyncio.wait_for(proc.communicate(), HOOK_TIMEOUT)
        if proc.returncode:
            log.warning("on_change_failed", service=spec.name, server=str(dest_key),
                        exit_code=proc.returncode, stderr=stderr.decode(errors="replace"))
    except (OSError, TimeoutError) as exc:
        log.warning("on_change_failed", service=spec.name, server=str(dest_key), error=str(exc))
