"""``lvsd realserver apply|check|remove --vip VIP [--vip …] [--mode dr|tun] [--persist]``.

Run on a real server (not the director). Exit codes: 0 done / in place; 1 a change failed
(everything this run changed was put back) or ``check`` found pieces missing; 2 bad usage.
"""

from __future__ import annotations

import argparse
import ipaddress
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from lvsd.errors import LvsdError

if TYPE_CHECKING:
    from lvsd.model import Address

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2


def _vip(text: str) -> Address:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IP address") from None


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("realserver", help="set up (or check, or undo) a real server for "
                                               "its VIPs: VIP on lo, ARP sysctls, tunnel")
    actions = parser.add_subparsers(dest="realserver_action", required=True, metavar="ACTION")
    helps = {"apply": "make the set-up (idempotent); records what it changed",
             "check": "list each missing piece with the command that fixes it; exit 1 if any",
             "remove": "undo exactly what apply changed (all VIPs, or those given)"}
    for name, text in helps.items():
        action = actions.add_parser(name, help=text)
        action.add_argument("--vip", type=_vip, action="append", required=name != "remove",
                            default=[], metavar="VIP", help="a virtual IP (repeat for more)")
        if name != "remove":
            action.add_argument("--mode", choices=("dr", "tun"), default="dr",
                                help="dr: VIP on lo (default); tun: VIP on the ipip tunnel "
                                     "device (tunl0, ip6tnl0), rp_filter loose")
            action.add_argument("--persist", action="store_true",
                                help="also a sysctl.d file and a systemd unit that re-applies "
                                     "at boot (check: those files too)")
        action.add_argument("--root", type=Path, default=Path("/"), metavar="DIR",
                            help="write (and read) the record and the --persist files under "
                                 "DIR (default: /)")


def lvsd_executable() -> str:
    beside = Path(sys.executable).with_name("lvsd")
    if beside.is_file():
        return str(beside)
    return shutil.which("lvsd") or "/usr/bin/lvsd"


def run(args: argparse.Namespace, proc_sys: Path = Path("/proc/sys")) -> int:
    from lvsd.realserver.actions import Target, apply, check, remove
    from lvsd.realserver.host import Host

    vips = list(dict.fromkeys(args.vip))
    target = Target(args.root, lvsd_executable())
    try:
        with Host(proc_sys) as host:
            match args.realserver_action:
                case "check":
                    lacking = check(host, vips, args.mode, persisted=args.persist,
                                    target=target, say=print)
                    if lacking:
                        print(f"{lacking} piece(s) missing", file=sys.stderr)
                        return EXIT_FAILED
                    print(f"in place: {args.mode} set-up for {', '.join(map(str, vips))}")
                case "apply":
                    apply(host, vips, args.mode, persisted=args.persist, target=target,
                          say=print)
                case "remove":
                    remove(host, vips, target=target, say=print)
    except LvsdError as exc:
        print(f"lvsd: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK
