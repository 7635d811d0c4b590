"""Real ipvsadm 1.31 output and a fake names database, shared by the ipvsadm package's tests."""

from __future__ import annotations

import ipaddress
from typing import Any, ClassVar

from lvsd.ipvsadm.resolve import NumericResolver
from lvsd.ipvsadm.restore import parse
from lvsd.model import (
    Address,
    Protocol,
    ServiceKey,
    Table,
)

# `ipvsadm-save -n` of tables built with ipvsadm 1.31 on Debian's 6.1 kernel (the VM), and the
# examples in the reference notes. Lines are ipvsadm's order, so they are formatted unsorted.
REAL_SAVE_1 = """\
-A -t 127.0.0.1:8080 -s rr
-A -t 192.168.1.3:0 -s rr -p 360
-A -t 200.0.0.254:80 -s rr
-a -t 200.0.0.254:80 -r 192.168.1.2:80 -g -w 1
-a -t 200.0.0.254:80 -r 192.168.1.3:80 -g -w 1
-A -t 10.0.0.3:80 -s wrr
-a -t 10.0.0.3:80 -r 100.64.0.1:80 -m -w 1
-a -t 10.0.0.3:80 -r 172.16.0.1:80 -m -w 1
-a -t 10.0.0.3:80 -r 10.0.0.1:8080 -m -w 3
-A -t 10.1.0.2:443 -s mh -b mh-fallback,mh-port
-A -t 100.64.0.9:443 -s sh -b sh-port
-A -t 127.0.0.1:80 -s rr
-A -u 10.1.0.1:53 -s wlc -p 360 -M 255.255.255.0
-a -u 10.1.0.1:53 -r 10.1.1.2:53 -i -w 0 --tun-type ipip
-A -u 10.1.0.13:5060 -s rr -o
-A -u 10.1.0.14:5060 -s rr -p 60 --pe sip
-A -u 127.0.0.1:53 -s rr
-A --sctp-service 10.1.0.15:3868 -s sed
-A -t [2001:db8::2]:443 -s rr -p 120 -M 64
-a -t [2001:db8::2]:443 -r 192.0.2.5:443 -i -w 1 --tun-type ipip
-a -t [2001:db8::2]:443 -r [::1.2.3.4]:443 -m -w 1
-A -f 8 -s fo -p 30
-a -f 8 -r 192.168.10.7:0 -g -w 2
-a -f 8 -r 192.168.10.8:443 -m -w 2
-A -f 9 -6 -s dh
-a -f 9 -6 -r [2001:db8::9]:0 -g -w 4
"""

REAL_SAVE_2 = """\
-A -t 10.1.0.16:80 -s rr
-a -t 10.1.0.16:80 -r 10.1.5.1:80 -i -w 1 --tun-type gue --tun-port 6080 --tun-nocsum
-a -t 10.1.0.16:80 -r 10.1.5.2:80 -i -w 1 --tun-type gre --tun-csum
-a -t 10.1.0.16:80 -r 10.1.5.3:80 -i -w 1 --tun-type gue --tun-port 6081 --tun-remcsum
-a -t 10.1.0.16:80 -r 10.1.5.4:80 -i -w 1 --tun-type gre --tun-nocsum
-a -t 10.1.0.16:80 -r 10.1.5.5:80 -i -w 1 --tun-type gue --tun-port 6082 --tun-nocsum
-a -t 10.1.0.16:80 -r 10.1.5.6:80 -g -w 1
-a -t 10.1.0.16:80 -r 10.1.5.7:9090 -m -w 65535
-a -t 10.1.0.16:80 -r [2001:db8::77]:80 -i -w 1 --tun-type ipip
-a -t 10.1.0.16:80 -r 127.0.0.1:80 -m -w 1
-A -t 10.1.0.19:80 -s wlc -b flag-1,flag-2,flag-3
-A -t 10.1.0.20:80 -s wlc -p 100 -M 0.0.0.0
-A -t 10.1.0.22:80 -s wlc -p 360
-A -t 10.1.0.23:80 -s lc -p 100
-A -t [2001:db8::3]:80 -s rr -p 10
-A -t [2001:db8::5]:80 -s rr
-a -t [2001:db8::5]:80 -r [2001:db8::1:6]:80 -m -w 1
-A -u [2001:db8::4]:80 -s rr
"""

NOTES_EXAMPLES = """\
-A -t 192.168.1.3:0 -s rr -p 360
-A -u 10.1.0.1:53 -s wlc -p 600 -M 255.255.255.0
-a -u 10.1.0.1:53 -r 10.1.1.2:53 -i -w 0 --tun-type ipip
-A -t 10.1.0.2:443 -s mh -b mh-fallback,mh-port
-A -u 10.1.0.14:5060 -s rr -p 60 --pe sip
-A -u 10.1.0.13:5060 -s rr -o
-A --sctp-service 10.1.0.15:3868 -s rr
-A -f 9 -6 -s rr
-A -t [2001:db8::2]:443 -s rr -p 120 -M 64
-A -t 10.1.0.16:80 -s rr
-a -t 10.1.0.16:80 -r 10.1.5.1:80 -i -w 1 --tun-type gue --tun-port 6080 --tun-nocsum
-A -f 8 -s wrr
-a -f 8 -r 192.168.10.7:0 -g -w 2
-A -t 200.0.0.254:80 -s rr
-a -t 200.0.0.254:80 -r 192.168.1.2:80 -g -w 1
-a -t 200.0.0.254:80 -r 192.168.1.3:80 -g -w 1
"""

# `ipvsadm -Ln` and `ipvsadm -Ln --tun-info` in the VM for REAL_SAVE_2's table
REAL_LISTING_2 = """\
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn
TCP  10.1.0.16:80 rr
  -> 10.1.5.1:80                  Tunnel  1      0          0         
  -> 10.1.5.2:80                  Tunnel  1      0          0         
  -> 10.1.5.3:80                  Tunnel  1      0          0         
  -> 10.1.5.4:80                  Tunnel  1      0          0         
  -> 10.1.5.5:80                  Tunnel  1      0          0         
  -> 10.1.5.6:80                  Route   1      0          0         
  -> 10.1.5.7:9090                Masq    65535  0          0         
  -> [2001:db8::77]:80            Tunnel  1      0          0         
  -> 127.0.0.1:80                 Masq    1      0          0         
TCP  10.1.0.19:80 wlc (flag-1,flag-2,flag-3)
TCP  10.1.0.20:80 wlc persistent 100 mask 0.0.0.0
TCP  10.1.0.22:80 wlc persistent 360
TCP  10.1.0.23:80 lc persistent 100
TCP  [2001:db8::3]:80 rr persistent 10
TCP  [2001:db8::5]:80 rr
  -> [2001:db8::1:6]:80           Masq    1      0          0         
UDP  [2001:db8::4]:80 rr
"""  # noqa: W291

REAL_TUN_INFO_HEAD = """\
IP Virtual Server version 1.2.1 (size=4096)
Prot LocalAddress:Port Scheduler Flags
  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn InActConn
TCP  10.1.0.16:80 rr
  -> 10.1.5.1:80                  Tunnel  gue:6080:-c   1      0          0         
  -> 10.1.5.2:80                  Tunnel  gre:+c        1      0          0         
  -> 10.1.5.3:80                  Tunnel  gue:6081:r+c  1      0          0         
  -> 10.1.5.4:80                  Tunnel  gre:-c        1      0          0         
  -> 10.1.5.5:80                  Tunnel  gue:6082:-c   1      0          0         
  -> 10.1.5.6:80                  Route   n/a           1      0          0         
  -> 10.1.5.7:9090                Masq    n/a           65535  0          0         
  -> [2001:db8::77]:80            Tunnel  ipip          1      0          0         
  -> 127.0.0.1:80                 Masq    n/a           1      0          0         
"""  # noqa: W291

INFO: dict[str, Any] = {"version": "1.2.1", "conn_table_size": 4096}
WEB = ServiceKey.virtual(Protocol.TCP, "200.0.0.254", 80)


class FakeNames:
    """A services and hosts database for tests: http=80, domain=53, hosts ``web1`` and
    ``v6host`` (which, as with ipvsadm's gethostbyname, no rule can name)."""

    ports: ClassVar[dict[tuple[str, Protocol], int]] = {
        ("http", Protocol.TCP): 80, ("www", Protocol.TCP): 80, ("domain", Protocol.UDP): 53,
        ("http-alt", Protocol.TCP): 8080}
    hosts: ClassVar[dict[str, Address]] = {"web1": ipaddress.IPv4Address("192.168.1.2"),
             "v6host": ipaddress.IPv6Address("2001:db8::7")}

    def host_name(self, address: Address) -> str | None:
        return next((n for n, a in self.hosts.items() if a == address), None)

    def service_name(self, port: int, protocol: Protocol) -> str | None:
        return next((n for (n, p), v in self.ports.items()
                     if v == port and p is protocol and n != "www"), None)

    def host_address(self, name: str) -> ipaddress.IPv4Address | None:
        address = self.hosts.get(name)
        return address if isinstance(address, ipaddress.IPv4Address) else None

    def service_port(self, name: str, protocol: Protocol) -> int | None:
        return self.ports.get((name, protocol))


def numeric_parse(text: str) -> Table:
    return parse(text, "save", resolver=NumericResolver())


