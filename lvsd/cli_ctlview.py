"""``lvsd ctl status`` and ``lvsd ctl events``: what the running daemon sees, and what it
changes as it changes it (``lvsd.control_views`` answers on the control socket).

Exit codes as the rest of ``lvsd ctl``; Ctrl-C ends ``--watch`` and ``events`` with 0, and
``events`` exits 1 when the daemon ends the stream (it stopped).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Coroutine
from typing import Any
from urllib.parse import urlencode

from lvsd.cli_ctl import EXIT_FAILED, EXIT_OK, ControlClient, Unreachable, refused, request

COMMANDS = ("status", "events")
WATCH_DEFAULT = 2.0
WATCH_MIN, WATCH_MAX = 0.5, 3600.0
CLEAR_SCREEN = "\x1b[H\x1b[2J"


def _watch_interval(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not WATCH_MIN <= seconds <= WATCH_MAX:
        raise argparse.ArgumentTypeError(f"{text} s: give {WATCH_MIN:g} to {WATCH_MAX:g}")
    return seconds


def _count(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"not a positive whole number: {text!r}")
    return int(text)


def add_parsers(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    status = commands.add_parser(
        "status", help="the table as ipvsadm -Ln --stats prints it, with each real server's "
                       "health, since when, why, probe latency, weights and admin state")
    status.add_argument("service", nargs="?", metavar="SERVICE",
                        help="only this service: its name or key (tcp:192.0.2.1:80)")
    status.add_argument("--json", action="store_true",
                        help="the status document as JSON (with --watch: one per line)")
    status.add_argument("--watch", action="store_true",
                        help="redraw every --interval seconds until Ctrl-C")
    status.add_argument("-n", "--interval", type=_watch_interval, default=WATCH_DEFAULT,
                        metavar="SECONDS",
                        help=f"with --watch: seconds between redraws, {WATCH_MIN:g} to "
                             f"{WATCH_MAX:g} (default: %(default)g)")
    status.add_argument("--exact", action="store_true", help="counters unabbreviated")
    events = commands.add_parser(
        "events", help="follow health, table, admin and reload events as JSON lines, in the "
                       "order lvsd makes the changes, from now on")
    events.add_argument("--count", type=_count, metavar="N",
                        help="exit after N events")


def run(args: argparse.Namespace) -> int:
    if args.ctl_command == "events":
        return _until_done(follow_events(args))
    # The status table's modules (lvsd.model, the ipvsadm listing) load for status only.
    from lvsd.statusview import StatusDocumentError

    return _until_done(show_status(args), StatusDocumentError)


def _until_done(command: Coroutine[Any, Any, int], *fatal: type[Exception]) -> int:
    """Run ``command``; an Unreachable daemon or one of ``fatal`` is said, and exits 1."""
    said: tuple[type[Exception], ...] = (Unreachable, *fatal)
    try:
        return asyncio.run(command)
    except KeyboardInterrupt:
        return EXIT_OK  # how one stops following
    except BrokenPipeError:
        # The reader went away (``| head``): nothing more to say, and nobody to say it to.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except said as exc:
        print(f"lvsd ctl: {exc}", file=sys.stderr)
        return EXIT_FAILED


def status_path(service: str | None) -> str:
    return "/status" if service is None else "/status?" + urlencode({"service": service})


async def show_status(args: argparse.Namespace) -> int:
    from lvsd.statusview import render_status, wants_colour

    colour = wants_colour(sys.stdout.isatty(), os.environ)
    path = status_path(args.service)

    def text(answer: dict[str, Any]) -> str:
        if args.json:
            return json.dumps(answer, indent=None if args.watch else 2) + "\n"
        return render_status(answer, now=time.time(), colour=colour, exact=args.exact)

    def show(answer: dict[str, Any]) -> int:
        sys.stdout.write(text(answer))
        sys.stdout.flush()
        return EXIT_OK

    if not args.watch:
        return await request(args.socket, "GET", path, None, show)
    redraw = sys.stdout.isatty() and not args.json
    first = True
    while True:
        if redraw:
            sys.stdout.write(CLEAR_SCREEN + f"every {args.interval:g} s: lvsd ctl status"
                             f"{' ' + args.service if args.service else ''}  "
                             f"{time.strftime('%H:%M:%S')}\n")
        elif not first and not args.json:
            sys.stdout.write("\n")
        first = False
        try:
            code = await request(args.socket, "GET", path, None, show)
        except Unreachable as exc:  # lvsd restarting: say so, and look again
            print(f"lvsd ctl: {exc}", file=sys.stderr)
            code = EXIT_OK
        if code != EXIT_OK:
            return code
        await asyncio.sleep(args.interval)


async def follow_events(args: argparse.Namespace) -> int:
    events = 0
    async with ControlClient(args.socket) as client, client.open("GET", "/events") as response:
        if response.status != 200:
            try:
                answer = json.loads(await response.text())
            except ValueError:
                answer = {}
            return refused(response.status, answer if isinstance(answer, dict) else {})
        async for line in response.content:
            sys.stdout.write(line.decode(errors="replace"))
            sys.stdout.flush()
            if args.count is not None and "seq" in json.loads(line):  # an event, not a marker
                events += 1
                if events >= args.count:
                    return EXIT_OK
    print("lvsd ctl: the event stream ended: lvsd stopped", file=sys.stderr)
    return EXIT_FAILED
