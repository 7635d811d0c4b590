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


# --- restore files ------------------------------------------------------------------------

HEAD = ("-A -t 192.0.2.1:80 -s rr\n"
        "-a -t 192.0.2.1:80 -r 198.51.100.2 -g -w 1\n"
        "# a comment\n")
TAIL = "-A -t 192.0.2.5:80 -s rr\n"


def at4(bad: str) -> str:
    """``bad`` as line 4 of a file that is fine around it."""
    return f"{HEAD}{bad}\n{TAIL}"


SV6 = "-A -t [2001:db8::5]:80 -s rr\n"

# Malformed restore files by category: (id, file, line number, what lvsd's error says).
MALFORMED: list[tuple[str, str | bytes, int, str]] = [
    # truncated options
    ("service without value", "-A -t\n", 1, "option '-t' needs a value"),
    ("netmask without value", at4("-A -t 192.0.2.9:80 -p 30 -M"), 4, "'-M' needs a value"),
    ("real server without value", at4("-a -t 192.0.2.1:80 -r"), 4, "'-r' needs a value"),
    ("two timeouts", at4("--set 1 2"), 4, "--set needs exactly three timeouts"),
    ("empty long value", at4("-A --tcp-service= -s rr"), 4, "bad address ''"),
    ("empty port", at4("-A -t 192.0.2.9: -s rr"), 4, "bad port ''"),
    ("empty weight", at4("-a -t 192.0.2.1:80 -r 198.51.100.7 --weight="), 4,
     "weight '' is not a decimal integer"),
    # duplicates
    ("scheduler twice", at4("-A -t 192.0.2.9:80 -s rr -s wrr"), 4, "option '-s' given twice"),
    ("scheduler two spellings", at4("-A -t 192.0.2.9:80 --scheduler rr -s wrr"), 4,
     "option '-s' conflicts with '--scheduler'"),
    ("persistence two spellings", at4("-A -t 192.0.2.9:80 -p 10 --persistent 20"), 4,
     "conflicts with '-p'"),
    ("duplicate service", at4("-A -t 192.0.2.1:80 -s wlc"), 4,
     "duplicate service tcp:192.0.2.1:80 (first defined on line 1)"),
    ("duplicate real server", at4("-a -t 192.0.2.1:80 -r 198.51.100.2:80 -m"), 4,
     "duplicate real server 198.51.100.2:80 of tcp:192.0.2.1:80 (first defined on line 2)"),
    ("second --set", "--set 1 2 3\n-A -t 192.0.2.1:80\n--set 4 5 6\n", 3,
     "a second --set line (the first is line 1)"),
    # order
    ("real server before its service", "-a -t 192.0.2.9:80 -r 198.51.100.1\n", 1,
     "no -A line for it above"),
    ("edit before add", at4("-e -t 192.0.2.1:80 -r 198.51.100.7 -w 1"), 4, "not defined above"),
    ("delete twice", HEAD + "-D -t 192.0.2.1:80\n-D -t 192.0.2.1:80\n", 5,
     "no -A line for it above"),
    ("-6 before -f", at4("-A -6 -f 9 -s rr"), 4, "-6 before -f: ipvsadm refuses it"),
    ("IPv6 netmask before the service", at4("-A -M 64 -t [2001:db8::1]:80 -p"), 4,
     "comes before ipvsadm knows the service is IPv6"),
    ("IPv6 fwmark netmask before -6", at4("-A -f 9 -p 30 -M 64 -6"), 4,
     "comes before ipvsadm knows the service is IPv6"),
    ("portless real server before the service", at4("-a -r 198.51.100.7 -t 192.0.2.1:80 -m"), 4,
     "ipvsadm would give it port 0"),
    ("named port before the service", at4("-a -r 198.51.100.7:http -t 192.0.2.1:80 -m"), 4,
     "cannot look it up"),
    ("clear after rules", at4("-C"), 4, "-C (clear) would discard the 1 service(s)"),
    # unknown and misplaced options
    ("unknown long option", at4("-A -t 192.0.2.9:80 -s rr --bogus"), 4,
     "unknown option '--bogus'"),
    ("unknown short option", at4("-A -t 192.0.2.9:80 -Q"), 4, "unknown option '-Q'"),
    ("listing command", at4("-L -n"), 4, "-L changes no rule"),
    ("zero command", at4("-Z"), 4, "-Z changes no rule"),
    ("listing option", at4("-A -t 192.0.2.9:80 --stats"), 4, "is for listing"),
    ("value on a flag", at4("-a -t 192.0.2.1:80 -r 198.51.100.7 -i --tun-csum=1"), 4,
     "option '--tun-csum' takes no value"),
    ("not a command", at4("frobnicate -A"), 4, "a line must start with a command"),
    ("option before command", at4("-t 192.0.2.9:80 -A"), 4, "a line must start with a command"),
    ("two commands", at4("-A -t 192.0.2.9:80 -a"), 4, "more than one command"),
    ("server option on a service", at4("-A -t 192.0.2.9:80 -w 3"), 4,
     "option '-w' is not allowed with -A"),
    # numbers: overflow, hex, exponents
    ("huge weight", at4("-a -t 192.0.2.1:80 -r 198.51.100.7 -w 99999999999999999999999"), 4,
     "weight 99999999999999999999999 is out of range 0..65535"),
    ("hex weight", at4("-a -t 192.0.2.1:80 -r 198.51.100.7 -w 0x10"), 4,
     "weight '0x10' is not a decimal integer"),
    ("exponent weight", at4("-a -t 192.0.2.1:80 -r 198.51.100.7 -w 1e3"), 4,
     "weight '1e3' is not a decimal integer"),
    ("persistence above 31 days", at4("-A -t 192.0.2.9:80 -p 2678401"), 4,
     "persistence timeout 2678401 s is above 2678400 s"),
    ("threshold above u32", at4("-a -t 192.0.2.1:80 -r 198.51.100.7 -x 4294967296"), 4,
     "upper threshold 4294967296 is out of range"),
    ("lower above upper", at4("-a -t 192.0.2.1:80 -r 198.51.100.7 -x 5 -y 10"), 4,
     "lower threshold 10 is above the upper threshold 5"),
    ("timeout above the kernel's", at4("--set 2147484 0 0"), 4,
     "tcp timeout 2147484 s is above 2147483 s"),
    ("fwmark above u32", at4("-A -f 4294967296"), 4, "fwmark 4294967296 is out of range"),
    ("negative fwmark", at4("-A -f -5"), 4, "fwmark -5 is negative"),
    ("tunnel port above 65535",
     at4("-a -t 192.0.2.1:80 -r 198.51.100.7 -i --tun-type gue --tun-port 65536"), 4,
     "gue tunnel port 65536 is out of range"),
    ("IPv6 prefix above 128", at4("-A -t [2001:db8::9]:80 -p 5 -M 4294967295"), 4,
     "IPv6 persistence prefix 4294967295 is out of range 1..128"),
    # addresses
    ("bad octet", at4("-A -t 192.0.2.300:80"), 4, "bad address '192.0.2.300'"),
    ("short dotted address", at4("-A -t 10.1:80 -s rr"), 4,
     "write an IPv4 address as four decimal numbers"),
    ("multicast VIP", at4("-A -t 224.0.0.1:80"), 4, "224.0.0.1 is a multicast address"),
    ("broadcast VIP", at4("-A -u 255.255.255.255:53"), 4, "is the broadcast address"),
    ("unspecified VIP", at4("-A -t 0.0.0.0:80"), 4, "is the unspecified address"),
    ("zero-network real server", at4("-a -t 192.0.2.1:80 -r 0.0.0.5"), 4,
     "0.0.0.5 is in 0.0.0.0/8"),
    ("link-local real server", at4("-a -t 192.0.2.1:80 -r 169.254.1.1 -m"), 4,
     "169.254.1.1 is a link-local address"),
    ("scoped IPv6", at4("-A -t [fe80::1%eth0]:80"), 4, "only an IPv6 address goes in brackets"),
    ("IPv4 in brackets", at4("-A -t [192.0.2.9]:80"), 4, "only an IPv6 address goes in brackets"),
    ("unclosed bracket", at4("-A -t [2001:db8::1:80"), 4, "write [IPv6-address]:port"),
    ("IPv6 without brackets", at4("-A -t 2001:db8::1:80 -s rr"), 4,
     "port 0 (all ports) needs persistence"),
    ("bad bare IPv6", at4("-A -u 2001:db8::zz:53 -p"), 4, "write [IPv6-address]:port"),
    ("bare port", at4("-a -t 192.0.2.1:80 -r 80"), 4, "a port without an address"),
    # mixed families
    ("IPv6 server on IPv4 masq", at4("-a -t 192.0.2.1:80 -r [2001:db8::1]:80 -m"), 4,
     "a real server of another address family needs -i"),
    ("IPv4 server on IPv6 fwmark", "-A -f 9 -6\n-a -f 9 -6 -r 198.51.100.1 -g\n", 2,
     "a real server of another address family needs -i"),
    ("-6 on a TCP service", at4("-A -t 192.0.2.9:80 -6"), 4, "only for fwmark services"),
    ("IPv4 netmask on IPv6", SV6 + "-E -t [2001:db8::5]:80 -p 9 -M 255.255.255.0\n", 2,
     "'255.255.255.0' is not a decimal integer"),
    # characters ipvsadm-restore reads differently from str.splitlines() and str.split()
    ("form feed", at4("-A -t 192.0.2.9:80\f-s rr"), 4, "a form feed (\\f) at column 19"),
    ("vertical tab", at4("-A\v-t 192.0.2.9:80"), 4, "a vertical tab (\\v) at column 3"),
    ("file separator", at4("-A -t 192.0.2.9:80 \x1c"), 4, "a file separator (\\x1c)"),
    ("group separator", at4("\x1d-A -t 192.0.2.9:80"), 4, "a group separator (\\x1d)"),
    ("record separator", at4("-A -t 192.0.2.9:80\x1e"), 4, "a record separator (\\x1e)"),
    ("next line", at4("-A -t 192.0.2.9:80\x85-s rr"), 4, "a next-line character (U+0085)"),
    ("line separator", at4("-A -t 192.0.2.9:80\u2028-s rr"), 4, "a line separator (U+2028)"),
    ("paragraph separator", at4("-A -t\u2029192.0.2.9:80"), 4,
     "a paragraph separator (U+2029)"),
    ("NUL in a host name", at4("-A -t web\x00:80 -s rr"), 4, "a NUL byte at column 10"),
    ("NUL in a comment", HEAD + "# \x00\n" + TAIL, 4, "a NUL byte at column 3"),
    ("latin-1 byte", HEAD.encode() + b"-A -t caf\xe9:80\n", 4,
     "the byte 0xE9, which is not UTF-8 text"),
    ("latin-1 comment", b"-A -t 192.0.2.1:80\n# caf\xe9\n", 2, "the byte 0xE9"),
    ("non-ASCII host", at4("-A -t café:80"), 4, "non-ASCII character 'é' (U+00E9"),
    ("CRLF file, bad line", (HEAD + "-A -t 192.0.2.9:80 -s nosuch\n").replace("\n", "\r\n"), 4,
     "unknown scheduler 'nosuch'"),
    # trailing junk
    ("extra word", at4("-A -t 192.0.2.9:80 -s rr junk"), 4, "unexpected argument 'junk'"),
    ("trailing comment", at4("-A -t 192.0.2.9:80 -s rr # web"), 4, "unexpected argument '#'"),
    ("indented comment", at4("  # not at column 1"), 4, "a comment must start at the beginning"),
    ("after end of options", at4("-A -t 192.0.2.9:80 -- -s rr"), 4, "unexpected argument '-s'"),
    # huge
    ("a megabyte word", at4("-A -t " + "9" * 1_000_000), 4, "a word of 1000000 characters"),
    ("error after 100k lines", "# x\n" * 100_000 + "-A -t 192.0.2.9:80 -s nosuch\n", 100_001,
     "unknown scheduler"),
    # values
    ("unknown scheduler", at4("-A -t 192.0.2.9:80 -s fastest"), 4, "unknown scheduler 'fastest'"),
    ("flag of another scheduler", at4("-A -t 192.0.2.9:80 -s rr -b sh-port"), 4,
     "scheduler flag 'sh-port' needs scheduler 'sh'"),
    ("empty flag list", at4("-A -t 192.0.2.9:80 -s sh -b ,"), 4, "no scheduler flag in ','"),
    ("unknown engine", at4("-A -u 192.0.2.9:5060 -p --pe http"), 4,
     "unknown persistence engine 'http'"),
    ("one-packet on TCP", at4("-A -t 192.0.2.9:80 -o"), 4, "only for UDP and fwmark services"),
    ("gue without port", at4("-a -t 192.0.2.1:80 -r 198.51.100.7 -i --tun-type gue"), 4,
     "tunnel type gue needs --tun-port"),
    ("tunnel option without -i", at4("-a -t 192.0.2.1:80 -r 198.51.100.7 --tun-type ipip"), 4,
     "--tun-type needs -i"),
    ("checksum on ipip", at4("-a -t 192.0.2.1:80 -r 198.51.100.7 -i --tun-nocsum"), 4,
     "--tun-nocsum is not allowed with tunnel type ipip"),
    ("delete an unknown server", at4("-d -t 192.0.2.1:80 -r 198.51.100.9"), 4,
     "real server 198.51.100.9:80 of tcp:192.0.2.1:80 is not defined above"),
    ("edit an unknown service", at4("-E -t 192.0.2.9:80 -s rr"), 4, "no -A line for it above"),
]

# Where lvsd refuses what ipvsadm-restore runs: ipvsadm reads it another way than it reads,
# loses a value, or the bound is the kernel's on some builds (why, by MALFORMED id).
STRICTER: dict[str, str] = {
    "clear after rules": "-C mid-file throws away the rules above it: almost surely a mistake",
    "second --set": "the first --set would be silently overridden",
    "IPv6 netmask before the service": "ipvsadm reads -M as IPv4 and then resets it to 128",
    "IPv6 fwmark netmask before -6": "ipvsadm reads -M as IPv4 and -6 resets it to 128",
    "portless real server before the service": "ipvsadm gives the server port 0, not 80",
    "short dotted address": "inet_aton reads 10.1 as 10.0.0.1",
    "link-local real server": "lvsd.limits refuses link-local real servers",
    "zero-network real server": "lvsd.limits refuses 0.0.0.0/8 (kernel 6.1 took 0.0.0.5 for DR)",
    "unspecified VIP": "lvsd.limits refuses 0.0.0.0 as a virtual address",
    "broadcast VIP": "lvsd.limits refuses the broadcast address as a virtual address",
    "multicast VIP": "lvsd.limits refuses multicast virtual addresses",
    "latin-1 comment": "lvsd reads files as UTF-8; grep in the C locale passes any byte",
    "listing command": "-L in a restore file changes no rule",
    "zero command": "-Z in a restore file changes no rule",
    "timeout above the kernel's": "above INT_MAX jiffies at HZ 1000; Debian's HZ 250 takes it",
}

# Files both ipvsadm-restore and lvsd accept, in spellings ipvsadm-save never writes, and the
# table each means, as lvsd saves it (``format_table(sort=False)``).
ACCEPTED: list[tuple[str, str, str]] = [
    ("signs and leading zeros",
     "-A -t 192.0.2.1:+80 -s rr\n-a -t 192.0.2.1:80 -r 198.51.100.1:0080 -m -w +007 -x +10 "
     "-y -0\n",
     "-A -t 192.0.2.1:80 -s rr\n-a -t 192.0.2.1:80 -r 198.51.100.1:80 -m -w 7 -x 10\n"),
    ("attached values and clusters",
     "-A -t192.0.2.1:80 -srr -p30\n-a -t 192.0.2.1:80 -r198.51.100.1:8080 -mw5\n",
     "-A -t 192.0.2.1:80 -s rr -p 30\n-a -t 192.0.2.1:80 -r 198.51.100.1:8080 -m -w 5\n"),
    ("ipvsadm words anywhere", "ipvsadm -A ipvsadm -t 192.0.2.1:80 ipvsadm -s rr ipvsadm\n",
     "-A -t 192.0.2.1:80 -s rr\n"),
    ("CRLF and tabs",
     "-A\t-t 192.0.2.1:80 -s rr\r\n\r\n-a -t 192.0.2.1:80 -r 198.51.100.1\t-g\r\n",
     "-A -t 192.0.2.1:80 -s rr\n-a -t 192.0.2.1:80 -r 198.51.100.1:80 -g -w 1\n"),
    ("a lone CR separates words", "-A -t 192.0.2.1:80\r-s rr\n", "-A -t 192.0.2.1:80 -s rr\n"),
    ("end of options", "-A -t 192.0.2.1:80 -s rr --\n", "-A -t 192.0.2.1:80 -s rr\n"),
    ("-6 twice", "-A -f 9 -6 -6 -s rr\n", "-A -f 9 -6 -s rr\n"),
    ("empty scheduler flag items", "-A -t 192.0.2.1:80 -s sh -b ,sh-port,,\n",
     "-A -t 192.0.2.1:80 -s sh -b sh-port\n"),
    ("flags before the scheduler", "-A -t 192.0.2.1:80 -b mh-port -s mh\n",
     "-A -t 192.0.2.1:80 -s mh -b mh-port\n"),
    ("IPv4 netmask before the service", "-A -M 255.255.255.0 -p 10 -t 192.0.2.1:80\n",
     "-A -t 192.0.2.1:80 -s wlc -p 10 -M 255.255.255.0\n"),
    ("real server with a port before the service",
     "-A -t 192.0.2.1:80\n-a -r 198.51.100.1:8080 -m -t 192.0.2.1:80\n",
     "-A -t 192.0.2.1:80 -s wlc\n-a -t 192.0.2.1:80 -r 198.51.100.1:8080 -m -w 1\n"),
    ("portless DR server before the service",
     "-A -t 192.0.2.1:80\n-a -r 198.51.100.1 -t 192.0.2.1:80\n",
     "-A -t 192.0.2.1:80 -s wlc\n-a -t 192.0.2.1:80 -r 198.51.100.1:80 -g -w 1\n"),
    ("signed fwmark and timeouts", "-A -f +9 -s rr\n--set +30 05 60\n",
     "--set 30 5 60\n-A -f 9 -s rr\n"),
    ("bare -p before an option", "-A -t 192.0.2.1:0 -p -s rr\n",
     "-A -t 192.0.2.1:0 -s rr -p 360\n"),
    ("bare -p at the end", "-A -u 192.0.2.1:53 -s rr -p\n", "-A -u 192.0.2.1:53 -s rr -p 360\n"),
    ("long options with =",
     "--add-service --tcp-service=192.0.2.1:80 --scheduler=wrr --persistent=50 "
     "--netmask=255.255.0.0\n",
     "-A -t 192.0.2.1:80 -s wrr -p 50 -M 255.255.0.0\n"),
    ("comments with any text", "#\f\v\u2028 any text\n# \u00e9\n-A -t 192.0.2.1:80 -s rr\n",
     "-A -t 192.0.2.1:80 -s rr\n"),
    ("blank lines", "   \t\r\n-A -t 192.0.2.1:80 -s rr\n\n\n", "-A -t 192.0.2.1:80 -s rr\n"),
    ("bare IPv6 real server",
     "-A -t [2001:db8::5]:80 -s rr\n-a -t [2001:db8::5]:80 -r 2001:db8::6 -m\n",
     "-A -t [2001:db8::5]:80 -s rr\n-a -t [2001:db8::5]:80 -r [2001:db8::6]:80 -m -w 1\n"),
    ("no newline at the end", "-A -t 192.0.2.1:80 -s rr", "-A -t 192.0.2.1:80 -s rr\n"),
]
