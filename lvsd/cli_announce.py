"""``lvsd announce exabgp``: ExaBGP API lines following the routes lvsd announces.

The table and protocol come from the config's ``[announce]`` (``--config``), or from
``--table``/``--protocol``, which win. See ``lvsd.exabgp``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from pathlib import Path

EXIT_BAD_INPUT = 2


def _checked(text: str, check: Callable[[int], str | None]) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    error = check(value)
    if error is not None:
        raise argparse.ArgumentTypeError(error)
    return value


# lvsd.limits (and lvsd.model under it) load only when the option is given, not for every
# ``lvsd`` command that builds the parser.
def _route_table(text: str) -> int:
    from lvsd.limits import route_table_error

    return _checked(text, route_table_error)


def _route_protocol(text: str) -> int:
    from lvsd.limits import route_protocol_error

    return _checked(text, route_protocol_error)


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("announce", help="follow the VIPs lvsd announces, for a BGP speaker")
    kinds = parser.add_subparsers(dest="announce_kind", required=True, metavar="SPEAKER")
    exabgp = kinds.add_parser(
        "exabgp", help="print ExaBGP API lines (announce/withdraw route VIP next-hop self) "
                       "as lvsd announces and withdraws VIPs; run it from ExaBGP's process")
    exabgp.add_argument("-c", "--config", type=Path, default=Path("/etc/lvsd/lvsd.toml"),
                        help="lvsd's config, for [announce] table and protocol "
                             "(default: %(default)s)")
    exabgp.add_argument("--table", type=_route_table,
                        help="the kernel table lvsd keeps its routes in (default: the config's)")
    exabgp.add_argument("--protocol", type=_route_protocol,
                        help="lvsd's route protocol number (default: the config's)")
    exabgp.add_argument("--next-hop", default="self",
                        help="the next hop of each route (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    """Raises ConfigError for an unreadable config (exit 2 in the caller)."""
    from lvsd import exabgp

    table, protocol = args.table, args.protocol
    if table is None or protocol is None:
        from lvsd.config import load

        settings = load(args.config).announce
        if settings is None:
            print(f"lvsd: {args.config} has no [announce] section; give --table and "
                  f"--protocol", file=sys.stderr)
            return EXIT_BAD_INPUT
        table = settings.table if table is None else table
        protocol = settings.protocol if protocol is None else protocol
    return asyncio.run(exabgp.run(table, protocol, args.next_hop))
