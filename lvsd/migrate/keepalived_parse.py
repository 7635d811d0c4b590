"""keepalived.conf read into a tree of statements, with a tokenizer over braces.

keepalived's own reader is line based: options written after a ``{`` on the same line are
silently dropped. Here a block is whatever lies between its braces, wherever the line breaks
fall. A statement is a keyword and its arguments; where the arguments of one keyword end is
known from the grammar below (how many it takes, and of what form), so
``url { path / status_code 200 }`` is two statements. A keyword the grammar does not know
takes the rest of its line, up to a brace or a keyword known where it stands.

Comments start with ``#`` or ``!`` outside a quoted string and run to the end of the line.
``include`` (and ``includer``/``includem``/``includew``/``includeb``/``includea``) read files
matched by a glob, relative to the including file's directory. A line starting with
``@NAME`` is kept only when NAME is the config id, ``@^NAME`` only when it is not.
"""

from __future__ import annotations

import glob
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lvsd.errors import ConfigError, Problem

_INCLUDES = frozenset({"include", "includer", "includem", "includew", "includeb", "includea"})
_MAX_INCLUDE_DEPTH = 32


@dataclass(frozen=True, slots=True)
class Token:
    text: str
    file: str
    line: int
    quoted: bool = False

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    @property
    def is_brace(self) -> bool:
        return not self.quoted and self.text in ("{", "}")


@dataclass
class Statement:
    keyword: Token
    args: list[Token] = field(default_factory=list)
    block: list[Statement] | None = None

    @property
    def name(self) -> str:
        return self.keyword.text

    @property
    def where(self) -> str:
        return self.keyword.where

    def values(self) -> list[str]:
        return [arg.text for arg in self.args]

    def text(self) -> str:
        """The statement as written, without its block."""
        words = [self.name, *(f'"{a.text}"' if a.quoted else a.text for a in self.args)]
        return " ".join(words) + (" { … }" if self.block is not None else "")


# --- tokenizer -------------------------------------------------------------------------------

def _line_tokens(line: str, file: str, line_no: int) -> list[Token]:
    tokens: list[Token] = []
    i, n = 0, len(line)
    while i < n:
        char = line[i]
        if char.isspace():
            i += 1
        elif char in "#!":
            break
        elif char in "{}":
            tokens.append(Token(char, file, line_no))
            i += 1
        elif char == '"':
            text, i = _quoted(line, i + 1, file, line_no)
            tokens.append(Token(text, file, line_no, quoted=True))
        else:
            start = i
            while i < n and not line[i].isspace() and line[i] not in '{}"#!':
                i += 1
            tokens.append(Token(line[start:i], file, line_no))
    return tokens


def _quoted(line: str, i: int, file: str, line_no: int) -> tuple[str, int]:
    out: list[str] = []
    while i < len(line):
        char = line[i]
        if char == "\\" and i + 1 < len(line) and line[i + 1] in '"\\':
            out.append(line[i + 1])
            i += 2
        elif char == '"':
            return "".join(out), i + 1
        else:
            out.append(char)
            i += 1
    raise ConfigError(file, [Problem(f"line {line_no}", "unterminated quoted string")])


@dataclass
class Reader:
    """Reads a file and its includes into one token stream."""

    config_id: str
    problems: list[Problem] = field(default_factory=list)
    notes: list[tuple[str, str]] = field(default_factory=list)  # (where, what) for comments

    def tokens(self, path: Path, shown: str, depth: int = 0,
               stack: tuple[Path, ...] = ()) -> list[Token]:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise ConfigError(shown, [Problem("", f"cannot read: {reason}")]) from exc
        out: list[Token] = []
        for line_no, raw_line in enumerate(text.splitlines(), start=1):
            line = raw_line
            stripped = line.lstrip()
            if stripped.startswith("@"):
                word, _, rest = stripped[1:].partition(" ")
                negate = word.startswith("^")
                keep = (word[1:] != self.config_id) if negate else (word == self.config_id)
                if not keep:
                    self.notes.append((f"{shown}:{line_no}",
                                       f"conditional line for config id {word!r} left out "
                                       f"(config id {self.config_id!r}): {rest.strip()}"))
                    continue
                line = rest
            if "$" in line and re.search(r"\$\{?[A-Za-z_]", line):
                self.problems.append(Problem(f"{shown}:{line_no}",
                                             "parameter substitution ($NAME) is not supported: "
                                             "expand it first (keepalived -d dumps the result)"))
                continue
            tokens = _line_tokens(line, shown, line_no)
            if tokens and not tokens[0].quoted and tokens[0].text in _INCLUDES:
                out += self._include(tokens, path, depth, (*stack, path.resolve()))
                continue
            out += tokens
        return out

    def _include(self, tokens: list[Token], path: Path, depth: int,
                 stack: tuple[Path, ...]) -> list[Token]:
        keyword = tokens[0]
        if len(tokens) < 2:
            self.problems.append(Problem(keyword.where, f"{keyword.text} needs a file name"))
            return []
        if depth >= _MAX_INCLUDE_DEPTH:
            self.problems.append(Problem(keyword.where, "includes nested too deep"))
            return []
        pattern = " ".join(t.text for t in tokens[1:])
        base = path.parent
        full = pattern if Path(pattern).is_absolute() else str(base / pattern)
        matches = sorted(glob.glob(full, recursive=False))
        if not matches:
            # keepalived's plain include ignores a missing file; say so rather than drop it.
            self.notes.append((keyword.where, f"{keyword.text} {pattern}: no file matched"))
            return []
        out: list[Token] = []
        for match in matches:
            included = Path(match)
            if included.resolve() in stack:
                self.problems.append(Problem(keyword.where, f"{match} includes itself"))
                continue
            if included.is_dir():
                continue
            shown = match if Path(pattern).is_absolute() else str(
                Path(keyword.file).parent / Path(match).relative_to(base))
            out += self.tokens(included, shown, depth + 1, stack)
        return out


# --- grammar ---------------------------------------------------------------------------------

Accepts = Callable[[Token], bool]


def _matching(pattern: str) -> Accepts:
    regex = re.compile(pattern, re.IGNORECASE)
    return lambda token: bool(regex.fullmatch(token.text))


_ANY: Accepts = lambda token: True  # noqa: E731
_NUMBER = _matching(r"-?\d+(\.\d+)?")
_BOOL = _matching(r"on|off|true|false|yes|no")
_METHOD = _matching(r"NAT|DR|TUN|type|ipip|gue|gre|port|\d+|nocsum|csum|remcsum")
_STATUS = _matching(r"\d{3}(-\d{3})?")
_MEMBER_ARG = _matching(r"\d+|inet6?")


@dataclass(frozen=True)
class Arity:
    most: int | None  # None: the rest of the line
    accepts: Accepts = _ANY
    block: str | None = None  # the grammar of its block, when it has one


def _flag() -> Arity:
    return Arity(1, _BOOL)


_NUMERIC = Arity(1, _NUMBER)
_ONE = Arity(1)
_REST = Arity(None)
_TIMING = {name: _NUMERIC for name in (
    "delay_loop", "connect_timeout", "retry", "nb_get_retry", "delay_before_retry", "warmup")}
_CHECKERS = ("HTTP_GET", "SSL_GET", "TCP_CHECK", "SMTP_CHECK", "DNS_CHECK", "MISC_CHECK",
             "BFD_CHECK", "UDP_CHECK", "PING_CHECK", "FILE_CHECK")

GRAMMARS: dict[str, dict[str, Arity]] = {
    "top": {
        "virtual_server": Arity(2, block="virtual_server"),
        "virtual_server_group": Arity(1, block="group"),
        "track_file": Arity(1, block="track_file"),
        "vrrp_track_file": Arity(1, block="track_file"),
        "global_defs": Arity(0, block="any"),
    },
    "virtual_server": {
        "lb_algo": _ONE, "lvs_sched": _ONE,
        "lb_kind": Arity(6, _METHOD), "lvs_method": Arity(6, _METHOD),
        "persistence_timeout": _NUMERIC, "persistence_granularity": _ONE,
        "persistence_engine": _ONE, "protocol": _ONE, "ip_family": _ONE,
        "quorum": _NUMERIC, "hysteresis": _NUMERIC, "quorum_up": _REST, "quorum_down": _REST,
        "alpha": _flag(), "omega": _flag(), "inhibit_on_failure": _flag(), "ha_suspend": _flag(),
        "ops": _flag(), "flag-1": _flag(), "flag-2": _flag(), "flag-3": _flag(),
        "sh-port": _flag(), "sh-fallback": _flag(), "mh-port": _flag(), "mh-fallback": _flag(),
        "smtp_alert": _flag(), "virtualhost": _ONE, "snmp_name": _ONE, "nat_mask": _ONE,
        "sorry_server": Arity(2), "sorry_server_inhibit": _flag(),
        "sorry_server_lvs_method": Arity(6, _METHOD),
        "real_server": Arity(2, block="real_server"),
        **_TIMING,
    },
    "real_server": {
        "weight": _NUMERIC, "lvs_method": Arity(6, _METHOD), "lb_kind": Arity(6, _METHOD),
        "notify_up": _REST, "notify_down": _REST, "uthreshold": _NUMERIC,
        "lthreshold": _NUMERIC, "smtp_alert": _flag(), "virtualhost": _ONE, "snmp_name": _ONE,
        "alpha": _flag(), "inhibit_on_failure": _flag(),
        **_TIMING,
        **{name: Arity(0, block="checker") for name in _CHECKERS},
    },
    "checker": {
        "connect_ip": _ONE, "connect_port": _NUMERIC, "bindto": _ONE, "bind_if": _ONE,
        "bind_port": _NUMERIC, "fwmark": _NUMERIC, "alpha": _flag(),
        "log_all_failures": _flag(), "http_protocol": _ONE, "fast_recovery": _flag(),
        "url": Arity(0, block="url"), "enable_sni": _flag(), "helo_name": _ONE,
        "type": _ONE, "name": _ONE, "misc_path": _REST, "misc_timeout": _NUMERIC,
        "misc_dynamic": _flag(), "user": Arity(2), "track_file": _ONE, "dynamic": _flag(),
        "weight": Arity(2), "payload": _REST, "require_reply": _REST,
        "min_reply_length": _NUMERIC, "max_reply_length": _NUMERIC,
        **_TIMING,
    },
    "url": {
        "path": _ONE, "digest": _ONE, "status_code": Arity(None, _STATUS), "virtualhost": _ONE,
        "regex": _ONE, "regex_no_match": _flag(), "regex_options": _REST,
        "regex_stack": Arity(2, _NUMBER), "regex_min_offset": _NUMERIC,
        "regex_max_offset": _NUMERIC,
    },
    "track_file": {"file": _ONE, "weight": Arity(2), "init_file": Arity(2)},
    "group": {},
    "any": {},
}


def _arity(grammar: str, keyword: Token) -> Arity:
    known = GRAMMARS[grammar].get(keyword.text)
    if known is not None:
        return known
    if grammar == "group":  # members: "IP [PORT]", "RANGE [PORT]", "fwmark N [inet|inet6]"
        return Arity(2, _MEMBER_ARG)
    return Arity(None, block="any")


def parse_tokens(tokens: list[Token], source: str) -> list[Statement]:
    statements, position = _block(tokens, 0, "top", None, source)
    assert position == len(tokens)
    return statements


def _block(tokens: list[Token], position: int, grammar: str, opener: Statement | None,
           source: str) -> tuple[list[Statement], int]:
    known = GRAMMARS[grammar]
    statements: list[Statement] = []
    while position < len(tokens):
        token = tokens[position]
        if token.is_brace:
            if token.text == "}" and opener is not None:
                return statements, position + 1
            what = "'}' closes no block" if token.text == "}" else "'{' without a keyword"
            raise ConfigError(source, [Problem(token.where, what)])
        position += 1
        statement = Statement(token)
        arity = _arity(grammar, token)
        while position < len(tokens):
            arg = tokens[position]
            if arg.is_brace or (arg.file, arg.line) != (token.file, token.line):
                break
            if arity.most is not None and len(statement.args) >= arity.most:
                break
            if not arity.accepts(arg):
                break
            if arity.most is None and not arg.quoted and arg.text in known:
                break
            statement.args.append(arg)
            position += 1
        if position < len(tokens) and tokens[position].is_brace and tokens[position].text == "{":
            child = arity.block or "any"
            statement.block, position = _block(tokens, position + 1, child, statement, source)
        statements.append(statement)
    if opener is not None:
        raise ConfigError(source, [Problem(opener.where,
                                           f"{opener.name} block is never closed")])
    return statements, position


def read(path: Path, config_id: str) -> tuple[list[Statement], list[tuple[str, str]]]:
    """The statements of ``path`` and its includes, and notes on what was left out.

    Raises ConfigError for what cannot be read: a missing file, unbalanced braces, an
    unterminated string, an include loop.
    """
    reader = Reader(config_id)
    tokens = reader.tokens(path, str(path))
    if reader.problems:
        raise ConfigError(str(path), reader.problems)
    return parse_tokens(tokens, str(path)), reader.notes
