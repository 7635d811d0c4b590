"""``lvsd import keepalived`` against the real keepalived: the same file, the same IPVS table.

Debian's keepalived runs a keepalived.conf in a namespace whose real servers answer (their
addresses on a dummy link, one web server on port 80), so every check passes; its table is
captured with ``ipvsadm-save -n`` and keepalived stopped. ``lvsd run`` then runs the imported
config in the same namespace and must build the very same table.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from lvsd.config import loads
from lvsd.migrate.document import render
from lvsd.migrate.keepalived import import_keepalived
from tests.integration.conftest import Namespace
from tests.integration.daemon_support import LvsdProcess

REAL_SERVERS = ["198.51.100.1", "198.51.100.2", "198.51.100.3", "198.51.100.4"]

KEEPALIVED_CONF = """\
! every form the importer maps to a kernel setting; all checks pass
global_defs {
    router_id lvsd_import_test
}

virtual_server 192.0.2.10 80 {
    delay_loop 1
    lb_algo wrr
    lb_kind NAT
    protocol TCP
    real_server 198.51.100.1 80 {
        weight 3
        HTTP_GET {
            url {
                path /
                status_code 200
            }
            connect_timeout 1
        }
    }
    real_server 198.51.100.2 80 {
        weight 1
        uthreshold 500
        lthreshold 50
        TCP_CHECK {
            connect_timeout 1
        }
    }
}

virtual_server 192.0.2.20 443 {
    delay_loop 1
    lvs_sched rr
    lvs_method DR
    ! no protocol: keepalived 2.2 makes this a UDP service
    persistence_timeout 300
    persistence_granularity 255.255.255.0
    inhibit_on_failure
    real_server 198.51.100.3 443 {
        weight 2
        TCP_CHECK {
            connect_port 80
            connect_timeout 1
        }
    }
}

virtual_server fwmark 5 {
    delay_loop 1
    lb_algo sh
    sh-port
    lb_kind DR
    persistence_timeout
    real_server 198.51.100.4 {
        weight 4
        TCP_CHECK {
            connect_port 80
            connect_timeout 1
        }
    }
}

virtual_server_group WEB {
    192.0.2.30-31 8080
    fwmark 6
}

virtual_server group WEB {
    delay_loop 1
    lb_algo lc
    lb_kind NAT
    real_server 198.51.100.1 80 {
        weight 5
        HTTP_GET {
            url {
                path /
            }
            connect_timeout 1
        }
    }
}

virtual_server 192.0.2.40 53 {
    protocol UDP
    lb_algo rr
    lb_kind TUN
    ops
    real_server 198.51.100.2 53 {
        weight 7
    }
}
"""


def save_lines(ns: Namespace) -> list[str]:
    return sorted(ns.run("ipvsadm-save", "-n").stdout.splitlines())


async def wait_for_table(ns: Namespace, want: int, timeout: float) -> list[str]:
    """The table once it has ``want`` servers, none at weight 0, and holds still for 2 s."""
    deadline = time.monotonic() + timeout
    last: list[str] = []
    since = time.monotonic()
    while time.monotonic() < deadline:
        lines = save_lines(ns)
        if lines != last:
            last, since = lines, time.monotonic()
        servers = [line for line in lines if line.startswith("-a ")]
        if (len(servers) == want and not any(line.endswith(" -w 0") for line in servers)
                and time.monotonic() - since >= 2):
            return lines
        await asyncio.sleep(0.3)
    raise AssertionError(f"no stable table of {want} servers in {timeout} s:\n"
                         + "\n".join(last))


async def test_lvsd_builds_the_table_keepalived_built_from_the_same_file(
        netns: Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="lvsd-import-"))
    (work / "www").mkdir()
    (work / "www" / "index.html").write_text("ok\n")
    conf = work / "keepalived.conf"
    conf.write_text(KEEPALIVED_CONF)
    netns.ip("link", "add", "rs", "type", "dummy")
    netns.ip("link", "set", "rs", "up")
    for address in REAL_SERVERS:
        netns.ip("addr", "add", f"{address}/32", "dev", "rs")
    web = subprocess.Popen(["ip", "netns", "exec", netns, "busybox", "httpd", "-f", "-p", "80",
                            "-h", str(work / "www")],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    keepalived = subprocess.Popen(
        ["ip", "netns", "exec", netns, "keepalived", "--check", "--dont-fork", "--log-console",
         f"--use-file={conf}", f"--pid={work}/k.pid", f"--checkers_pid={work}/c.pid",
         f"--vrrp_pid={work}/v.pid", f"--bfd_pid={work}/b.pid"],
        stdout=(work / "keepalived.log").open("wb"), stderr=subprocess.STDOUT)
    lvsd: LvsdProcess | None = None
    try:
        try:
            keepalived_table = await wait_for_table(netns, 8, 60)
        except AssertionError as exc:
            log = (work / "keepalived.log").read_text(errors="replace")[-3000:]
            raise AssertionError(f"{exc}\n--- keepalived log:\n{log}") from None
        os.kill(keepalived.pid, signal.SIGTERM)
        keepalived.wait(30)
        netns.run("ipvsadm", "-C")  # whatever keepalived left: lvsd starts on an empty table
        assert save_lines(netns) == []

        imported = render(import_keepalived(conf, config_id="test"))
        assert loads(imported).services  # check-config accepts it
        lvsd = LvsdProcess(netns, imported)
        await lvsd.start()
        try:
            lvsd_table = await wait_for_table(netns, 8, 60)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- lvsd log:\n{lvsd.log_tail()}") from None
        assert lvsd_table == keepalived_table
    finally:
        if lvsd is not None:
            await lvsd.stop()
            lvsd.cleanup()
        for process in (keepalived, web):
            if process.poll() is None:
                process.kill()
                process.wait(10)
