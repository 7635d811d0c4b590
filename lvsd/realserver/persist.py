"""``--persist``: the sysctl.d file and the systemd oneshot unit that re-apply at boot (pure
rendering; the caller writes them under its root)."""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence

from lvsd.model import Address
from lvsd.realserver.plan import Mode

SYSCTL_FILE = "etc/sysctl.d/90-lvsd-realserver.conf"
UNIT_NAME = "lvsd-realserver.service"
UNIT_FILE = f"etc/systemd/system/{UNIT_NAME}"
WANTS_LINK = f"etc/systemd/system/multi-user.target.wants/{UNIT_NAME}"


def apply_command(lvsd: str, vips: Sequence[Address], mode: Mode) -> list[str]:
    return [lvsd, "realserver", "apply", "--mode", mode,
            *[word for vip in vips for word in ("--vip", str(vip))]]


def sysctl_conf(values: Mapping[str, str]) -> str:
    lines = ["# Written by lvsd realserver apply --persist; removed by lvsd realserver remove.",
             f"# The unit {UNIT_NAME} adds the VIPs at boot.", ""]
    lines += [f"{name} = {value}" for name, value in values.items()]
    return "\n".join(lines) + "\n"


def unit(command: Sequence[str], vips: Sequence[Address], mode: Mode) -> str:
    where = "on lo" if mode == "dr" else "on the tunnel devices"
    listed = " ".join(str(vip) for vip in vips)
    # Before network-pre: the ARP sysctls hold before any interface comes up and could
    # answer ARP for the VIP. (No Documentation=man:lvsd(8): verify fails where the page is
    # not installed, as on a host running lvsd from a checkout.)
    return f"""\
[Unit]
Description=lvsd real-server set-up ({mode}): VIPs {listed} {where}, ARP sysctls
DefaultDependencies=no
After=local-fs.target systemd-sysctl.service
Before=network-pre.target shutdown.target
Wants=network-pre.target
Conflicts=shutdown.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart={shlex.join(command)}

[Install]
WantedBy=multi-user.target
"""
