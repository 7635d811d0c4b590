"""``lvsd import keepalived``: keepalived.conf's LVS part as an lvsd config.

Each ``virtual_server`` becomes a service (a ``group`` one, one service per member of its
``virtual_server_group``), each ``real_server`` a real server with its first checker as the
check. keepalived's timings are carried over as they are (``delay_loop`` → ``interval``,
``connect_timeout`` → ``timeout``, ``retry`` + 1 → ``fall``, ``delay_before_retry`` →
``retry_interval``, ``rise = 1``), so the imported config detects failures as slowly as
keepalived did until the operator shortens them. Whatever has no lvsd equivalent is written
as a comment where it stood, never dropped without a word.
"""

from __future__ import annotations

import ipaddress
import re
import shlex
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from lvsd import limits
from lvsd.errors import ConfigError, Problem
from lvsd.ipvsadm.names import (
    FORWARD_NAMES,
    PROTOCOL_BY_NAME,
    SCHED_FLAGS,
    TUNNEL_BY_NAME,
    TUNNEL_CSUM_BY_NAME,
    generic_sched_flag_names,
)
from lvsd.migrate.document import (
    Document,
    Scalar,
    ServerOut,
    ServiceOut,
    Value,
    hoist_common_check,
)
from lvsd.migrate.keepalived_parse import Statement, read
from lvsd.model import SCHEDULERS, Forward

_MAX_GROUP_MEMBERS = 4096
_FORWARD = {"NAT": FORWARD_NAMES[Forward.MASQ], "DR": FORWARD_NAMES[Forward.ROUTE],
            "TUN": FORWARD_NAMES[Forward.TUNNEL]}
_DEFAULT_PORTS = {"http": 80, "https": 443, "dns": 53}
_TIMINGS = ("delay_loop", "connect_timeout", "retry", "delay_before_retry")
_TRUE = frozenset({"on", "true", "yes"})

# What keepalived does with an option lvsd has no equivalent for, and what to do instead.
_NO_EQUIVALENT = {
    "omega": "lvsd runs no notifier on shutdown",
    "ha_suspend": "lvsd checks whether or not the VIP is configured",
    "smtp_alert": "lvsd sends no mail: alert on its Prometheus metrics",
    "snmp_name": "lvsd has no SNMP: the service's name labels its metrics",
    "nat_mask": "obsolete in keepalived too",
    "hysteresis": "lvsd's quorum has no hysteresis",
    "quorum_up": "nearest: on_change, run on every health change with LVSD_* variables",
    "quorum_down": "nearest: on_change, run on every health change with LVSD_* variables",
    "notify_up": "nearest: the service's on_change, run on every health change",
    "notify_down": "nearest: the service's on_change, run on every health change",
    "sorry_server_inhibit": "lvsd installs the sorry server only below quorum, at its weight",
    "warmup": "lvsd spreads the first probes itself",
    "bindto": "lvsd probes from the address the route gives",
    "bind_if": "lvsd probes from the interface the route gives",
    "bind_port": "lvsd probes from an ephemeral port",
    "fwmark": "the nearest is dr_path = true, which marks probes itself",
    "log_all_failures": "lvsd logs every health change",
    "http_protocol": "lvsd speaks HTTP/1.1 with Connection: close",
    "fast_recovery": "lvsd checks one URL: rise sets how fast a server comes back",
    "enable_sni": "lvsd always sends SNI",
    "misc_dynamic": "an exec check passes or fails; it does not set the weight",
    "user": "an exec check runs as lvsd's user",
    "dynamic": "a file check passes or fails; it does not set the weight",
    "regex_options": "Python regular expressions: write the options into the pattern",
    "regex_stack": "not needed by Python regular expressions",
    "regex_min_offset": "expect_body is searched in the whole body read",
    "regex_max_offset": "expect_body is searched in the whole body read",
}
_NO_CHECKER = {
    "UDP_CHECK": "lvsd has no UDP probe (use an exec check)",
    "PING_CHECK": "lvsd has no ICMP probe (use a tcp check on a port the server answers)",
    "BFD_CHECK": "lvsd has no BFD",
}


@dataclass
class _Scope:
    """Options that a virtual server passes to its real servers and they to their checkers."""

    values: dict[str, Statement] = field(default_factory=dict)

    def child(self, block: list[Statement]) -> _Scope:
        values = dict(self.values)
        for statement in block:
            name = "retry" if statement.name == "nb_get_retry" else statement.name
            if name in (*_TIMINGS, "virtualhost", "inhibit_on_failure", "alpha"):
                values[name] = statement
        return _Scope(values)

    def text(self, name: str) -> str | None:
        statement = self.values.get(name)
        return statement.args[0].text if statement is not None and statement.args else None


@dataclass
class _Importer:
    source: str
    config_id: str
    problems: list[Problem] = field(default_factory=list)
    header: list[str] = field(default_factory=list)
    track_files: dict[str, str] = field(default_factory=dict)
    groups: dict[str, Statement] = field(default_factory=dict)

    def problem(self, statement: Statement, message: str) -> None:
        self.problems.append(Problem(statement.where, f"{statement.name}: {message}"))

    def run(self, path: Path) -> Document:
        statements, notes = read(path, self.config_id)
        self.header = [
            f"Imported by `lvsd import keepalived` from {self.source}.",
            "keepalived's check timings are kept (delay_loop -> interval, connect_timeout ->",
            "timeout, retry + 1 -> fall, delay_before_retry -> retry_interval, rise = 1):",
            "drop them to use lvsd's defaults (a failure is seen in ~4 s, not ~70 s).",
            "keepalived removes a failed server unless inhibit_on_failure: on_failure says which.",
        ]
        self.header += [f"{where}: {what}" for where, what in notes]
        document = Document(self.header)
        for statement in statements:
            if statement.name in ("track_file", "vrrp_track_file") and statement.block:
                for item in statement.block:
                    if item.name == "file" and item.args and statement.args:
                        self.track_files[statement.args[0].text] = item.args[0].text
            if statement.name == "virtual_server_group" and statement.args:
                self.groups[statement.args[0].text] = statement
        for statement in statements:
            match statement.name:
                case "virtual_server":
                    document.services += self.virtual_server(statement)
                case "virtual_server_group" | "track_file" | "vrrp_track_file":
                    pass
                case "global_defs":
                    document.timeouts = self.global_defs(statement)
                case name if name.startswith("vrrp_"):
                    self.header.append(f"{statement.where}: {statement.text()}: VRRP is not "
                                       "lvsd's part: keep keepalived for it (keepalived -P)")
                case _:
                    self.header.append(f"{statement.where}: {statement.text()}: not imported "
                                       "(no lvsd equivalent)")
        if self.problems:
            raise ConfigError(self.source, self.problems)
        return document

    def global_defs(self, statement: Statement) -> dict[str, Value] | None:
        timeouts: dict[str, Value] | None = None
        ignored = []
        for item in statement.block or []:
            if item.name == "lvs_timeouts":
                timeouts = {}
                words = item.values()
                for name, value in zip(words[::2], words[1::2], strict=False):
                    if name in ("tcp", "tcpfin", "udp") and value.isdigit() and int(value) > 0:
                        timeouts[name] = int(value)
                    else:
                        self.problem(item, f"expected tcp/tcpfin/udp SECONDS, got {name} {value}")
            else:
                ignored.append(item.name)
        if timeouts is not None and len(timeouts) < 3:
            self.header.append(f"{statement.where}: lvs_timeouts: the timeouts it leaves out "
                               "are set to the kernel's defaults (tcp 900, tcpfin 120, udp 300)")
        if ignored:
            self.header.append(f"{statement.where}: global_defs: not imported: "
                               f"{', '.join(ignored)}")
        return timeouts or None

    # --- virtual servers ---------------------------------------------------------------------

    def virtual_server(self, vs: Statement) -> list[ServiceOut]:
        words = vs.values()
        block = vs.block or []
        if vs.block is None:
            self.problem(vs, "has no block")
            return []
        keys: list[tuple[dict[str, Value], str]] = []
        if words[:1] == ["group"] and len(words) == 2:
            group = self.groups.get(words[1])
            if group is None:
                self.problem(vs, f"no virtual_server_group {words[1]!r}")
                return []
            keys = list(self.group_members(group))
        elif words[:1] == ["fwmark"] and len(words) == 2 and words[1].isdigit():
            keys = [({"fwmark": int(words[1])}, f"fwm:{words[1]}")]
        elif len(words) in (1, 2):
            address = self.address(vs, words[0])
            port = self.port(vs, words[1]) if len(words) == 2 else 0
            if address is None or port is None:
                return []
            keys = [({"address": str(address), "port": port}, f"{address}:{port}")]
        else:
            self.problem(vs, "expected IP [PORT], fwmark N or group NAME")
            return []
        template = self.service_fields(vs, block)
        if template is None:
            return []
        fields, comments, forward_options = template
        scope = _Scope().child(block)
        servers = [self.real_server(rs, scope, fields, forward_options)
                   for rs in block if rs.name == "real_server"]
        real = [s for s in servers if s is not None]
        out = []
        for key, label in keys:
            service_fields = dict(fields)
            if "fwmark" in key:
                family = self.fwmark_family(block, real)
                service_fields.pop("protocol", None)
                if family == "ipv6":
                    service_fields["family"] = "ipv6"
            elif "protocol" not in service_fields:
                # keepalived 2.2 says "no protocol set - defaulting to UDP", and does
                service_fields["protocol"] = "udp"
                if not any("no protocol" in c for c in comments):
                    comments.append(f"{vs.where}: no protocol: keepalived makes a UDP service, "
                                    "so this is one; write protocol = \"tcp\" if that was meant")
            service_fields = {"name": self.service_name(vs, label, len(keys)), **key,
                              **service_fields}
            service = ServiceOut(service_fields,
                                 [self.server_for(s, key, str(fields["forward"])) for s in real],
                                 comments=[f"{vs.where}: {vs.text()}", *comments])
            hoist_common_check(service)
            out.append(service)
        return out

    def server_for(self, server: ServerOut, key: dict[str, Value], forward: str) -> ServerOut:
        """The server as written for one service: its port only where it differs."""
        fields = dict(server.fields)
        comments = list(server.comments)
        port = fields.pop("port", None)
        service_port = key.get("port")
        moves = fields.get("forward", forward) in ("route", "tunnel")
        if port is not None and service_port is not None and port != service_port:
            if moves:
                comments.append(f"port {port}: direct routing and tunnels keep the service's "
                                f"port, {service_port}")
                port = None
        elif service_port is not None:
            port = None
        if port is not None:
            fields = {"address": fields.pop("address"), "port": port, **fields}
        checks = [] if server.check is None else [server.check, *server.more_checks]
        if "fwmark" in key and not port:
            checks = [self.fwmark_check_port(check, server, comments) for check in checks]
        return ServerOut(fields, checks[0] if checks else None, comments, server.origin,
                         checks[1:])

    def fwmark_check_port(self, check: dict[str, Value], server: ServerOut,
                          comments: list[str]) -> dict[str, Value]:
        """A network check of a fwmark service's server without a port: keepalived would
        probe port 0 and never see the server up; lvsd probes the check's usual port."""
        if "connect_port" in check or check["type"] in ("exec", "file"):
            return check
        default = _DEFAULT_PORTS.get(str(check["type"]))
        if default is None:
            self.problems.append(Problem(server.origin, "a TCP_CHECK of a fwmark service's "
                                                        "server without a port needs connect_port"))
            return check
        comments.append(f"a fwmark service's server has no port: the {check['type']} check "
                        f"probes port {default}")
        return {**check, "connect_port": default}

    def service_name(self, vs: Statement, label: str, members: int) -> str:
        words = vs.values()
        if words[:1] == ["group"] and members > 1:
            return f"{words[1]} {label}"
        return label

    def fwmark_family(self, block: list[Statement], servers: list[ServerOut]) -> str:
        for statement in block:
            if statement.name == "ip_family" and statement.values()[:1] == ["inet6"]:
                return "ipv6"
        for server in servers:
            if server.fields.get("forward") != "tunnel":
                return "ipv6" if ":" in str(server.fields["address"]) else "ipv4"
        return "ipv4"

    def group_members(self, group: Statement) -> Iterator[tuple[dict[str, Value], str]]:
        count = 0
        for member in group.block or []:
            words = member.values()
            if member.name == "fwmark":
                if not words or not words[0].isdigit():
                    self.problem(member, "expected fwmark N [inet|inet6]")
                    continue
                count += 1
                yield {"fwmark": int(words[0])}, f"fwm:{words[0]}"
                continue
            port = self.port(member, words[0]) if words else 0
            if port is None:
                continue
            for address in self.address_range(member):
                count += 1
                if count > _MAX_GROUP_MEMBERS:
                    self.problem(member, f"group has more than {_MAX_GROUP_MEMBERS} members")
                    return
                yield {"address": str(address), "port": port}, f"{address}:{port}"

    def address_range(self, member: Statement) -> list[ipaddress.IPv4Address
                                                        | ipaddress.IPv6Address]:
        text = member.name
        try:
            if "/" in text:
                return list(ipaddress.ip_network(text, strict=False))
            if "-" in text:
                first_text, last_text = text.split("-", 1)
                first = ipaddress.ip_address(first_text)
                if re.fullmatch(r"[0-9a-fA-F]{1,4}", last_text) and not (
                        first.version == 4 and "." in last_text):
                    # 192.168.200.1-10: the last part replaced (hex words for IPv6)
                    sep = "." if first.version == 4 else ":"
                    head = str(first).rsplit(sep, 1)[0]
                    last = ipaddress.ip_address(f"{head}{sep}{last_text}")
                else:
                    last = ipaddress.ip_address(last_text)
                if last.version != first.version or int(last) < int(first):
                    raise ValueError("the range ends before it starts")
                if int(last) - int(first) >= _MAX_GROUP_MEMBERS:
                    raise ValueError(f"more than {_MAX_GROUP_MEMBERS} addresses")
                return [ipaddress.ip_address(int(first) + i)
                        for i in range(int(last) - int(first) + 1)]
            return [ipaddress.ip_address(text)]
        except ValueError as exc:
            self.problem(member, f"not an address, range or fwmark: {exc}")
            return []

    def address(self, statement: Statement,
                text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        try:
            return ipaddress.ip_address(text.strip("[]"))
        except ValueError:
            self.problem(statement, f"not an IP address: {text!r}")
            return None

    def endpoint(self, statement: Statement) -> tuple[
            ipaddress.IPv4Address | ipaddress.IPv6Address, int | None] | None:
        """``address [port]`` of a real or sorry server, or None (the problem recorded)."""
        words = statement.values()
        if not words:
            self.problem(statement, "needs an address")
            return None
        address = self.address(statement, words[0])
        port = self.port(statement, words[1]) if len(words) > 1 else None
        if address is None or (len(words) > 1 and port is None):
            return None
        return address, port

    def port(self, statement: Statement, text: str) -> int | None:
        if text.isdigit() and int(text) <= limits.PORT_MAX:
            return int(text)
        self.problem(statement, f"not a port: {text!r}")
        return None

    def service_fields(self, vs: Statement, block: list[Statement]
                       ) -> tuple[dict[str, Value], list[str], dict[str, Value]] | None:
        fields: dict[str, Value] = {}
        comments: list[str] = []
        scheduler = "wlc"
        flags: list[str] = []
        forward: dict[str, Value] = {"forward": "masq"}  # keepalived's default is NAT
        persistence: int | None = None
        granularity: Statement | None = None
        inhibit = False
        for statement in block:
            values = statement.values()
            match statement.name:
                case "lb_algo" | "lvs_sched":
                    scheduler = values[0] if values else ""
                    if scheduler not in SCHEDULERS:
                        self.problem(statement, f"unknown scheduler {scheduler!r}")
                case "lb_kind" | "lvs_method":
                    method = self.method(statement)
                    if method is not None:
                        forward = method
                case "protocol":
                    protocol = values[0].lower() if values else ""
                    if protocol not in PROTOCOL_BY_NAME:
                        self.problem(statement, f"expected TCP, UDP or SCTP, got {protocol!r}")
                    fields["protocol"] = protocol
                case "persistence_timeout":
                    persistence = int(float(values[0])) if values else 360
                case "persistence_granularity":
                    granularity = statement
                case "persistence_engine":
                    if values == ["sip"]:
                        fields["pe"] = "sip"
                    else:
                        self.problem(statement, "the only persistence engine is sip")
                case "ops":
                    fields["ops"] = self.flag(statement)
                case name if name in SCHED_FLAGS:
                    if self.flag(statement):
                        flags.append(name)
                case "inhibit_on_failure":
                    inhibit = self.flag(statement)
                case "quorum":
                    fields["quorum"] = int(float(values[0])) if values else 1
                case "alpha":
                    comments.append(f"{statement.where}: alpha: lvsd always keeps a new server "
                                    "out until its first check passes")
                case "sorry_server":
                    sorry = self.sorry_server(statement, block)
                    if sorry is not None:
                        fields["sorry_server"] = sorry
                case ("real_server" | "sorry_server_lvs_method" | "virtualhost" | "ip_family"
                      | "delay_loop" | "connect_timeout" | "retry" | "nb_get_retry"
                      | "delay_before_retry"):
                    pass  # used by the real servers, the fwmark family or the sorry server
                case name:
                    comments.append(self.not_imported(statement))
        if persistence is not None:
            fields["persistence"] = persistence
            if granularity is not None and granularity.args:
                mask = granularity.args[0].text
                fields["persistence_netmask"] = int(mask) if mask.isdigit() else mask
        elif granularity is not None:
            comments.append(f"{granularity.where}: {granularity.text()}: ignored without "
                            "persistence_timeout, as keepalived does")
        sched_flags = []
        for flag in flags:
            owner, bit = SCHED_FLAGS[flag]
            sched_flags.append(flag if owner in (None, scheduler)
                               else generic_sched_flag_names(bit)[0])
        head: dict[str, Value] = {"scheduler": scheduler}
        if sched_flags:
            head["sched_flags"] = list(dict.fromkeys(sched_flags))
        fields = {**head, **fields, "forward": forward["forward"],
                  "on_failure": "weight0" if inhibit else "remove"}
        return fields, comments, forward

    def not_imported(self, statement: Statement) -> str:
        why = _NO_EQUIVALENT.get(statement.name)
        if why is None:
            return f"{statement.where}: {statement.text()}: not imported (unknown to lvsd)"
        return f"{statement.where}: {statement.text()}: not imported ({why})"

    def flag(self, statement: Statement) -> bool:
        values = statement.values()
        return not values or values[0].lower() in _TRUE

    def method(self, statement: Statement) -> dict[str, Value] | None:
        words = statement.values()
        kind = words[0].upper() if words else ""
        if kind not in _FORWARD:
            self.problem(statement, f"expected NAT, DR or TUN, got {kind!r}")
            return None
        out: dict[str, Value] = {"forward": _FORWARD[kind]}
        rest = [w.lower() for w in words[1:]]
        if rest and kind != "TUN":
            self.problem(statement, "only TUN takes options")
            return None
        index = 0
        while index < len(rest):
            word = rest[index]
            if word == "type" and index + 1 < len(rest) and rest[index + 1] in TUNNEL_BY_NAME:
                out["tunnel_type"] = rest[index + 1]
                index += 2
            elif word == "port" and index + 1 < len(rest) and rest[index + 1].isdigit():
                out["tunnel_port"] = int(rest[index + 1])
                index += 2
            elif word in TUNNEL_CSUM_BY_NAME:
                out["tunnel_csum"] = word
                index += 1
            else:
                self.problem(statement, f"unexpected {word!r}")
                return None
        return out

    def sorry_server(self, statement: Statement, block: list[Statement]
                     ) -> dict[str, Scalar] | None:
        endpoint = self.endpoint(statement)
        if endpoint is None:
            return None
        address, port = endpoint
        out: dict[str, Scalar] = {"address": str(address)}
        if port is not None:
            out["port"] = port
        for item in block:
            if item.name == "sorry_server_lvs_method":
                method = self.method(item)
                if method is not None:
                    out["forward"] = str(method["forward"])
        return out

    # --- real servers and checks -------------------------------------------------------------

    def real_server(self, rs: Statement, vs_scope: _Scope, service: dict[str, Value],
                    forward: dict[str, Value]) -> ServerOut | None:
        """The server as keepalived describes it (its port, if given, kept for server_for)."""
        endpoint = self.endpoint(rs)
        if endpoint is None:
            return None
        address, port = endpoint
        fields: dict[str, Value] = {"address": str(address)}
        comments: list[str] = []
        block = rs.block or []
        own_forward = dict(forward)
        for statement in block:
            match statement.name:
                case "weight":
                    fields["weight"] = int(float(statement.values()[0])) if statement.args else 1
                case "lvs_method" | "lb_kind":
                    method = self.method(statement)
                    if method is not None:
                        own_forward = method
                case "uthreshold":
                    fields["upper_threshold"] = int(statement.values()[0])
                case "lthreshold":
                    fields["lower_threshold"] = int(statement.values()[0])
                case "inhibit_on_failure":
                    wanted = "weight0" if self.flag(statement) else "remove"
                    if wanted != service["on_failure"]:
                        comments.append(f"{statement.where}: {statement.text()}: lvsd decides "
                                        f"per service: on_failure = {service['on_failure']!r}")
                case "alpha":
                    comments.append(f"{statement.where}: alpha: lvsd always keeps a new server "
                                    "out until its first check passes")
                case name if name in ("virtualhost", *_TIMINGS, "nb_get_retry"):
                    pass
                case name if name.isupper() and statement.block is not None:
                    pass  # checkers, below
                case _:
                    comments.append(self.not_imported(statement))
        if port is not None:
            fields["port"] = port
        if own_forward["forward"] != service["forward"]:
            fields["forward"] = own_forward["forward"]
        for name in ("tunnel_type", "tunnel_port", "tunnel_csum"):
            if name in own_forward and own_forward["forward"] == "tunnel":
                fields[name] = own_forward[name]
        scope = vs_scope.child(block)
        checkers = [s for s in block if s.name.isupper() and s.block is not None]
        # Like keepalived, lvsd needs every check of a server to pass.
        checks = [c for c in (self.check(checker, scope, comments) for checker in checkers)
                  if c is not None]
        if not checkers:
            comments.append(f"{rs.where}: no checker: always in rotation")
        return ServerOut(fields, checks[0] if checks else None,
                         [f"{rs.where}: {rs.text()}", *comments], rs.where, checks[1:])

    def check(self, checker: Statement, rs_scope: _Scope,
              comments: list[str]) -> dict[str, Value] | None:
        kind = checker.name
        if kind in _NO_CHECKER:
            comments.append(f"{checker.where}: {kind}: not imported ({_NO_CHECKER[kind]}): "
                            "the server is always in rotation")
            return None
        block = checker.block or []
        scope = rs_scope.child(block)
        check: dict[str, Value] = {}
        match kind:
            case "HTTP_GET" | "SSL_GET":
                check["type"] = "http" if kind == "HTTP_GET" else "https"
                self.http(checker, scope, check, comments)
            case "TCP_CHECK":
                check["type"] = "tcp"
            case "SMTP_CHECK":
                check.update(type="tcp", expect="^220")
                comments.append(f"{checker.where}: SMTP_CHECK: a tcp check waiting for the "
                                "220 greeting (no HELO is sent)")
            case "DNS_CHECK":
                check.update(type="dns", query_type="SOA", query_name=".")
            case "MISC_CHECK":
                check["type"] = "exec"
            case "FILE_CHECK":
                check["type"] = "file"
            case _:
                comments.append(f"{checker.where}: {kind}: unknown checker, not imported")
                return None
        for statement in block:
            values = statement.values()
            match statement.name:
                case "connect_ip" if kind not in ("MISC_CHECK", "FILE_CHECK"):
                    address = self.address(statement, values[0]) if values else None
                    if address is not None:
                        check["connect_ip"] = str(address)
                case "connect_port" if kind not in ("MISC_CHECK", "FILE_CHECK"):
                    port = self.port(statement, values[0]) if values else None
                    if port:
                        check["connect_port"] = port
                case "type" if kind == "DNS_CHECK":
                    check["query_type"] = values[0].upper() if values else "SOA"
                case "name" if kind == "DNS_CHECK":
                    check["query_name"] = values[0] if values else "."
                case "misc_path" if kind == "MISC_CHECK":
                    command = " ".join(values)
                    argv: list[Scalar] = []
                    try:
                        argv += shlex.split(command)
                    except ValueError as exc:
                        self.problem(statement, f"cannot split into words: {exc}")
                    if argv:
                        check["argv"] = argv
                    comments.append(f"{statement.where}: misc_path: run directly, never "
                                    "through a shell; LVSD_RS_ADDRESS etc. describe the server")
                case "misc_timeout" if kind == "MISC_CHECK":
                    check["timeout"] = float(values[0])
                case "track_file" if kind == "FILE_CHECK":
                    path = self.track_files.get(values[0]) if values else None
                    if path is None:
                        self.problem(statement, f"no track_file block named {values[:1]}")
                    else:
                        check["path"] = path
                        comments.append(f"{statement.where}: track_file {values[0]}: lvsd's "
                                        "file check takes the server out while the file "
                                        "exists; keepalived read a number from it")
                case ("url" | "delay_loop" | "connect_timeout" | "retry" | "nb_get_retry"
                      | "delay_before_retry" | "virtualhost" | "alpha"):
                    pass
                case _:
                    comments.append(self.not_imported(statement))
        if kind == "MISC_CHECK" and "argv" not in check:
            self.problem(checker, "needs misc_path")
            return None
        if kind == "FILE_CHECK":
            if "path" not in check:
                self.problem(checker, "needs track_file")
                return None
            return check  # a file check connects nowhere and has no timing of its own
        self.timings(kind, scope, check)
        return check

    def timings(self, kind: str, scope: _Scope, check: dict[str, Value]) -> None:
        delay_loop = float(scope.text("delay_loop") or 60)
        check["interval"] = delay_loop
        if kind != "MISC_CHECK":
            check["timeout"] = float(scope.text("connect_timeout") or 5)
        else:
            check.setdefault("timeout", delay_loop)
        default_retry = {"DNS_CHECK": 3, "MISC_CHECK": 0}.get(kind, 1)
        retry = scope.text("retry")
        check["rise"] = 1
        check["fall"] = (int(float(retry)) if retry is not None else default_retry) + 1
        default_delay = {"HTTP_GET": 3.0, "SSL_GET": 3.0, "DNS_CHECK": delay_loop}.get(kind, 1.0)
        delay = scope.text("delay_before_retry")
        check["retry_interval"] = float(delay) if delay is not None else default_delay

    def http(self, checker: Statement, scope: _Scope, check: dict[str, Value],
             comments: list[str]) -> None:
        urls = [s for s in checker.block or [] if s.name == "url"]
        host = scope.text("virtualhost")
        for extra in urls[1:]:
            comments.append(f"{extra.where}: url: not imported: an lvsd check asks for one "
                            "URL")
        if checker.name == "SSL_GET":
            check["verify"] = False
            comments.append(f"{checker.where}: SSL_GET: keepalived never verifies the "
                            "certificate; set verify = true (and ca_file) to have lvsd do it")
        if not urls:
            comments.append(f"{checker.where}: {checker.name}: no url: lvsd asks for /")
        for statement in (urls[0].block or []) if urls else []:
            values = statement.values()
            match statement.name:
                case "path":
                    check["path"] = values[0] if values else "/"
                case "status_code":
                    check["expect_status"] = [int(v) if v.isdigit() else v for v in values]
                case "virtualhost":
                    host = values[0] if values else host
                case "digest":
                    comments.append(f"{statement.where}: digest {' '.join(values)}: not "
                                    "imported (lvsd matches the body with expect_body, a regex)")
                case "regex":
                    try:
                        re.compile(values[0] if values else "")
                    except re.error as exc:
                        comments.append(f"{statement.where}: regex: not imported, not a Python "
                                        f"regular expression: {exc}")
                    else:
                        check["expect_body"] = values[0] if values else ""
                case "regex_no_match":
                    check.pop("expect_body", None)
                    comments.append(f"{statement.where}: regex_no_match: not imported (an "
                                    "lvsd body regex must match)")
                case _:
                    comments.append(self.not_imported(statement))
        if host is not None:
            check["host"] = host


def import_keepalived(path: str | Path, *, config_id: str | None = None) -> Document:
    """The lvsd config for keepalived.conf ``path``; raises ConfigError with every problem.

    ``config_id`` selects ``@ID`` conditional lines; default: the host name up to its first
    dot, as keepalived does.
    """
    path = Path(path)
    ident = config_id if config_id is not None else socket.gethostname().split(".")[0]
    return _Importer(str(path), ident).run(path)
