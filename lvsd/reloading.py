"""The pure rules of a reload: what it may change now, and what it must refuse."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection

from lvsd.model import ServiceKey
from lvsd.spec import Config

# [daemon] settings a reload cannot change: the files and sockets lvsd already holds.
RESTART_ONLY = (
    "state_dir", "save_file", "listen_host", "listen_port", "max_probes_in_flight", "probe_workers",
    "control_socket", "control_group", "control_gid",
)


def keep_restart_only(old: Config, new: Config) -> tuple[Config, list[str]]:
    """``new`` with the restart-only settings of ``old``, and the names of those it changed."""
    kept = {name: getattr(old.daemon, name) for name in RESTART_ONLY
            if getattr(new.daemon, name) != getattr(old.daemon, name)}
    if not kept:
        return new, []
    return dataclasses.replace(new, daemon=dataclasses.replace(new.daemon, **kept)), sorted(kept)


def refuses_emptying(config: Config, owned: Collection[ServiceKey]) -> str | None:
    """Why ``config`` may not be applied over the ``owned`` services, if it may not: a config
    without services (a truncated file) would delete them all."""
    if config.services or not owned or config.daemon.allow_empty:
        return None
    return (f"{config.source}: the config has no services and would delete all {len(owned)} "
            "services lvsd owns in the kernel; set allow_empty = true in [daemon] to allow it")
