"""Generate lvsd(8) from the argparse CLI, lvsd.toml(5) from the config schema, and bash and
zsh completion from the CLI: ``python -m lvsd.manpages [DIR]`` writes ``man/`` and
``completion/`` under DIR (default: the current directory). The committed files are checked
against this output by the unit tests, so they follow every change of the CLI or the schema.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from lvsd import __version__

DATE = "lvsd " + __version__


def _escape(text: str) -> str:
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join(("\\&" + line) if line[:1] in (".", "'") else line
                     for line in text.splitlines())


def _subcommands(parser: argparse.ArgumentParser
                 ) -> Iterator[tuple[str, str, argparse.ArgumentParser]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                yield name, helps.get(name, ""), sub


def _options(parser: argparse.ArgumentParser) -> Iterator[argparse.Action]:
    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction | argparse._HelpAction):
            yield action


def _usage(parser: argparse.ArgumentParser) -> str:
    return " ".join(parser.format_usage().split()[1:])


def _help(action: argparse.Action) -> str:
    text = action.help or ""
    if "%(default)s" in text:
        text = text.replace("%(default)s", str(action.default))
    return text


def _command_section(name: str, summary: str, parser: argparse.ArgumentParser,
                     level: str = ".SS") -> list[str]:
    lines = [f"{level} {_escape(name)}", _escape(summary[:1].upper() + summary[1:] + "."),
             ".PP", f".B {_escape(_usage(parser))}"]
    for action in _options(parser):
        flag = ", ".join(action.option_strings) or str(action.metavar or action.dest)
        if action.option_strings and action.nargs != 0:
            flag += " " + str(action.metavar or action.dest.upper())
        lines += [".TP", f".B {_escape(str(flag))}", _escape(_help(action) or "")]
    for sub_name, sub_summary, sub in _subcommands(parser):
        lines += _command_section(f"{name} {sub_name}", sub_summary, sub)
    return lines


def lvsd_8() -> str:
    from lvsd.cli import build_parser

    parser = build_parser()
    lines = [
        f'.TH LVSD 8 "" "{DATE}" "System Administration"',
        ".SH NAME", "lvsd \\- health\\-checking director daemon for Linux Virtual Server",
        ".SH SYNOPSIS", f".B {_escape(_usage(parser))}",
        ".SH DESCRIPTION",
        _escape("lvsd owns the director's IPVS table over generic netlink, probes every real "
                "server and drives each server's weight from its health. Its configuration "
                "is described in lvsd.toml(5)."),
        ".SH COMMANDS",
    ]
    for name, summary, sub in _subcommands(parser):
        lines += _command_section(name, summary, sub)
    lines += [
        ".SH EXIT STATUS",
        ".TP", ".B 0", "Success (check\\-config: valid, warnings printed).",
        ".TP", ".B 1", "An operation failed (the kernel refused).",
        ".TP", ".B 2", "Bad usage, or an unreadable or invalid input file (nothing changed).",
        ".TP", ".B 3", "The kernel has no IPVS, or lvsd lacks CAP_NET_ADMIN.",
        ".PP",
        _escape("lvsd doctor exits with its worst finding's severity: 0 none or notes only, "
                "1 a warning, 2 an error (or a config that does not load). lvsd realserver "
                "check exits 1 when a piece is missing."),
        ".SH FILES",
        ".TP", ".I /etc/lvsd/lvsd.toml", "The configuration.",
        ".TP", ".I /var/lib/lvsd", "State (owned services) and the save file.",
        ".TP", ".I /var/lib/lvsd/realserver.json",
        _escape("On a real server: what lvsd realserver apply changed, and the values it "
                "replaced (lvsd realserver remove puts them back)."),
        ".TP", ".I /etc/sysctl.d/90-lvsd-realserver.conf, "
        "/etc/systemd/system/lvsd-realserver.service",
        "Written by lvsd realserver apply \\-\\-persist.",
        ".SH SEE ALSO", "lvsd.toml(5), ipvsadm(8), ipvsadm\\-save(8), systemctl(1)",
    ]
    return "\n".join(lines) + "\n"


def _type_text(schema: dict[str, Any]) -> str:
    if "enum" in schema:
        return " | ".join(f'"{v}"' if isinstance(v, str) else str(v) for v in schema["enum"])
    if "const" in schema:
        return f'"{schema["const"]}"'
    if "anyOf" in schema:
        kinds = [_type_text(s) for s in schema["anyOf"] if s.get("type") != "null"]
        return " or ".join(dict.fromkeys(kinds))
    kind = schema.get("type")
    if kind == "array":
        return "array"
    if kind == "object" or "$ref" in schema or "additionalProperties" in schema:
        return "table"
    words = {"string": "string", "integer": "integer", "number": "number",
             "boolean": "boolean"}
    text = words.get(str(kind), "value")
    bounds = [f"{op} {schema[key]}" for key, op in (
        ("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="))
        if key in schema and isinstance(schema[key], int | float)]
    return text + (f" ({', '.join(bounds)})" if bounds else "")


def _table(title: str, model: type[BaseModel], text: str) -> list[str]:
    schema = model.model_json_schema()
    required = set(schema.get("required", ()))
    lines = [f".SS {_escape(title)}", _escape(text)]
    for name, field in schema["properties"].items():
        if name in required:
            default = "required"
        elif "default" in field:
            value = field["default"]
            default = "none" if value is None else (
                f'"{value}"' if isinstance(value, str) else str(value).lower()
                if isinstance(value, bool) else str(value))
        else:
            default = "computed"
        lines += [".TP", f".B {_escape(name)}", _escape(f"{_type_text(field)}; default: "
                                                          f"{default}")]
    return lines


def lvsd_toml_5() -> str:
    from lvsd import config
    from lvsd.checks import CHECKS, AgentCheck

    lines = [
        f'.TH LVSD.TOML 5 "" "{DATE}" "File Formats"',
        ".SH NAME", "lvsd.toml \\- lvsd configuration",
        ".SH DESCRIPTION",
        _escape("TOML. Durations are seconds or strings such as \"500ms\", \"2s\", \"1m\". "
                "lvsd check-config FILE reports every problem with its place. "
                "The keys, their types and defaults, as lvsd validates them:"),
    ]
    lines += _table("[daemon]", config.DaemonSchema, "How lvsd itself runs.")
    lines += _table("[timeouts]", config.TimeoutsSchema,
                    "Connection timeouts in seconds (ipvsadm --set); left alone when absent.")
    lines += _table("[announce]", config.AnnounceSchema,
                    "A host route per healthy VIP in a kernel table lvsd owns, for a routing "
                    "daemon to announce (BIRD learn, FRR import-table); see README.")
    lines += _table("[[announce.vips]]", config.AnnouncedVipSchema,
                    "A VIP to announce (default: every VIP of the services), and its rule.")
    lines += _table("[[services]]", config.ServiceSchema, "A virtual service.")
    lines += _table("[[services.real_servers]]", config.RealServerSchema,
                    "A real server of the service above.")
    lines += _table("sorry_server", config.SorryServerSchema,
                    "Installed alone while the healthy weight is below quorum.")
    for name, spec in CHECKS.items():
        lines += _table(f'check type = "{name}"', spec,
                        "A check: [services.check], [services.real_servers.check], or an "
                        "entry of checks = [...].")
    lines += _table("agent", AgentCheck,
                    "HAProxy's agent-check, a weight source beside the checks: [services.agent] "
                    "or [services.real_servers.agent] (field by field over the service's). "
                    "The agent answers one line: 75%, drain, maint, down, up, ready.")
    lines += [".SH FILES", ".I /etc/lvsd/lvsd.toml", ".SH SEE ALSO", "lvsd(8)"]
    return "\n".join(lines) + "\n"


def _all_words(parser: argparse.ArgumentParser) -> dict[str, list[str]]:
    """{"": top-level words, "check-config": its options, "import keepalived": …}."""
    words: dict[str, list[str]] = {}

    def walk(prefix: str, current: argparse.ArgumentParser) -> None:
        options = [o for a in current._actions for o in a.option_strings]
        subs = list(_subcommands(current))
        words[prefix] = [name for name, _, _ in subs] + options
        for name, _, sub in subs:
            walk(f"{prefix} {name}".strip(), sub)

    walk("", parser)
    return words


def bash_completion() -> str:
    from lvsd.cli import build_parser

    words = _all_words(build_parser())
    cases = "\n".join(f'        "{key}") opts="{" ".join(value)}" ;;'
                      for key, value in words.items() if key)
    return f"""# bash completion for lvsd (generated by python -m lvsd.manpages)
_lvsd() {{
    local cur path word opts
    cur="${{COMP_WORDS[COMP_CWORD]}}"
    path=""
    for word in "${{COMP_WORDS[@]:1:COMP_CWORD-1}}"; do
        case "$word" in -*) ;; *) case " $(_lvsd_words "$path") " in
            *" $word "*) path="${{path:+$path }}$word" ;; esac ;; esac
    done
    opts=$(_lvsd_words "$path")
    COMPREPLY=($(compgen -W "$opts" -- "$cur"))
    [[ ${{#COMPREPLY[@]}} -eq 0 ]] && COMPREPLY=($(compgen -f -- "$cur"))
}}
_lvsd_words() {{
    local opts
    case "$1" in
        "") opts="{" ".join(words[""])}" ;;
{cases}
    esac
    echo "$opts"
}}
complete -F _lvsd lvsd
"""


def zsh_completion() -> str:
    from lvsd.cli import build_parser

    words = _all_words(build_parser())
    cases = "\n".join(f'        "{key}") opts=({" ".join(value)}) ;;'
                      for key, value in words.items() if key)
    return f"""#compdef lvsd
# zsh completion for lvsd (generated by python -m lvsd.manpages)
_lvsd() {{
    local path="" word
    local -a opts
    for word in ${{words[2,CURRENT-1]}}; do
        [[ $word == -* ]] && continue
        _lvsd_words "$path"
        (( ${{opts[(Ie)$word]}} )) && path="${{path:+$path }}$word"
    done
    _lvsd_words "$path"
    _describe 'lvsd' opts || _files
}}
_lvsd_words() {{
    case "$1" in
        "") opts=({" ".join(words[""])}) ;;
{cases}
    esac
}}
_lvsd "$@"
"""


def generated() -> dict[str, str]:
    """Relative path → content of every generated file."""
    return {
        "man/lvsd.8": lvsd_8(),
        "man/lvsd.toml.5": lvsd_toml_5(),
        "completion/lvsd.bash": bash_completion(),
        "completion/_lvsd": zsh_completion(),
    }


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    root = Path(args[0]) if args else Path()
    for relative, text in generated().items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
