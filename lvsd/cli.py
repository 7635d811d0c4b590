"""``lvsd`` command line: run | check-config | save | restore | show | import | doctor | ctl |
realserver | announce.

Exit codes: 0 success (check-config: valid, warnings printed); 1 an operation failed (kernel
refused); 2 bad usage or an unreadable/invalid input file, config included (nothing was
changed); 3 the kernel has no IPVS or lvsd lacks CAP_NET_ADMIN.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from lvsd import (
    __version__,
    cli_announce,
    cli_ctl,
    cli_ctlview,
    cli_doctor,
    cli_import,
    cli_realserver,
)
from lvsd.errors import ConfigError, IpvsUnavailable, LvsdError, Problem, SaveFormatError

if TYPE_CHECKING:
    from lvsd.ipvs.backend import KernelInfo
    from lvsd.model import Table
    from lvsd.spec import Config

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_NO_IPVS = 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lvsd", description="Health-checking director daemon for Linux Virtual Server."
    )
    parser.add_argument("--version", action="version", version=f"lvsd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the daemon")
    run.add_argument("-c", "--config", type=Path, default=Path("/etc/lvsd/lvsd.toml"))

    check = sub.add_parser("check-config", help="validate a config file and print every error")
    check.add_argument("config", nargs="?", default="/etc/lvsd/lvsd.toml",
                       help="the config file, or - for stdin (default: %(default)s)")
    check.add_argument("--json", action="store_true",
                       help="print one JSON object: valid, problems and warnings as "
                            "{where, message}")

    save = sub.add_parser("save", help="dump the live table in ipvsadm-save format")
    save.add_argument("file", nargs="?", help="write here atomically (default: stdout)")
    save.add_argument("--resolve", action="store_true",
                      help="service names like plain ipvsadm-save (default: numeric, like -n)")
    save.add_argument("--compat", action="store_true",
                      help="exactly what ipvsadm-save prints: drop thresholds and timeouts")

    restore = sub.add_parser("restore", help="make the live table equal to a save file")
    restore.add_argument("file", help="an ipvsadm-save file, or - for stdin")
    restore.add_argument("--noflush", action="store_true",
                         help="only add and edit; delete nothing")
    restore.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    restore.add_argument("--against", metavar="FILE",
                         help="with --dry-run: plan against this save file instead of the "
                              "kernel (/dev/null: an empty table); needs no IPVS")

    show = sub.add_parser("show", help="print the live table like ipvsadm -Ln")
    group = show.add_mutually_exclusive_group()
    group.add_argument("--stats", action="store_true", help="with traffic counters")
    group.add_argument("--rate", action="store_true", help="with rates")
    group.add_argument("--thresholds", action="store_true", help="with connection thresholds")
    group.add_argument("--persistent-conn", action="store_true",
                       help="with persistent connections")
    group.add_argument("--tun-info", action="store_true", help="with tunnel settings")
    show.add_argument("--exact", action="store_true", help="counters unabbreviated")
    show.add_argument("--json", action="store_true",
                      help="the table as JSON (every attribute and counter)")

    cli_import.add_parser(sub)
    cli_doctor.add_parser(sub)
    cli_ctlview.add_parsers(cli_ctl.add_parser(sub))
    cli_realserver.add_parser(sub)
    cli_announce.add_parser(sub)
    return parser


def raise_open_files_limit() -> None:
    """Every probe in flight holds a socket (``max_probes_in_flight``, 10,000 by default):
    the soft limit on open files goes up to the hard one, as the unit's ``LimitNOFILE``
    does; a shell's usual soft limit of 1,024 would fail probes for want of descriptors."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        match args.command:
            case "run":
                from lvsd.signals import EarlySignals

                early = EarlySignals()
                early.install()  # before the daemon's imports, which take seconds on a slow host
                raise_open_files_limit()
                try:
                    # What the imports build lives as long as the process: the collections
                    # they would set off (~10% of their time) would find nothing to free.
                    gc.disable()
                    try:
                        from lvsd.daemon import run_daemon
                    finally:
                        gc.enable()
                    return run_daemon(args.config, early)
                finally:
                    early.restore()
            case "check-config":
                if args.json:
                    return check_config_json(args.config)
                return check_config(args.config)
            case "save":
                return asyncio.run(save(args.file, resolve=args.resolve, compat=args.compat))
            case "restore":
                if args.against is not None and not args.dry_run:
                    print("lvsd: restore --against needs --dry-run", file=sys.stderr)
                    return EXIT_BAD_INPUT
                return asyncio.run(restore(args.file, noflush=args.noflush, dry_run=args.dry_run,
                                           against=args.against))
            case "show" if args.json:
                return asyncio.run(show_json())
            case "show":
                return asyncio.run(show(stats=args.stats, rate=args.rate,
                                        thresholds=args.thresholds,
                                        persistent_conn=args.persistent_conn,
                                        tun_info=args.tun_info, exact=args.exact))
            case "import":
                return cli_import.run(args)
            case "doctor":
                return cli_doctor.run(args)
            case "ctl" if args.ctl_command in cli_ctlview.COMMANDS:
                return cli_ctlview.run(args)
            case "ctl":
                return cli_ctl.run(args)
            case "realserver":
                return cli_realserver.run(args)
            case "announce":
                return cli_announce.run(args)
    except (ConfigError, SaveFormatError) as exc:
        print(f"lvsd: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except IpvsUnavailable as exc:
        print(f"lvsd: {exc}", file=sys.stderr)
        return EXIT_NO_IPVS
    except LvsdError as exc:
        print(f"lvsd: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        return 130
    return EXIT_FAILED


def _load_config(path: str) -> Config:
    """The config at ``path``, ``-`` being stdin; raises ConfigError."""
    from lvsd.config import load, loads

    if path != "-":
        return load(path)
    data = sys.stdin.buffer.read()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError("<stdin>", [Problem("", f"not UTF-8: {exc}")]) from exc
    return loads(text, source="<stdin>")


def check_config_json(path: str) -> int:
    """Like check_config, as one JSON object on stdout."""
    import json

    def problems(items: Sequence[Problem]) -> list[dict[str, str]]:
        return [{"where": p.where, "message": p.message} for p in items]

    try:
        config = _load_config(path)
    except ConfigError as exc:
        report = {"source": exc.source, "valid": False, "problems": problems(exc.problems),
                  "warnings": []}
        print(json.dumps(report, indent=2))
        return EXIT_BAD_INPUT
    print(json.dumps({
        "source": config.source, "valid": True, "problems": [],
        "warnings": problems(config.warnings),
        "services": len(config.services),
        "real_servers": sum(len(s.servers) for s in config.services),
        "checked": sum(1 for s in config.services for r in s.servers if r.checks),
    }, indent=2))
    return EXIT_OK


def check_config(path: str) -> int:
    """Exit 0 when the config is valid (its warnings printed), 2 when it is not."""
    try:
        config = _load_config(path)
    except ConfigError as exc:
        print(f"{exc.source}: invalid, {len(exc.problems)} problem(s):", file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
    servers = sum(len(s.servers) for s in config.services)
    checked = sum(1 for s in config.services for r in s.servers if r.checks)
    print(f"{config.source}: OK, {len(config.services)} service(s), {servers} real server(s), "
          f"{checked} checked")
    if not config.services:
        print(f"{config.source}: allow_empty = true: at start and on reload lvsd deletes every "
              f"service it owns")
    if config.warnings:
        print(f"{config.source}: {len(config.warnings)} warning(s):")
        for warning in config.warnings:
            print(f"  warning: {warning}")
    return EXIT_OK


def _read_input(file: str) -> tuple[bytes, str]:
    """The bytes of ``file`` (``-`` is stdin) and the name errors give it."""
    if file == "-":
        return sys.stdin.buffer.read(), "<stdin>"
    return Path(file).read_bytes(), file


async def save(file: str | None, *, resolve: bool, compat: bool) -> int:
    from lvsd.files import write_atomic
    from lvsd.ipvs.netlink import NetlinkIpvs
    from lvsd.ipvsadm.save import format_table

    backend = NetlinkIpvs()
    try:
        table = await backend.dump()
    finally:
        await backend.close()
    text = format_table(table, resolve=resolve, compat=compat)
    if file is None or file == "-":
        sys.stdout.write(text)
    else:
        write_atomic(Path(file), text)
    return EXIT_OK


async def restore(file: str, *, noflush: bool, dry_run: bool, against: str | None) -> int:
    from lvsd.ipvsadm.restore import parse, restore_plan
    from lvsd.ipvsadm.save import format_op
    from lvsd.model import Table

    try:
        data, source = await asyncio.to_thread(_read_input, file)
        current = None if against is None else await asyncio.to_thread(_read_input, against)
    except OSError as exc:
        print(f"lvsd: cannot read {exc.filename or file}: {exc.strerror or exc}",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    wanted = parse(data, source)  # raises before anything touches the kernel
    if current is not None:
        for op in restore_plan(wanted, parse(*current), noflush=noflush):
            print(format_op(op))
        return EXIT_OK

    from lvsd.ipvs.netlink import NetlinkIpvs

    backend = NetlinkIpvs()
    try:
        try:
            actual = await backend.dump()
        except IpvsUnavailable as exc:
            if not dry_run:
                raise
            print(f"lvsd: {exc}; planning against an empty table (--against FILE compares "
                  f"with a saved one)", file=sys.stderr)
            actual = Table()
        ops = restore_plan(wanted, actual, noflush=noflush)
        if dry_run:
            for op in ops:
                print(format_op(op))
            return EXIT_OK
        errors = await backend.apply(ops)
    finally:
        await backend.close()
    for error in errors:
        print(f"lvsd: {error}", file=sys.stderr)
    return EXIT_FAILED if errors else EXIT_OK


async def _table_and_info() -> tuple[Table, KernelInfo]:
    from lvsd.ipvs.netlink import NetlinkIpvs

    backend = NetlinkIpvs()
    try:
        return await backend.dump(), await backend.info()
    finally:
        await backend.close()


async def show_json() -> int:
    import json

    from lvsd.tablejson import table_json

    table, info = await _table_and_info()
    print(json.dumps({"version": info.version, "conn_table_size": info.conn_table_size,
                      **table_json(table)}, indent=2))
    return EXIT_OK


async def show(*, stats: bool, rate: bool, thresholds: bool, persistent_conn: bool,
               tun_info: bool, exact: bool) -> int:
    from lvsd.ipvsadm.listing import format_listing

    table, info = await _table_and_info()
    sys.stdout.write(format_listing(table, stats=stats, rate=rate, thresholds=thresholds,
                                    persistent_conn=persistent_conn, tun_info=tun_info,
                                    exact=exact, version=info.version,
                                    conn_table_size=info.conn_table_size))
    return EXIT_OK
