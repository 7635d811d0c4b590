"""ipvsadm-restore's reading of a file: lines, words and options, as ipvsadm 1.31 splits them.

``ipvsadm-restore`` drops the lines that start with ``#`` (``grep -v '^#'``), and ``ipvsadm -R``
splits the rest at ``\\n`` into words separated by spaces, tabs and carriage returns
(``config_stream_read``), drops every word ``ipvsadm``, and reads each line's words with popt.
Anything else that Python would call a line break or a space (``\\f``, ``\\v``, ``\\x1c``-``\\x1e``,
U+0085, U+2028, U+2029) is part of a word to ipvsadm: here it is an error, so line numbers stay
the file's and nothing is read in a way ipvsadm would not.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

from lvsd.ipvsadm.names import (
    ALLOWED_SLOTS,
    COMMANDS,
    OPTIONS,
    OTHER_COMMANDS,
    OTHER_OPTIONS,
    Command,
    Slot,
)

MAX_WORD = 255  # longer than any host name, number or option ipvsadm can take
_SHOWN_LINE = 160  # an error quotes this much of a line

# What a rule line may hold: printable ASCII, and the tabs and carriage returns ipvsadm skips.
_NOT_RULE_TEXT = re.compile(r"[^\x20-\x7e\t\r]")
# What even a comment may not hold: NUL bytes, and bytes that are not UTF-8.
_NOT_COMMENT_TEXT = re.compile(r"[\x00\udc80-\udcff]")
_INTEGER = re.compile(r"[+-]?[0-9]+\Z")  # what C's strtol(…, 10) reads whole

_NAMED_CHARACTERS = {
    "\x00": "a NUL byte", "\f": "a form feed (\\f)", "\v": "a vertical tab (\\v)",
    "\x1c": "a file separator (\\x1c)", "\x1d": "a group separator (\\x1d)",
    "\x1e": "a record separator (\\x1e)", "\x1f": "a unit separator (\\x1f)",
    "\x7f": "a DEL character (\\x7f)", "\x85": "a next-line character (U+0085)",
    "\u2028": "a line separator (U+2028)", "\u2029": "a paragraph separator (U+2029)",
}


class LineError(Exception):
    """What is wrong with the line being read; the parser adds where."""


def decode(data: str | bytes) -> str:
    """The file's text; bytes that are not UTF-8 become lone surrogates, reported per line."""
    return data.decode("utf-8", "surrogateescape") if isinstance(data, bytes) else data


def split_lines(text: str) -> list[str]:
    """The file's lines, split at ``\\n`` only, as ipvsadm-restore splits them."""
    lines = text.split("\n")
    if lines and not lines[-1]:
        lines.pop()
    return lines


def shown(line: str) -> str:
    """The line as an error quotes it: a long one is cut."""
    return line if len(line) <= _SHOWN_LINE else line[:_SHOWN_LINE] + "..."


def _describe(character: str) -> str:
    if character in _NAMED_CHARACTERS:
        return _NAMED_CHARACTERS[character]
    code = ord(character)
    if 0xDC80 <= code <= 0xDCFF:
        return f"the byte 0x{code - 0xDC00:02X}, which is not UTF-8 text"
    if code < 0x20 or 0x80 <= code < 0xA0:
        return f"a control character (U+{code:04X})"
    name = unicodedata.name(character, "")
    return f"the non-ASCII character {character!r} (U+{code:04X}{' ' + name if name else ''})"


def words(line: str) -> list[str]:
    """The words ``ipvsadm -R`` reads from ``line``; none for a comment or an empty line."""
    if line.startswith("#"):  # ipvsadm-restore's grep drops the line
        bad = _NOT_COMMENT_TEXT.search(line)
        if bad is not None:
            raise LineError(f"{_describe(bad.group())} at column {bad.start() + 1}")
        return []
    bad = _NOT_RULE_TEXT.search(line)
    if bad is not None:
        where = f"at column {bad.start() + 1}"
        if bad.group() in "\f\v\x1c\x1d\x1e\x85\u2028\u2029":
            where += ": ipvsadm-restore splits lines at \\n only and reads it as part of a word"
        elif ord(bad.group()) >= 0x80 and bad.group() not in _NAMED_CHARACTERS:
            where += ": ipvsadm rules are ASCII"
        raise LineError(f"{_describe(bad.group())} {where}")
    found = [word for word in line.split() if word != "ipvsadm"]
    if found and found[0].startswith("#"):
        raise LineError("a comment must start at the beginning of the line: ipvsadm-restore "
                        "drops only those, and reads this one as a rule")
    for word in found:
        if len(word) > MAX_WORD:
            raise LineError(f"a word of {len(word)} characters (at most {MAX_WORD}): "
                            f"{word[:40]!r}...")
    return found


def is_integer(text: str) -> bool:
    return _INTEGER.match(text) is not None


def integer(text: str, what: str) -> int:
    """A decimal number as ipvsadm's ``string_to_number`` reads it (``strtol``, base 10: a sign
    may lead, no hex, nothing may follow)."""
    if _INTEGER.match(text) is None:
        raise LineError(f"{what} {text!r} is not a decimal integer")
    return int(text)


@dataclass(frozen=True, slots=True)
class Given:
    """One option as written: its spelling, its value, and its place among the line's options
    (ipvsadm reads some options in the light of those before them)."""

    spelling: str
    value: str | None
    position: int


@dataclass(slots=True)
class Scanned:
    command: Command
    spelling: str  # the command as written
    options: dict[Slot, Given] = field(default_factory=dict)
    arguments: list[str] = field(default_factory=list)

    def has(self, slot: Slot) -> bool:
        return slot in self.options

    def spelling_of(self, slot: Slot) -> str:
        return self.options[slot].spelling

    def value(self, slot: Slot) -> str | None:
        given = self.options.get(slot)
        return given.value if given is not None else None

    def position(self, slot: Slot) -> int:
        return self.options[slot].position


def _split_options(word: str) -> list[tuple[str, str | None]]:
    """popt's spellings: ``--name=value``, ``--name``, ``-x``, ``-xvalue`` and clusters of short
    options (``-gw5`` is ``-g -w 5``)."""
    if word.startswith("--"):
        name, equals, attached = word.partition("=")
        return [(name, attached if equals else None)]
    if word in OPTIONS or word in COMMANDS:
        return [(word, None)]
    found: list[tuple[str, str | None]] = []
    for index in range(1, len(word)):
        spelling = "-" + word[index]
        spec = OPTIONS.get(spelling)
        rest = word[index + 1:]
        if spec is not None and spec.arity != "none" and rest:
            found.append((spelling, rest))
            return found
        found.append((spelling, None))
    return found


def scan(line_words: list[str]) -> Scanned:
    """The command and options of one line, checked as ipvsadm's popt table and its
    ``commands_v_options`` check them."""
    if not line_words[0].startswith("-"):
        raise LineError(f"a line must start with a command (-A, -E, -D, -a, -e, -d, -C or "
                        f"--set), not {line_words[0]!r}")
    scanned: Scanned | None = None
    count = len(line_words)
    i = 0
    position = 0
    arguments: list[str] = []
    options_done = False
    while i < count:
        word = line_words[i]
        i += 1
        if options_done or word == "-" or not word.startswith("-"):
            arguments.append(word)
            continue
        if word == "--":  # popt: the rest are arguments
            options_done = True
            continue
        for spelling, attached in _split_options(word):
            position += 1
            if spelling in COMMANDS:
                if scanned is not None:
                    raise LineError(f"more than one command: {scanned.spelling!r} and "
                                    f"{spelling!r}")
                if attached is not None:
                    raise LineError(f"command {spelling!r} takes no value")
                scanned = Scanned(COMMANDS[spelling], spelling)
                continue
            if spelling in OTHER_COMMANDS:
                raise LineError(f"{spelling} changes no rule: a restore file holds -A, -E, -D,"
                                f" -a, -e, -d, -C and --set lines only")
            if scanned is None:
                raise LineError(f"a line must start with a command (-A, -E, -D, -a, -e, -d, "
                                f"-C or --set), not {word!r}")
            spec = OPTIONS.get(spelling)
            if spec is None:
                if spelling in OTHER_OPTIONS:
                    raise LineError(f"option {spelling!r} is for listing or the sync daemon, "
                                    f"not for a rule")
                raise LineError(f"unknown option {word!r}")
            value = attached
            if spec.arity == "none":
                if value is not None:
                    raise LineError(f"option {spelling!r} takes no value")
            elif value is None:
                if spec.arity == "required":
                    if i >= count:
                        raise LineError(f"option {spelling!r} needs a value")
                    value = line_words[i]
                    i += 1
                elif i < count and not line_words[i].startswith("-"):
                    value = line_words[i]  # popt: an optional value never starts with "-"
                    i += 1
            known = scanned.options.get(spec.slot)
            if known is not None and spec.slot is not Slot.IPV6:  # ipvsadm lets -6 repeat
                raise LineError(f"option {spelling!r} given twice" if known.spelling == spelling
                                else f"option {spelling!r} conflicts with {known.spelling!r}")
            if known is None:
                scanned.options[spec.slot] = Given(spelling, value, position)
    if scanned is None:
        raise LineError(f"a line must start with a command (-A, -E, -D, -a, -e, -d, -C or "
                        f"--set), not {line_words[0]!r}")
    allowed = ALLOWED_SLOTS[scanned.command]
    for slot, given in scanned.options.items():
        if slot not in allowed:
            raise LineError(f"option {given.spelling!r} is not allowed with {scanned.spelling} "
                            f"({scanned.command.value})")
    if scanned.command is Command.SET:
        if len(arguments) != 3:
            raise LineError("--set needs exactly three timeouts: tcp tcpfin udp")
    elif arguments:
        raise LineError(f"unexpected argument {arguments[0]!r}")
    scanned.arguments = arguments
    return scanned
