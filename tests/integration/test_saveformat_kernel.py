"""The save format against the real ipvsadm 1.31 and the real kernel (run inside the VM).

A table built with ipvsadm using every feature: lvsd's formatting of it is byte-identical with
``ipvsadm-save -n`` and ``ipvsadm -Ln``, and ipvsadm-restore reads lvsd's save file back whole,
thresholds and timeouts included.
"""

from __future__ import annotations

import asyncio
import functools
import os
import random
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from lvsd.ipvs.netlink import NetlinkIpvs
from lvsd.ipvsadm.listing import format_listing
from lvsd.ipvsadm.resolve import NumericResolver, SystemResolver
from lvsd.ipvsadm.restore import parse
from lvsd.ipvsadm.save import format_table
from lvsd.model import (
    KERNEL_DEFAULT_TIMEOUTS,
    AddDest,
    Dest,
    DestKey,
    Forward,
    Protocol,
    ServiceKey,
    Table,
    parse_address,
)
from tests.integration.conftest import (
    Namespace,
    create_namespace,
    delete_namespaces,
    run_in_netns,
)
from tests.unit.ipvsadm_samples import ACCEPTED, MALFORMED, STRICTER

# Every feature ipvsadm 1.31 can set, including the seeds' examples. The order of the services
# spans both halves of the IPv4 space, where ipvsadm's sort stops being a plain numeric order.
FEATURES = """\
-A -t 200.0.0.254:80 -s rr
-a -t 200.0.0.254:80 -r 192.168.1.2:80 -g -w 1
-a -t 200.0.0.254:80 -r 192.168.1.3:80 -g -w 1
-A -t 10.0.0.3:80 -s wrr
-a -t 10.0.0.3:80 -r 10.0.0.1:8080 -m -w 3 -x 100 -y 10
-a -t 10.0.0.3:80 -r 172.16.0.1:80 -m -w 2 -x 50
-a -t 10.0.0.3:80 -r 100.64.0.1:80 -m -w 0 -x 20 -y 5
-A -t 192.168.1.3:0 -s rr -p 360
-A -t 192.168.1.4:0 -s lc -p
-A -f 8 -s wlc -p 600
-a -f 8 -r 192.168.10.7 -g -w 2
-a -f 8 -r 192.168.10.8:443 -m -w 2 -x 7
-A -f 9 -6 -s dh -p 30 -M 48
-a -f 9 -6 -r [2001:db8::9]:0 -g -w 4
-A -u 10.1.0.1:53 -s wlc -p 600 -M 255.255.255.0
-a -u 10.1.0.1:53 -r 10.1.1.2:53 -i -w 0
-A -t 10.1.0.2:443 -s mh -b mh-fallback,mh-port
-a -t 10.1.0.2:443 -r 10.1.2.1:443 -g -w 9
-A -t 10.1.0.12:443 -s sh -b sh-port
-A -t 10.1.0.19:80 -s wlc -b flag-1,flag-3
-A -u 10.1.0.14:5060 -s rr -p 60 --pe sip
-A -u 10.1.0.13:5060 -s fo -o
-a -u 10.1.0.13:5060 -r 10.1.3.1:5060 -m -w 65535
-A --sctp-service 10.1.0.15:3868 -s sed
-a --sctp-service 10.1.0.15:3868 -r 10.1.6.1:3868 -m -w 1
-A -t [2001:db8::2]:443 -s rr -p 120 -M 64
-a -t [2001:db8::2]:443 -r [2001:db8::1:6]:443 -m -w 1
-a -t [2001:db8::2]:443 -r 192.0.2.5 -i -w 1
-a -t [2001:db8::2]:443 -r [::102:304]:443 -m -w 1
-A -u [2001:db8::4]:53 -s nq
-A -t 10.1.0.16:80 -s lblc
-a -t 10.1.0.16:80 -r 10.1.5.1:80 -i -w 1 --tun-type gue --tun-port 6080 --tun-nocsum
-a -t 10.1.0.16:80 -r 10.1.5.2:80 -i -w 1 --tun-type gre --tun-csum
-a -t 10.1.0.16:80 -r 10.1.5.3:80 -i -w 1 --tun-type gue --tun-port 6081 --tun-remcsum
-A -t 127.0.0.1:80 -s lblcr
-a -t 127.0.0.1:80 -r 127.0.0.1:8080 -m -w 1
-A -u 127.0.0.1:53 -s ovf
--set 30 5 60
"""
# ipvsadm-save drops these; ipvsadm -Ln --thresholds shows them
THRESHOLDS = {
    ("10.0.0.3:80", "10.0.0.1:8080"): " -x 100 -y 10",
    ("10.0.0.3:80", "172.16.0.1:80"): " -x 50",
    ("10.0.0.3:80", "100.64.0.1:80"): " -x 20 -y 5",
    ("8", "192.168.10.8:443"): " -x 7",
}
MODULES = ("ip_vs_dh", "ip_vs_fo", "ip_vs_sed", "ip_vs_nq", "ip_vs_lblc", "ip_vs_lblcr",
           "ip_vs_ovf", "ip_vs_pe_sip")
# Under emulation each process costs ~0.2-0.5 s: commands are spawned from a thread inside the
# namespace (no ``ip netns exec`` in between), and the restore samples run on this many
# namespaces at once.
LANES = 3


def _modprobe() -> None:
    subprocess.run(["modprobe", "-a", *MODULES], check=True, capture_output=True, timeout=60)


def ipvsadm(ns: str, *args: str, stdin: str | None = None, check: bool = True) -> str:
    done = run_in_netns(ns, args, None if stdin is None else stdin.encode())
    if check and done.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({done.returncode}): "
                             f"{done.stderr.decode(errors='replace')}")
    return done.stdout.decode()


def restore(ns: str, text: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    done = run_in_netns(ns, ["ipvsadm-restore"], text.encode())
    if check:
        stderr = done.stderr.decode(errors="replace")
        assert (done.returncode, stderr) == (0, ""), stderr
    return done


def _add_namespace(prefix: str) -> Namespace:
    return create_namespace(f"{prefix}-{uuid.uuid4().hex[:6]}")


@pytest.fixture(scope="module")
def built() -> Iterator[str]:
    """A namespace holding FEATURES, built by ipvsadm-restore; the tests only read it."""
    if os.environ.get("RUN_IN_VM") != "1" and not os.path.exists("/proc/net/ip_vs"):
        pytest.skip("needs a kernel with IPVS (run tests/vm/run-integration.sh)")
    _modprobe()
    name = _add_namespace("lvsd-sf")
    try:
        restore(name, FEATURES)
        yield name
    finally:
        delete_namespaces([name])


@asynccontextmanager
async def backend(ns: str) -> AsyncIterator[NetlinkIpvs]:
    ipvs = NetlinkIpvs(ns)
    try:
        yield ipvs
    finally:
        await ipvs.close()


@pytest.fixture
def second_netns() -> Iterator[str]:
    name = _add_namespace("lvsd-b")
    try:
        yield name
    finally:
        delete_namespaces([name])


def _with_thresholds_and_timeouts(save_n: str) -> str:
    """``save_n`` as lvsd's default output should extend it."""
    lines = ["--set 30 5 60"]
    for line in save_n.splitlines():
        words = line.split()
        extra = ""
        if words[0] == "-a":  # -a -t|-u|-f|--sctp-service SERVICE -r SERVER ...
            extra = THRESHOLDS.get((words[2], words[words.index("-r") + 1]), "")
        lines.append(line + extra)
    return "".join(f"{line}\n" for line in lines)


def test_ipvsadm_save_n_parses_and_formats_back_byte_for_byte(built: str) -> None:
    save_n = ipvsadm(built, "ipvsadm-save", "-n")
    assert save_n.count("\n") == FEATURES.count("\n") - 1  # every rule but --set is listed
    table = parse(save_n, "ipvsadm-save -n", resolver=NumericResolver())
    assert format_table(table, compat=True, sort=False) == save_n


async def test_lvsd_save_of_the_kernel_table_is_ipvsadm_save_n(built: str) -> None:
    save_n = ipvsadm(built, "ipvsadm-save", "-n")
    async with backend(built) as ipvs:
        dumped = await ipvs.dump()
    assert format_table(dumped, compat=True) == save_n
    assert format_table(dumped) == _with_thresholds_and_timeouts(save_n)


async def test_lvsd_listings_of_the_kernel_table_are_ipvsadm_ln(built: str) -> None:
    async with backend(built) as ipvs:
        dumped = await ipvs.dump()
        info = await ipvs.info()
    views: list[tuple[tuple[str, ...], dict[str, Any]]] = [
        ((), {}), (("--stats",), {"stats": True}), (("--rate",), {"rate": True}),
        (("--thresholds",), {"thresholds": True}),
        (("--persistent-conn",), {"persistent_conn": True}), (("--tun-info",), {"tun_info": True}),
        (("--stats", "--exact"), {"stats": True, "exact": True})]
    for flags, view in views:
        expected = ipvsadm(built, "ipvsadm", "-Ln", *flags)
        assert format_listing(dumped, version=info.version,
                              conn_table_size=info.conn_table_size, **view) == expected, flags


async def test_plain_ipvsadm_save_with_names_parses_to_the_same_table(built: str) -> None:
    with_names = ipvsadm(built, "ipvsadm-save")
    assert "localhost:domain" in with_names and "200.0.0.254:http" in with_names
    numeric = parse(ipvsadm(built, "ipvsadm-save", "-n"), resolver=NumericResolver())
    assert parse(with_names, "ipvsadm-save", resolver=SystemResolver()) == numeric
    async with backend(built) as ipvs:
        dumped = await ipvs.dump()
    assert format_table(dumped, resolve=True, compat=True) == with_names
    assert format_listing(dumped, resolve=True) == \
        "".join(ipvsadm(built, "ipvsadm", "-L").splitlines(keepends=True)[1:])


async def test_ipvsadm_restore_reads_lvsd_save_back_whole(built: str,
                                                          second_netns: str) -> None:
    async with backend(built) as ipvs:
        original = await ipvs.dump()
    ours = format_table(original)
    assert "-x 100 -y 10" in ours and ours.startswith("--set 30 5 60\n")
    restore(second_netns, ours)
    # The same rules, but not always in the same order: the copy's real servers sit in the
    # kernel's lists in another order, and where ipvsadm's comparator has a cycle (10.0.0.1,
    # 100.64.0.1, 172.16.0.1) the order it prints depends on that.
    for command in (("ipvsadm-save", "-n"), ("ipvsadm", "-Ln", "--thresholds"),
                    ("ipvsadm", "-Ln", "--tun-info")):
        assert sorted(ipvsadm(second_netns, *command).splitlines()) == \
            sorted(ipvsadm(built, *command).splitlines()), command
    assert ipvsadm(second_netns, "ipvsadm", "-L", "--timeout") == \
        "Timeout (tcp tcpfin udp): 30 5 60\n"
    assert "100        10" in ipvsadm(second_netns, "ipvsadm", "-Ln", "--thresholds")
    async with backend(second_netns) as copy:
        assert await copy.dump() == original  # every attribute, thresholds and timeouts too


async def test_lvsd_save_restores_what_ipvsadm_save_cannot(netns: str, second_netns: str,
                                                           ipvs: NetlinkIpvs) -> None:
    restore(netns, "-A -f 4294967295 -s rr\n-a -f 4294967295 -r 192.0.2.7 -g -w 3\n"
                   "-A -t 192.0.2.1:80 -s sh -b flag-3\n")
    save_n = ipvsadm(netns, "ipvsadm-save", "-n")
    assert save_n.splitlines()[0] == "-A -f -1 -s rr"
    assert "-s sh -b \n" in save_n
    dumped = await ipvs.dump()
    assert format_table(dumped, compat=True) == save_n
    assert restore(second_netns, save_n, check=False).returncode != 0  # ipvsadm's own file
    ipvsadm(second_netns, "ipvsadm", "-C")
    restore(second_netns, format_table(dumped))
    assert ipvsadm(second_netns, "ipvsadm-save", "-n") == save_n


async def test_local_forwarding_is_printed_as_ipvsadm_prints_it(netns: str,
                                                                ipvs: NetlinkIpvs) -> None:
    restore(netns, "-A -t 192.0.2.1:80 -s rr\n")
    key = ServiceKey.virtual(Protocol.TCP, "192.0.2.1", 80)
    local = Dest(DestKey(parse_address("127.0.0.1"), 80), forward=Forward.LOCAL)
    assert await ipvs.apply([AddDest(key, local)]) == []
    dumped = await ipvs.dump()
    assert dumped.by_key()[key].dests[0].forward is Forward.LOCAL
    assert format_table(dumped, compat=True) == ipvsadm(netns, "ipvsadm-save", "-n")
    assert format_listing(dumped) == "".join(
        ipvsadm(netns, "ipvsadm", "-Ln").splitlines(keepends=True)[1:])


async def test_the_sort_of_many_services_across_the_address_space_matches_ipvsadm(
        netns: str, ipvs: NetlinkIpvs) -> None:
    # Addresses from both halves of the IPv4 and IPv6 spaces make ipvsadm's comparator cyclic;
    # its output then depends on the kernel's dump order, which the netlink dump gives us.
    rnd = random.Random(20240517)

    def v4() -> str:
        return f"{rnd.choice([1, 10, 60, 100, 126, 128, 172, 192, 200, 223])}." \
               f"{rnd.randrange(256)}.{rnd.randrange(256)}.{rnd.randrange(1, 255)}"

    def v6() -> str:
        return f"[{rnd.choice(['2001:db8', '3fff', '7001', 'a001', 'fc00'])}::" \
               f"{rnd.randrange(1, 0xFFFF):x}:{rnd.randrange(1, 0xFFFF):x}]"

    lines = []
    for _ in range(80):
        proto = rnd.choice(["-t", "-u"])
        vip = f"{v6() if rnd.random() < 0.25 else v4()}:{rnd.choice([80, 443, 53, 8080, 9])}"
        lines.append(f"-A {proto} {vip} -s rr")
        for _ in range(rnd.randrange(5)):
            rip = v6() if vip.startswith("[") else v4()
            lines.append(f"-a {proto} {vip} -r {rip}:{rnd.choice([80, 81, 8080])} -m -w 1")
    restore(netns, "".join(f"{line}\n" for line in dict.fromkeys(lines)), check=False)
    dumped = await ipvs.dump()
    assert len(dumped) >= 70 and dumped.dest_count >= 100
    assert format_table(dumped, compat=True) == ipvsadm(netns, "ipvsadm-save", "-n")
    assert format_listing(dumped) == "".join(
        ipvsadm(netns, "ipvsadm", "-Ln").splitlines(keepends=True)[1:])


async def _ipvsadm_restore_runs(ns: str, ipvs: NetlinkIpvs, data: bytes) -> tuple[bool, str]:
    """Whether ipvsadm-restore runs the whole file without a word on stderr (it goes on past a
    rule the kernel refuses, printing why), on a table reset to empty and default timeouts."""
    # ipvsadm-restore empties the table itself; the timeouts it leaves as they are.
    if await ipvs.timeouts() != KERNEL_DEFAULT_TIMEOUTS:
        await asyncio.to_thread(ipvsadm, ns, "ipvsadm", "--set", "900", "120", "300")
    done = await asyncio.to_thread(run_in_netns, ns, ["ipvsadm-restore"], data)
    return done.returncode == 0 and not done.stderr, done.stderr.decode(errors="replace")


async def _accepted_alike(name: str, text: str, ns: str, ipvs: NetlinkIpvs) -> str | None:
    ours = parse(text, name, resolver=NumericResolver())
    runs, stderr = await _ipvsadm_restore_runs(ns, ipvs, text.encode())
    if not runs:
        return f"{name}: ipvsadm-restore refuses it: {stderr}"
    kernel = await ipvs.dump()
    if Table(kernel.services) != Table(ours.services) or (
            ours.timeouts is not None and kernel.timeouts != ours.timeouts):
        return (f"{name}: ipvsadm-restore made\n{format_table(kernel)}lvsd read\n"
                f"{format_table(ours)}")
    return None


async def _malformed_alike(name: str, data: str | bytes, ns: str,
                           ipvs: NetlinkIpvs) -> str | None:
    runs, stderr = await _ipvsadm_restore_runs(
        ns, ipvs, data.encode() if isinstance(data, str) else data)
    if runs != (name in STRICTER):
        return (f"{name}: ipvsadm-restore {'runs' if runs else 'refuses'} it "
                f"({stderr.strip()[:200]!r}), STRICTER says otherwise")
    return None


async def test_lvsd_restore_and_ipvsadm_restore_accept_the_same_files_alike(
        netns: Namespace, ipvs: NetlinkIpvs) -> None:
    """A file lvsd's parser accepts, ipvsadm-restore runs into the same table; a file lvsd
    refuses, ipvsadm-restore refuses too, unless STRICTER says why lvsd refuses more."""
    checks: list[Callable[[str, NetlinkIpvs], Awaitable[str | None]]] = [
        *(functools.partial(_accepted_alike, name, text) for name, text, _ in ACCEPTED),
        *(functools.partial(_malformed_alike, name, data) for name, data, _, _ in MALFORMED)]
    verdicts: list[str | None] = [None] * len(checks)

    async def lane(index: int, ns: str, backend: NetlinkIpvs) -> None:
        for sample in range(index, len(checks), LANES):
            verdicts[sample] = await checks[sample](ns, backend)

    others: list[Namespace] = []
    backends: list[NetlinkIpvs] = []
    try:
        for _ in range(LANES - 1):
            others.append(_add_namespace("lvsd-lane"))
            backends.append(NetlinkIpvs(others[-1]))
        async with asyncio.TaskGroup() as lanes:
            for index, (ns, backend) in enumerate(zip([netns, *others], [ipvs, *backends],
                                                      strict=True)):
                lanes.create_task(lane(index, ns, backend))
    finally:
        for backend in backends:
            await backend.close()
        delete_namespaces(others)
    problems = [verdict for verdict in verdicts if verdict is not None]
    assert problems == [], "\n".join(problems)
