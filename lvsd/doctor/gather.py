"""The I/O half of ``lvsd doctor``: read this host (in the caller's network namespace) into
``Facts``. Everything unreadable becomes an absent fact, never an exception."""

from __future__ import annotations

import asyncio
import importlib
import ipaddress
import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from lvsd.checks.drpath import RTNETLINK_TIMEOUT, Routing, routing_of
from lvsd.doctor.facts import Facts, FirewallFacts, IpvsFacts, sysctl_name
from lvsd.errors import LvsdError
from lvsd.model import Address
from lvsd.spec import Config
from lvsd.splitbrain.book import VipStatus
from lvsd.splitbrain.guard import probe_once

# Under /proc/sys: files, or directories read whole (a check needing more adds a path here).
SYSCTL_PATHS = ("net/ipv4/vs", "net/ipv4/conf", "net/ipv4/ip_forward",
                "net/ipv6/conf/all/forwarding")
TOOL_TIMEOUT = 10.0


def read_sysctls(proc_sys: Path = Path("/proc/sys"),
                 paths: tuple[str, ...] = SYSCTL_PATHS) -> dict[str, str]:
    values: dict[str, str] = {}

    def walk(path: Path) -> Iterator[Path]:
        if path.is_dir():
            try:
                children = sorted(path.iterdir())
            except OSError:
                return
            for child in children:
                yield from walk(child)
        elif path.exists():
            yield path

    for relative in paths:
        for file in walk(proc_sys / relative):
            try:
                value = file.read_text().strip()
            except OSError:
                continue  # write-only or vanished
            values[sysctl_name(*file.relative_to(proc_sys).parts)] = value
    return values


def module_facts(release: str, root: Path = Path("/")) -> tuple[frozenset[str], frozenset[str]]:
    """(loaded, available) IPVS modules: /sys/module, and built in or on disk."""
    try:
        loaded = frozenset(entry.name for entry in (root / "sys/module").iterdir()
                           if entry.name.startswith("ip_vs"))
    except OSError:
        loaded = frozenset()
    modules = root / "lib/modules" / release
    available = set()
    try:
        for line in (modules / "modules.builtin").read_text().splitlines():
            name = line.rsplit("/", 1)[-1].split(".ko")[0]
            if name.startswith("ip_vs"):
                available.add(name)
    except OSError:
        pass
    for file in (modules / "kernel/net/netfilter/ipvs").glob("ip_vs*.ko*"):
        available.add(file.name.split(".ko")[0])
    return loaded, frozenset(available)


def _rtnetlink(vips: list[Address], dr_paths: list[tuple[Address, Address]]) -> tuple[
        dict[str, frozenset[Address]], dict[Address, str], dict[tuple[Address, Address], Routing]]:
    from pyroute2 import IPRoute

    with IPRoute() as rtnl:
        links: list[Any] = list(rtnl.link("dump"))
        names = {link["index"]: link.get("IFLA_IFNAME") for link in links}
        held: dict[str, set[Address]] = {name: set() for name in names.values()}
        for message in rtnl.addr("dump"):
            name = names.get(message["index"])
            value = message.get("IFA_LOCAL") or message.get("IFA_ADDRESS")
            if name is not None and value is not None:
                held[name].add(ipaddress.ip_address(value))
        routes = {}
        for vip in vips:
            try:
                for route in rtnl.route("get", dst=str(vip)):
                    if route.get("RTA_OIF") in names:
                        routes[vip] = names[route.get("RTA_OIF")]
                        break
            except Exception:  # unreachable: NetlinkError(ENETUNREACH) and the like
                continue
        paths = {(vip, rs): routing_of(rtnl, vip, rs) for vip, rs in dr_paths}
    return {name: frozenset(addresses) for name, addresses in held.items()}, routes, paths


def _tool_output(*command: str) -> str | None:
    if shutil.which(command[0]) is None:
        return None
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False,
                              timeout=TOOL_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None


def firewall_facts() -> FirewallFacts:
    return FirewallFacts(nft=_tool_output("nft", "list", "ruleset"),
                         iptables=_tool_output("iptables-save"),
                         ip6tables=_tool_output("ip6tables-save"))


async def _ipvs_facts() -> tuple[IpvsFacts | None, str]:
    from lvsd.ipvs.netlink import NetlinkIpvs

    backend = NetlinkIpvs()
    try:
        info = await backend.info()
        table = await backend.dump()
    except LvsdError as exc:
        return None, str(exc)
    finally:
        await backend.close()
    return IpvsFacts(info.version, info.conn_table_size, table), ""


async def gather(config: Config, *, proc_sys: Path = Path("/proc/sys"),
                 root: Path = Path("/")) -> Facts:
    release = os.uname().release
    vips = sorted({spec.key.address for spec in config.services
                   if spec.key.address is not None}, key=lambda a: (a.version, a))
    dr_paths = sorted({(spec.key.address, server.key.address)
                       for spec in config.services if spec.key.address is not None
                       for server in spec.servers
                       if server.key.address.version == 4
                       and any(check.dr_path for check in server.checks)}, key=str)
    ipvs, problem = await _ipvs_facts()
    sysctls = await asyncio.to_thread(read_sysctls, proc_sys)
    loaded, available = await asyncio.to_thread(module_facts, release, root)
    addresses: Mapping[str, frozenset[Address]] = {}
    routes: Mapping[Address, str] = {}
    paths: Mapping[tuple[Address, Address], Routing] = {}
    rtnetlink_problem = ""
    try:
        # The bound counts from when pyroute2 is loaded: importing it takes seconds on a slow
        # host, answering a dump does not.
        await asyncio.to_thread(importlib.import_module, "pyroute2")
        addresses, routes, paths = await asyncio.wait_for(
            asyncio.to_thread(_rtnetlink, list(vips), list(dr_paths)), RTNETLINK_TIMEOUT * 4)
    except TimeoutError:
        rtnetlink_problem = "no answer"
    except Exception as exc:  # pyroute2 raises its own types too
        rtnetlink_problem = str(exc) or type(exc).__name__
    firewall = FirewallFacts()
    if sysctls.get("net.ipv4.vs.conntrack") == "1":
        firewall = await asyncio.to_thread(firewall_facts)
    vip_probes: tuple[VipStatus, ...] = ()
    vip_probe_problems: dict[str, str] = {}
    if config.daemon.split_brain_probe is not None and vips:
        vip_probes, vip_probe_problems = await asyncio.to_thread(probe_once, frozenset(vips))
    return Facts(config=config, kernel_release=release, ipvs=ipvs, ipvs_problem=problem,
                 loaded_modules=loaded, available_modules=available, sysctls=sysctls,
                 addresses=addresses, rtnetlink_problem=rtnetlink_problem, routes=routes,
                 dr_paths=paths, firewall=firewall, vip_probes=vip_probes,
                 vip_probe_problems=vip_probe_problems)
