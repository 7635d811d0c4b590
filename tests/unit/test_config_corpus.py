"""Broken configs through ``lvsd check-config``, one per way of getting a config wrong: each
exits 2, prints no traceback, and names the place and what is wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from lvsd.cli import EXIT_BAD_INPUT, main

SVC = '[[services]]\nname = "web"\naddress = "192.0.2.1"\nport = 80\n'
PLACE = 'services[0] "web" (tcp:192.0.2.1:80)'
RS = '[[services.real_servers]]\naddress = "192.0.2.11"\n'
RS_PLACE = f"{PLACE}.real_servers[0] (192.0.2.11)"
FWM = '[[services]]\nfwmark = 8\n'
FWM_PLACE = "services[0] (fwm:8)"


def rs(extra: str, address: str = "192.0.2.11") -> str:
    return f'{SVC}[[services.real_servers]]\naddress = "{address}"\n{extra}\n'


def check(extra: str) -> str:
    return f"{SVC}[services.check]\n{extra}\n{RS}"


def daemon(extra: str) -> str:
    return f"[daemon]\n{extra}\n{SVC}{RS}"


def service(extra: str) -> str:
    return f"{SVC}{extra}\n{RS}"


def sync(extra: str) -> str:
    return f"[sync]\n{extra}\n{SVC}{RS}"


def role(extra: str) -> str:
    return f"[role]\n{extra}\n{SVC}{RS}"


# (id, the file's bytes or text, the place printed, words of the message)
CASES: list[tuple[str, str | bytes, str, str]] = [
    # reading the file
    ("latin-1", b"# caf\xe9\n" + (SVC + RS).encode(), "line 1, column 6", "not UTF-8"),
    ("nul-byte", SVC + "\x00" + RS, "line 5", "not valid TOML"),
    ("deep-nesting", "x = " + "[" * 5000 + "]" * 5000 + "\n", "", "nested too deeply"),
    ("truncated-table", "[[services]\n", "line 1", "not valid TOML"),
    ("empty-file", "", "services", "allow_empty = true"),
    ("comments-only", "# services were here\n# and here\n", "services", "allow_empty"),
    ("daemon-only", '[daemon]\nlisten = "127.0.0.1:9163"\n', "services", "allow_empty"),
    ("services-not-array", "services = 5\n", "services", "expected an array of tables"),
    ("services-a-table", '[services]\naddress = "192.0.2.1"\n', "services",
     "expected an array of tables"),
    ("service-not-table", "services = [5]\n", "services[0]", "expected a table"),
    ("daemon-not-table", "daemon = 5\n" + SVC + RS, "daemon", "expected a table"),
    ("top-level-typo", "[[service]]\naddress = '192.0.2.1'\n", "top level",
     "unknown key 'service' (did you mean 'services'?)"),
    # [sync] and [role]
    ("sync-mode", sync('mode = "on"'), "sync.mode", "expected 'both' or 'follow-role'"),
    ("sync-no-interface", sync('mode = "both"'), "sync.interface", "needs the interface"),
    ("sync-follow-no-interface", sync('mode = "follow-role"'), "sync.interface",
     "needs the interface"),
    ("sync-interface-long", sync('mode = "both"\ninterface = "a-very-long-name0"'),
     "sync.interface", "longer than 15 bytes"),
    ("sync-interface-slash", sync('mode = "both"\ninterface = "eth0/1"'), "sync.interface",
     "not an interface name"),
    ("sync-interface-empty", sync('mode = "both"\ninterface = ""'), "sync.interface",
     "is empty"),
    ("sync-interface-number", sync("mode = \"both\"\ninterface = 0"), "sync.interface",
     "expected a string"),
    ("sync-group-unicast", sync('mode = "both"\ninterface = "eth0"\ngroup = "192.0.2.1"'),
     "sync.group", "not a multicast address"),
    ("sync-group-v6-unicast", sync('mode = "both"\ninterface = "eth0"\ngroup = "2001:db8::1"'),
     "sync.group", "not a multicast address"),
    ("sync-group-word", sync('mode = "both"\ninterface = "eth0"\ngroup = "all"'),
     "sync.group", "not an IP address"),
    ("sync-syncid-range", sync('mode = "both"\ninterface = "eth0"\nsyncid = 256'),
     "sync.syncid", "at most 255"),
    ("sync-syncid-negative", sync('mode = "both"\ninterface = "eth0"\nsyncid = -1'),
     "sync.syncid", "at least 0"),
    ("sync-port-zero", sync('mode = "both"\ninterface = "eth0"\nport = 0'), "sync.port",
     "out of range"),
    ("sync-port-no-room", sync('mode = "both"\ninterface = "eth0"\nport = 65530'),
     "sync.port", "leaves no room"),
    ("sync-ttl-zero", sync('mode = "both"\ninterface = "eth0"\nttl = 0'), "sync.ttl",
     "at least 1"),
    ("sync-ttl-range", sync('mode = "both"\ninterface = "eth0"\nttl = 256'), "sync.ttl",
     "at most 255"),
    ("sync-maxlen-zero", sync('mode = "both"\ninterface = "eth0"\nmaxlen = 0'),
     "sync.maxlen", "at least 1"),
    ("sync-maxlen-big", sync('mode = "both"\ninterface = "eth0"\nmaxlen = 70000'),
     "sync.maxlen", "at most 65535"),
    ("sync-typo", sync('mode = "both"\ninterface = "eth0"\nsync_id = 1'), "sync",
     "sync_id"),
    ("sync-not-table", "sync = 5\n" + SVC + RS, "sync", "expected a table"),
    ("role-address", role('addresses = ["198.51.100"]'), "role.addresses[0]",
     "not an IP address"),
    ("role-addresses-string", role('addresses = "198.51.100.10"'), "role.addresses",
     "expected"),
    ("role-instance-empty", role('instance = ""'), "role.instance", "is empty"),
    ("role-fifo-number", role("notify_fifo = 5"), "role.notify_fifo", ""),
    # [daemon]
    ("listen-hostname", daemon('listen = "localhost:9163"'), "daemon.listen",
     "'localhost' is not an IP address"),
    ("listen-port-word", daemon('listen = "127.0.0.1:abc"'), "daemon.listen", "expected IP:PORT"),
    ("listen-port-range", daemon('listen = "127.0.0.1:70000"'), "daemon.listen", "out of range"),
    ("listen-v4-brackets", daemon('listen = "[127.0.0.1]:80"'), "daemon.listen", "brackets"),
    ("listen-v6-bare", daemon('listen = "::1:9163"'), "daemon.listen", "expected IP:PORT"),
    ("listen-number", daemon("listen = 9163"), "daemon.listen", "expected a string, got 9163"),
    ("resync-negative", daemon("resync_interval = -1"), "daemon.resync_interval", "above 0"),
    ("resync-word", daemon('resync_interval = "forever"'), "daemon.resync_interval",
     "not a duration"),
    ("resync-bool", daemon("resync_interval = true"), "daemon.resync_interval",
     "expected a duration"),
    ("drain-inf", daemon("drain_timeout = inf"), "daemon.drain_timeout", "finite"),
    ("mark-base-top", daemon("dr_check_mark_base = 0xFFFFFFFF"), "daemon.dr_check_mark_base",
     "leaves no room"),
    ("mark-base-zero", daemon("dr_check_mark_base = 0"), "daemon.dr_check_mark_base",
     "out of range"),
    ("on-stop-typo", daemon('on_stop = "withdraws"'), "daemon.on_stop",
     "(did you mean 'withdraw'?)"),
    ("state-dir-empty", daemon('state_dir = ""'), "daemon.state_dir", "non-empty path"),
    ("log-level-number", daemon("log_level = 5"), "daemon.log_level", "expected 'debug'"),
    ("probes-float", daemon("max_probes_in_flight = 1.5"), "daemon.max_probes_in_flight",
     "expected an integer, got 1.5"),
    ("allow-empty-string", '[daemon]\nallow_empty = "yes"\n', "daemon.allow_empty",
     "expected true or false"),
    ("daemon-typo", daemon("listn = 1"), "daemon", "unknown key 'listn' (did you mean 'listen'?)"),
    # [timeouts]
    ("timeout-zero", f"[timeouts]\ntcp = 0\n{SVC}{RS}", "timeouts.tcp", "at least 1"),
    ("timeout-beyond-kernel", f"[timeouts]\nudp = 2147484\n{SVC}{RS}", "timeouts.udp",
     "largest the kernel accepts"),
    ("timeout-string", f'[timeouts]\ntcpfin = "60"\n{SVC}{RS}', "timeouts.tcpfin",
     "expected an integer"),
    ("timeout-typo", f"[timeouts]\ntcp_fin = 3\n{SVC}{RS}", "timeouts",
     "(did you mean 'tcpfin'?)"),
    # services
    ("port-bool", f'[[services]]\nname = "web"\naddress = "192.0.2.1"\nport = true\n{RS}',
     'services[0] "web"', "expected an integer, got true"),
    ("port-float", f'[[services]]\nname = "web"\naddress = "192.0.2.1"\nport = 80.0\n{RS}',
     'services[0] "web"', "expected an integer, got 80.0"),
    ("port-range", f'[[services]]\nname = "web"\naddress = "192.0.2.1"\nport = 65536\n{RS}',
     'services[0] "web" (tcp:192.0.2.1:65536).port', "out of range 0..65535"),
    ("vip-not-ip", SVC.replace("192.0.2.1", "192.0.2.999") + RS, "address", "not an IP address"),
    ("vip-multicast", SVC.replace("192.0.2.1", "224.0.0.1") + RS, ".address", "multicast"),
    ("vip-broadcast", SVC.replace("192.0.2.1", "255.255.255.255") + RS, ".address", "broadcast"),
    ("vip-any", SVC.replace("192.0.2.1", "0.0.0.0") + RS, ".address", "unspecified"),
    ("vip-any-v6", SVC.replace("192.0.2.1", "::") + RS, ".address", "unspecified"),
    ("vip-scoped", SVC.replace("192.0.2.1", "fe80::1%eth0") + RS, ".address", "scope"),
    ("port-zero-no-persistence", SVC.replace("port = 80", "port = 0") + RS, "port",
     "needs persistence"),
    ("ops-on-tcp", service("ops = true"), f"{PLACE}.ops", "only for UDP"),
    ("ops-on-sctp", service('protocol = "sctp"\nops = true').replace(
        "[[services.real_servers]]", "[[services.real_servers]]"), ".ops", "not SCTP"),
    ("persistence-wraps", service("persistence = 2000000000"), f"{PLACE}.persistence",
     "31 days"),
    ("persistence-zero", service("persistence = 0"), f"{PLACE}.persistence", "out of range"),
    ("persistence-one-past", service("persistence = 2678401"), f"{PLACE}.persistence",
     "2678400"),
    ("netmask-bad", service('persistence = 60\npersistence_netmask = "255.0.255.300"'),
     f"{PLACE}.persistence_netmask", "not an IPv4 netmask"),
    ("netmask-float", service("persistence = 60\npersistence_netmask = 1.5"),
     f"{PLACE}.persistence_netmask", "expected a netmask"),
    ("netmask-without-persistence", service("persistence_netmask = 24"),
     f"{PLACE}.persistence_netmask", "needs persistence"),
    ("ipv6-prefix-129", '[[services]]\naddress = "2001:db8::1"\nport = 80\npersistence = 60\n'
     'persistence_netmask = 129\n[[services.real_servers]]\naddress = "2001:db8::11"\n',
     "persistence_netmask", "prefix length 1..128"),
    ("scheduler-typo", service('scheduler = "rrr"'), f"{PLACE}.scheduler",
     "(did you mean 'rr'?)"),
    ("scheduler-empty", service('scheduler = ""'), f"{PLACE}.scheduler", "unknown scheduler"),
    ("sched-flag-wrong-scheduler", service('scheduler = "rr"\nsched_flags = ["mh-port"]'),
     f"{PLACE}.sched_flags", "needs scheduler 'mh'"),
    ("sched-flags-string", service('sched_flags = "mh-port"'), f"{PLACE}.sched_flags",
     "expected an array"),
    ("sched-flag-typo", service('scheduler = "sh"\nsched_flags = ["sh-fallbak"]'),
     f"{PLACE}.sched_flags", "(did you mean 'sh-fallback'?)"),
    ("fwmark-zero", "[[services]]\nfwmark = 0\n" + RS, "services[0] (fwm:0).fwmark",
     "out of range"),
    ("fwmark-past-u32", "[[services]]\nfwmark = 4294967296\n" + RS, ".fwmark", "out of range"),
    ("fwmark-with-address", FWM + 'address = "192.0.2.1"\n' + RS, f"{FWM_PLACE}.address",
     "has no address or port"),
    ("fwmark-in-probe-range", "[[services]]\nfwmark = 0x4C560010\n" + RS, ".fwmark",
     "DR-path probe marks"),
    ("fwmark-in-moved-probe-range", "[daemon]\ndr_check_mark_base = 100\n"
     "[[services]]\nfwmark = 200\n" + RS, "services[0] (fwm:200).fwmark", "dr_check_mark_base"),
    ("no-key", '[[services]]\nname = "web"\n' + RS, 'services[0] "web"',
     "needs address and port, or fwmark"),
    ("pe-without-persistence", service('protocol = "udp"\npe = "sip"'), ".pe",
     "needs persistence"),
    ("protocol-unknown", service('protocol = "icmp"'), "services[0] \"web\" (icmp:192.0.2.1:80)"
     ".protocol", "expected 'tcp' or 'udp' or 'sctp'"),
    ("quorum-negative", service("quorum = -1"), f"{PLACE}.quorum", "at least 0"),
    ("name-empty", service('name = ""').replace('name = "web"\n', "", 1),
     "services[0] (tcp:192.0.2.1:80).name", "non-empty name"),
    ("duplicate-service", SVC + RS + SVC.replace('"web"', '"web2"') + RS,
     'services[1] "web2" (tcp:192.0.2.1:80)', "duplicate of services[0]"),
    ("duplicate-name", SVC + RS + SVC.replace("port = 80", "port = 81") + RS,
     'services[1] "web" (tcp:192.0.2.1:81).name', "duplicate name 'web'"),
    ("on-change-empty", service("on_change = []"), f"{PLACE}.on_change", "needs a program"),
    ("service-typo", service('schedular = "rr"'), PLACE, "(did you mean 'scheduler'?)"),
    ("family-on-vip", service('family = "ipv6"'), f"{PLACE}.family", "only for fwmark"),
    # real servers
    ("weight-past-max", rs("weight = 70000"), f"{RS_PLACE}.weight", "out of range 0..65535"),
    ("weight-negative", rs("weight = -1"), f"{RS_PLACE}.weight", "out of range"),
    ("weight-float", rs("weight = 1.5"), f"{RS_PLACE}.weight", "expected an integer, got 1.5"),
    ("weight-bool", rs("weight = true"), f"{RS_PLACE}.weight", "expected an integer, got true"),
    ("weight-typo", rs("wieght = 2"), RS_PLACE, "unknown key 'wieght' (did you mean 'weight'?)"),
    ("rs-multicast", rs("", "224.0.0.5"), "(224.0.0.5).address", "multicast"),
    ("rs-broadcast", rs("", "255.255.255.255"), ".address", "broadcast"),
    ("rs-any", rs("", "0.0.0.0"), ".address", "unspecified"),
    ("rs-zero-net", rs("", "0.1.2.3"), ".address", "0.0.0.0/8"),
    ("rs-link-local", rs("", "169.254.1.1"), ".address", "link-local"),
    ("rs-link-local-v6", rs('forward = "tunnel"', "fe80::1"), ".address", "link-local"),
    ("rs-scoped", rs('forward = "tunnel"', "fe80::1%eth0"), ".address", "scope"),
    ("lower-without-upper", rs("lower_threshold = 5"), f"{RS_PLACE}.lower_threshold",
     "needs an upper threshold"),
    ("lower-above-upper", rs("upper_threshold = 10\nlower_threshold = 11"),
     f"{RS_PLACE}.lower_threshold", "above the upper threshold"),
    ("upper-past-int", rs("upper_threshold = 4294967296"), f"{RS_PLACE}.upper_threshold",
     "at most 2147483647"),
    ("route-port-change", rs("port = 8080"), f"{RS_PLACE}.port", "cannot change the port"),
    ("gue-without-port", rs('forward = "tunnel"\ntunnel_type = "gue"'),
     f"{RS_PLACE}.tunnel_port", "out of range 1..65535"),
    ("ipip-with-port", rs('forward = "tunnel"\ntunnel_port = 6080'), f"{RS_PLACE}.tunnel_port",
     "has no port"),
    ("gre-remcsum", rs('forward = "tunnel"\ntunnel_type = "gre"\ntunnel_csum = "remcsum"'),
     f"{RS_PLACE}.tunnel_csum", "remcsum"),
    ("ipip-csum", rs('forward = "tunnel"\ntunnel_csum = "csum"'), f"{RS_PLACE}.tunnel_csum",
     "no checksum option"),
    ("tunnel-option-without-tunnel", rs('tunnel_type = "gue"\ntunnel_port = 6080'),
     RS_PLACE, 'only for tunnel forwarding'),
    ("family-mix-route", rs("", "2001:db8::11"), ".address", "only tunnel mixes them"),
    ("duplicate-server", SVC + RS + RS, f"{PLACE}.real_servers[1] (192.0.2.11)",
     "duplicate of real_servers[0]"),
    ("servers-not-array", service("real_servers = 5").replace(RS, ""), f"{PLACE}.real_servers",
     "expected an array"),
    ("server-a-string", SVC + 'real_servers = ["192.0.2.11"]\n', f"{PLACE}.real_servers[0]",
     "expected a table"),
    ("server-missing-address", SVC + "[[services.real_servers]]\nweight = 2\n",
     f"{PLACE}.real_servers[0].address", "missing (required)"),
    ("forward-typo", rs('forward = "mask"'), f"{RS_PLACE}.forward", "(did you mean 'masq'?)"),
    ("sorry-weight-zero", service('sorry_server = { address = "192.0.2.99", weight = 0 }'),
     f"{PLACE}.sorry_server.weight", "at least 1"),
    ("sorry-multicast", service('sorry_server = { address = "224.0.0.9" }'),
     f"{PLACE}.sorry_server.address", "multicast"),
    ("sorry-typo", service('sorry_server = { address = "192.0.2.99", wieght = 2 }'),
     f"{PLACE}.sorry_server", "(did you mean 'weight'?)"),
    # checks
    ("check-type-typo", check('type = "htp"'), f"{PLACE}.check", "(did you mean 'http'?)"),
    ("check-without-type", check('path = "/"'), f"{PLACE}.check", "needs a type"),
    ("check-not-table", service("check = 5"), f"{PLACE}.check", "expected a table, got 5"),
    ("check-key-typo", check('type = "http"\npth = "/"'), f"{PLACE}.check",
     "unknown key 'pth' (did you mean 'path'?)"),
    ("headers-number", check('type = "http"\nheaders = 5'), f"{PLACE}.check.headers",
     "expected a table of header names"),
    ("headers-numbers", check('type = "http"\nheaders = [1, 2]'), f"{PLACE}.check.headers",
     "pair of strings"),
    ("headers-value-number", check('type = "http"\nheaders = { X-A = 5 }'),
     f"{PLACE}.check.headers", "pair of strings"),
    ("status-float", check('type = "http"\nexpect_status = 1.5'), f"{PLACE}.check.expect_status",
     "expected a status code"),
    ("status-word", check('type = "http"\nexpect_status = ["2xx"]'),
     f"{PLACE}.check.expect_status", "expected a status code"),
    ("status-range", check('type = "http"\nexpect_status = [[200, 700]]'),
     f"{PLACE}.check.expect_status", "not within 100-599"),
    ("body-huge-repeat", check('type = "http"\nexpect_body = "a{99999999999}"'),
     f"{PLACE}.check.expect_body", "not a valid regex"),
    ("body-bad-regex", check('type = "http"\nexpect_body = "("'), f"{PLACE}.check.expect_body",
     "not a valid regex"),
    ("tcp-expect-huge-repeat", check('type = "tcp"\nsend = "x"\nexpect = "b{4294967296}"'),
     f"{PLACE}.check.expect", "not a valid regex"),
    ("interval-zero", check('type = "tcp"\ninterval = 0'), f"{PLACE}.check.interval", "above 0"),
    ("interval-bool", check('type = "tcp"\ninterval = true'), f"{PLACE}.check.interval",
     "expected a duration"),
    ("interval-nan", check('type = "tcp"\ninterval = nan'), f"{PLACE}.check.interval", "got nan"),
    ("rise-float", check('type = "tcp"\nrise = 1.5'), f"{PLACE}.check.rise",
     "expected an integer, got 1.5"),
    ("connect-port-zero", check('type = "tcp"\nconnect_port = 0'), f"{PLACE}.check.connect_port",
     "at least 1"),
    ("connect-ip-bad", check('type = "tcp"\nconnect_ip = "nope"'), f"{PLACE}.check.connect_ip",
     "not an IP address"),
    ("connect-ip-multicast", check('type = "tcp"\nconnect_ip = "224.0.0.1"'),
     f"{PLACE}.check.connect_ip", "multicast"),
    ("fwmark-check-no-port", FWM + '[services.check]\ntype = "tcp"\n' + RS.replace(
        "192.0.2.11", "192.0.2.12"), f"{FWM_PLACE}.real_servers[0] (192.0.2.12).check",
     "set connect_port"),
    ("port-zero-check-no-port", SVC.replace("port = 80", "port = 0\npersistence = 60")
     + '[services.check]\ntype = "http"\n' + RS, ".check", "would probe port 0"),
    ("dr-path-masq", check('type = "http"\ndr_path = true') + 'forward = "masq"\n',
     f"{RS_PLACE}.check.dr_path", "only for direct routing"),
    ("dr-path-fwmark", FWM + '[services.check]\ntype = "http"\ndr_path = true\n'
     'connect_port = 80\n' + RS, ".check.dr_path", "not a fwmark service"),
    ("dr-path-connect-ip", check('type = "http"\ndr_path = true\nconnect_ip = "192.0.2.50"'),
     f"{PLACE}.check", "connect_ip cannot be combined with dr_path"),
    ("dns-no-name", check('type = "dns"'), f"{PLACE}.check.query_name", "missing (required)"),
    ("dns-type-bogus", check('type = "dns"\nquery_name = "example.com"\nquery_type = "AAAAA"'),
     f"{PLACE}.check.query_type", "unknown query_type"),
    ("dns-name-too-long", check(f'type = "dns"\nquery_name = "{"a" * 300}"'),
     f"{PLACE}.check.query_name", "bad query_name"),
    ("exec-empty", check('type = "exec"\nargv = []'), f"{PLACE}.check.argv",
     "needs at least 1 item"),
    ("exec-string", check('type = "exec"\nargv = "/bin/true"'), f"{PLACE}.check.argv",
     "expected an array"),
    ("exec-env-number", check('type = "exec"\nargv = ["/bin/true"]\nenv = { A = 5 }'),
     f"{PLACE}.check.env", "strings"),
    ("file-placeholder", check('type = "file"\npath = "/run/{nope}"'), f"{PLACE}.check.path",
     "unknown placeholder"),
    ("file-format-spec", check('type = "file"\npath = "/run/{address:d}"'),
     f"{PLACE}.check.path", "bad path template"),
    ("file-connects", check('type = "file"\npath = "/run/m"\nconnect_port = 80'),
     f"{PLACE}.check", "connects nowhere"),
    ("https-ca-missing", check('type = "https"\nca_file = "/nonexistent/ca.pem"'),
     f"{PLACE}.check.ca_file", "cannot read"),
    ("https-ca-not-pem", check('type = "https"\nca_file = "/etc/hostname"'), f"{PLACE}.check",
     "cannot load the TLS files"),
    ("tcp-send-empty", check('type = "tcp"\nsend = ""'), f"{PLACE}.check", "send is empty"),
    ("http-method", check('type = "http"\nmethod = "G ET"'), f"{PLACE}.check.method",
     "not an HTTP method"),
    ("http-path", check('type = "http"\npath = "noslash"'), f"{PLACE}.check.path",
     "must start with '/'"),
    ("server-check-override-bad", rs('check = { type = "http", expect_status = 1.5 }'),
     f"{RS_PLACE}.check.expect_status", "expected a status code"),
]


@pytest.mark.parametrize(("content", "place", "words"),
                         [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_a_broken_config_exits_2_and_names_the_place(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | bytes, place: str,
        words: str) -> None:
    path = tmp_path / "lvsd.toml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    assert main(["check-config", str(path)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "Traceback" not in err
    for internal in ("Input should be", "literal_error", "errors.pydantic.dev", "instance of",
                     "Value error", "function-after", "lax-or-strict"):
        assert internal not in err
    lines = [line.strip() for line in err.splitlines()[1:]]
    assert any(line.startswith(place) or f"{place}" in line.split(": ", 1)[0] for line in lines
               if words in line), f"no line with {place!r} and {words!r} in:\n{err}"


def test_the_corpus_covers_at_least_sixty_configs() -> None:
    assert len(CASES) >= 60
    assert len({case[0] for case in CASES}) == len(CASES)
