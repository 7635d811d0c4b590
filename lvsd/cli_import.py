"""``lvsd import ipvsadm-save|keepalived FILE [-o OUT]``: write an lvsd config from a setup.

The config written is loaded back with ``lvsd.config.loads`` before anything is written: an
import that ``check-config`` would refuse fails here instead, with the problems listed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lvsd.errors import ConfigError

EXIT_OK = 0
EXIT_FAILED = 1


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("import", help="write an lvsd config from ipvsadm-save or "
                                           "keepalived.conf")
    kinds = parser.add_subparsers(dest="import_kind", required=True, metavar="FORMAT")
    save = kinds.add_parser("ipvsadm-save", help="from ipvsadm-save [-n] output")
    save.add_argument("file", help="the save file, or - for stdin")
    keepalived = kinds.add_parser("keepalived", help="from keepalived.conf (LVS part)")
    keepalived.add_argument("file", type=Path, help="keepalived.conf (includes are followed)")
    keepalived.add_argument("--config-id", metavar="ID",
                            help="for @ID conditional lines (default: the host name, as "
                                 "keepalived)")
    for each in (save, keepalived):
        each.add_argument("-o", "--output", type=Path, metavar="FILE",
                          help="write the config here (default: stdout)")


def run(args: argparse.Namespace) -> int:
    """Raises ConfigError/SaveFormatError for an unreadable input (exit 2 in the caller)."""
    from lvsd.config import loads
    from lvsd.migrate.document import render

    if args.import_kind == "ipvsadm-save":
        from lvsd.ipvsadm.restore import parse
        from lvsd.migrate.ipvsadm import import_table

        if args.file == "-":
            text, source = sys.stdin.read(), "<stdin>"
        else:
            try:
                text, source = Path(args.file).read_text(encoding="utf-8"), args.file
            except (OSError, UnicodeDecodeError) as exc:
                print(f"lvsd: cannot read {args.file}: {exc}", file=sys.stderr)
                return 2
        document = import_table(parse(text, source), source)
    else:
        from lvsd.migrate.keepalived import import_keepalived

        document = import_keepalived(args.file, config_id=args.config_id)
    output = render(document)
    try:
        loads(output, source="the imported config")
    except ConfigError as exc:
        print(f"lvsd: the imported config would not load, {len(exc.problems)} problem(s):",
              file=sys.stderr)
        for problem in exc.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_FAILED
    if args.output is None:
        sys.stdout.write(output)
    else:
        from lvsd.files import write_atomic

        write_atomic(args.output, output)
    return EXIT_OK
