"""apply, check and remove over a host: the order of changes, rollback, the record, the
--persist files. The host is a ``HostLike`` (the kernel, or a fake in unit tests)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from lvsd.errors import LvsdError
from lvsd.model import Address
from lvsd.realserver import persist
from lvsd.realserver.plan import (
    Change,
    HostState,
    Mode,
    Piece,
    Record,
    Sysctl,
    describe,
    done,
    missing,
    persisted_values,
    undone,
    wanted,
)

RECORD_FILE = "var/lib/lvsd/realserver.json"
Say = Callable[[str], None]


class HostLike(Protocol):
    def state(self, sysctls: Iterable[str] = ()) -> HostState: ...

    def make(self, piece: Piece) -> Change | None: ...

    def undo(self, change: Change) -> str | None: ...


class RealserverError(LvsdError):
    """apply or remove failed (what this run changed was put back first)."""


@dataclass(frozen=True, slots=True)
class Target:
    """Where the files go (``root``: / on a real server, a temp dir in tests) and what the
    unit runs."""

    root: Path = Path("/")
    lvsd: str = "/usr/bin/lvsd"

    @property
    def record(self) -> Path:
        return self.root / RECORD_FILE


def survey(host: HostLike, vips: Sequence[Address], mode: Mode) -> tuple[list[Piece], HostState]:
    """The pieces wanted, and the host with every sysctl they name read."""
    pieces = wanted(vips, mode, host.state())
    names = [piece.name for piece in pieces if isinstance(piece, Sysctl)]
    return pieces, host.state(names)


def wanted_files(pieces: Sequence[Piece], state: HostState, vips: Sequence[Address],
                 mode: Mode, target: Target) -> dict[str, str]:
    """Relative path -> content of each --persist file (the unit's wants link as its target)."""
    command = persist.apply_command(target.lvsd, vips, mode)
    return {
        persist.SYSCTL_FILE: persist.sysctl_conf(persisted_values(pieces, state)),
        persist.UNIT_FILE: persist.unit(command, vips, mode),
        persist.WANTS_LINK: f"/{persist.UNIT_FILE}",
    }


def _current(root: Path, relative: str) -> str | None:
    path = root / relative
    try:
        if relative == persist.WANTS_LINK:
            return os.readlink(path) if path.is_symlink() else None
        return path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RealserverError(f"{path}: cannot read: {exc.strerror or exc}") from exc


def _put(root: Path, relative: str, content: str | None) -> None:
    from lvsd.files import write_atomic

    path = root / relative
    try:
        if content is None or path.is_symlink():
            path.unlink(missing_ok=True)
        if content is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        if relative == persist.WANTS_LINK:
            path.symlink_to(content)
        else:
            write_atomic(path, content)
    except OSError as exc:
        raise RealserverError(f"{path}: cannot write: {exc.strerror or exc}") from exc


def load_record(target: Target) -> Record | None:
    try:
        text = target.record.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RealserverError(f"{target.record}: cannot read: {exc.strerror or exc}") from exc
    try:
        return Record.loads(text)
    except ValueError as exc:
        raise RealserverError(f"{target.record}: {exc}") from exc


def check(host: HostLike, vips: Sequence[Address], mode: Mode, *, persisted: bool,
          target: Target, say: Say) -> int:
    """Print each missing piece with its fix; the number missing."""
    pieces, state = survey(host, vips, mode)
    lacking = [(describe(piece, state), piece.fix) for piece in missing(pieces, state)]
    if persisted:
        rerun = " ".join(persist.apply_command("lvsd", vips, mode)) + " --persist"
        for relative, content in wanted_files(pieces, state, vips, mode, target).items():
            current = _current(target.root, relative)
            if current != content:
                path = target.root / relative
                lacking.append((f"{path} is {'absent' if current is None else 'out of date'}",
                                rerun))
    for what, fix in lacking:
        say(f"missing: {what}\n  fix: {fix}")
    return len(lacking)


def apply(host: HostLike, vips: Sequence[Address], mode: Mode, *, persisted: bool,
          target: Target, say: Say) -> None:
    """Make every piece (and with ``persisted`` the files) true, record what changed; on any
    failure put back what this run changed and raise RealserverError."""
    record = load_record(target)
    if record is not None and record.mode != mode:
        raise RealserverError(f"{target.record}: the VIPs {', '.join(map(str, record.vips))} "
                              f"were applied in mode {record.mode}; remove them first")
    changes: list[Change] = []
    written: dict[str, str | None] = {}
    try:
        pieces, _ = survey(host, vips, mode)
        for piece in pieces:
            change = host.make(piece)
            if change is not None:
                changes.append(change)
        if persisted:
            _, state = survey(host, vips, mode)
            for relative, content in wanted_files(pieces, state, vips, mode, target).items():
                previous = _current(target.root, relative)
                if previous != content:
                    _put(target.root, relative, content)
                    written[relative] = previous
        if changes or written or record is None or set(vips) - set(record.vips):
            base = record or Record(mode)
            _put(target.root, RECORD_FILE, base.merged(vips, changes, written).dumps())
    except LvsdError as exc:
        problems = _roll_back(host, changes, written, target)
        raise RealserverError(str(exc) + "".join(f"\n  and rolling back: {p}"
                                                 for p in problems)) from exc
    for change in changes:
        say(done(change))
    for relative in written:
        say(f"wrote {target.root / relative}")
    if not changes and not written:
        say(f"nothing to change: {mode} set-up for {', '.join(map(str, vips))} is in place")


def _roll_back(host: HostLike, changes: Sequence[Change], written: dict[str, str | None],
               target: Target) -> list[str]:
    problems = []
    for relative, previous in reversed(written.items()):
        try:
            _put(target.root, relative, previous)
        except LvsdError as exc:
            problems.append(str(exc))
    for change in reversed(changes):
        try:
            host.undo(change)
        except LvsdError as exc:
            problems.append(str(exc))
    return problems


def remove(host: HostLike, vips: Sequence[Address], *, target: Target, say: Say) -> None:
    """Undo what the record says apply changed (for ``vips``, or all when empty)."""
    record = load_record(target)
    if record is None:
        say(f"nothing to remove: {target.record} does not exist (apply changed nothing here)")
        return
    unknown = [vip for vip in vips if vip not in record.vips]
    if unknown:
        raise RealserverError(f"--vip: {', '.join(map(str, unknown))} not applied here "
                              f"(applied: {', '.join(map(str, record.vips))})")
    undo, left = record.without(vips or record.vips)
    pending = list(undo)
    try:
        while pending:
            note = host.undo(pending[0])
            say(note if note is not None else undone(pending[0]))
            pending.pop(0)
    except LvsdError as exc:
        # Keep a record of exactly what is still to undo: remove again finishes the job.
        kept = (left.changes if left else ()) + tuple(reversed(pending))
        _put(target.root, RECORD_FILE,
             Record(record.mode, record.vips, kept, record.files).dumps())
        raise RealserverError(f"{exc}; {target.record} keeps the {len(pending)} change(s) "
                              f"still to undo") from exc
    if left is None:
        for relative, previous in record.files.items():
            _put(target.root, relative, previous)
            say(f"{'deleted' if previous is None else 'restored'} {target.root / relative}")
        _put(target.root, RECORD_FILE, None)
    else:
        if persist.UNIT_FILE in record.files:  # the unit adds only the VIPs left at boot
            command = persist.apply_command(target.lvsd, left.vips, left.mode)
            _put(target.root, persist.UNIT_FILE, persist.unit(command, left.vips, left.mode))
        _put(target.root, RECORD_FILE, left.dumps())
