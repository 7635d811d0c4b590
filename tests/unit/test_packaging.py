"""The Dockerfile, the systemd unit and pyproject.toml agree with each other and with the code."""

from __future__ import annotations

import fnmatch
import importlib
import json
import re
import shlex
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from lvsd import cli, config

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
DOCKERFILE = (REPO / "Dockerfile").read_text()
UNIT = (REPO / "systemd" / "lvsd.service").read_text()
MODULES_LOAD = REPO / "systemd" / "modules-load.d" / "lvsd.conf"


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for line in DOCKERFILE.splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        logical.append(pending + line.strip())
        pending = ""
    instructions = []
    for text in logical:
        keyword, _, arguments = text.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def dockerfile(keyword: str) -> list[str]:
    return [args for kw, args in dockerfile_instructions() if kw == keyword]


def unit_values(key: str) -> list[str]:
    return re.findall(rf"^{re.escape(key)}=(.*)$", UNIT, flags=re.MULTILINE)


def unit_value(key: str) -> str:
    values = unit_values(key)
    assert len(values) == 1, f"{key}= appears {len(values)} times"
    return values[0]


def console_script() -> tuple[str, str]:
    ((name, target),) = PYPROJECT["project"]["scripts"].items()
    return name, target


def test_console_script_target_exists() -> None:
    _name, target = console_script()
    module_name, _, function = target.partition(":")
    assert callable(getattr(importlib.import_module(module_name), function))


def test_container_and_unit_run_the_console_script() -> None:
    name, _target = console_script()
    (entrypoint,) = dockerfile("ENTRYPOINT")
    assert json.loads(entrypoint) == [name]
    exec_start = shlex.split(unit_value("ExecStart"))
    assert Path(exec_start[0]).name == name
    assert Path(exec_start[0]).is_absolute()


def test_container_and_unit_pass_the_same_arguments_and_the_cli_accepts_them() -> None:
    (cmd,) = dockerfile("CMD")
    container_args = json.loads(cmd)
    unit_args = shlex.split(unit_value("ExecStart"))[1:]
    assert container_args == unit_args
    parsed = cli.build_parser().parse_args(unit_args)
    assert parsed.command == "run"
    assert parsed.config == Path("/etc/lvsd/lvsd.toml")


def test_the_image_installs_this_project_with_the_fast_extra() -> None:
    project = PYPROJECT["project"]
    installs = " ".join(args for args in dockerfile("RUN") if "pip " in args)
    assert "'/src[fast]'" in installs, "the build stage installs the source tree"
    assert "venv /opt/lvsd" in installs and "/opt/lvsd/bin/pip install" in installs
    assert "--from=build /opt/lvsd /opt/lvsd" in dockerfile("COPY"), "the final stage: the venv"
    assert "fast" in project["optional-dependencies"]
    assert {args.split()[0] for args in dockerfile("FROM")} == {"${BASE_IMAGE}"}
    (default,) = [args.split("=", 1)[1] for args in dockerfile("ARG")
                  if args.startswith("BASE_IMAGE=")]
    required = re.fullmatch(r">=(\d+)\.(\d+)", project["requires-python"])
    assert required is not None
    match = re.fullmatch(r"python:(\d+)\.(\d+)-slim", default)
    assert match is not None, default
    assert tuple(map(int, match.groups())) >= tuple(map(int, required.groups()))


def test_the_image_build_script_builds_over_debian_without_network() -> None:
    script = (REPO / "packaging" / "build-image.sh").read_text()
    assert "mmdebstrap" in script and "--isolation chroot" in script
    assert "--no-index --find-links /src/wheels" in script
    assert "check-config /etc/lvsd/lvsd.toml" in script
    assert "config/lvsd.toml /etc/lvsd/lvsd.toml" in dockerfile("COPY")


def test_the_build_context_keeps_what_the_build_needs() -> None:
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    needed = ["pyproject.toml", PYPROJECT["project"]["readme"], "lvsd", "lvsd/__init__.py"]
    for path in needed:
        excluded = [p for p in patterns if fnmatch.fnmatch(path, p.lstrip("/"))]
        assert not excluded, f"{path} is excluded by {excluded}"
    ignored_dirs = {p for p in patterns if "*" not in p}
    assert {".git", ".venv"} <= ignored_dirs


def test_healthcheck_probes_the_default_api_address() -> None:
    (healthcheck,) = dockerfile("HEALTHCHECK")
    url = re.search(r"http://[^'\"]+/healthz", healthcheck)
    assert url is not None, healthcheck
    parts = urlsplit(url.group(0))
    default_listen = config.DaemonSchema.model_fields["listen"].default
    assert f"{parts.hostname}:{parts.port}" == default_listen


def test_documented_run_command_mounts_config_and_state() -> None:
    # The command, with its "\" continuation lines, from the comment at the top.
    found = re.search(r"^#\s+(docker run (?:.*\\\n#)*.*)$", DOCKERFILE, flags=re.MULTILINE)
    assert found, "the Dockerfile documents its run command"
    command = " ".join(found.group(1).replace("\\\n#", " ").split())
    assert command.endswith(" lvsd"), command
    for needed in ("--network host", "--cap-add NET_ADMIN"):
        assert needed in command
    assert f"-v {config.DEFAULT_STATE_DIR}:{config.DEFAULT_STATE_DIR}" in command
    assert "-v /etc/lvsd:/etc/lvsd:ro" in command


def test_unit_is_a_notify_service_reloaded_through_the_control_socket() -> None:
    assert unit_value("Type") == "notify"
    assert unit_value("NotifyAccess") == "main"
    # lvsd ctl reload waits for the daemon's verdict (tests/unit/test_unit_file.py runs it).
    assert shlex.split(unit_values("ExecReload")[-1])[1:] == [
        "ctl", "--socket", str(config.DEFAULT_CONTROL_SOCKET), "reload"]
    assert unit_value("Restart") == "on-failure"
    assert re.fullmatch(r"\d+s", unit_value("WatchdogSec"))


def test_unit_directories_match_the_code_defaults() -> None:
    assert Path("/var/lib") / unit_value("StateDirectory") == config.DEFAULT_STATE_DIR
    # ConfigurationDirectory= would make /etc/lvsd writable despite ProtectSystem=strict.
    assert unit_values("ConfigurationDirectory") == []
    assert " --config /etc/lvsd/" in unit_value("ExecStart")


def test_unit_grants_only_what_lvsd_needs() -> None:
    # CAP_NET_RAW and AF_PACKET: the split-brain probes (lvsd.splitbrain)
    assert unit_value("CapabilityBoundingSet").split() == ["CAP_NET_ADMIN", "CAP_NET_RAW"]
    assert unit_values("AmbientCapabilities") == []
    families = unit_value("RestrictAddressFamilies").split()
    assert sorted(families) == ["AF_INET", "AF_INET6", "AF_NETLINK", "AF_PACKET", "AF_UNIX"]
    assert unit_value("NoNewPrivileges") == "yes"
    assert unit_value("ProtectSystem") == "strict"
    assert "@system-service" in unit_values("SystemCallFilter")


def ipvs_module_dirs() -> list[Path]:
    return sorted(Path("/lib/modules").glob("*/kernel/net/netfilter/ipvs"))


def test_modules_load_lists_only_modules_debian_kernels_ship() -> None:
    listed = [
        line.strip()
        for line in MODULES_LOAD.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert listed[0] == "ip_vs"
    dirs = ipvs_module_dirs()
    if not dirs:
        pytest.fail("no kernel with IPVS modules installed: run tests/vm/run-in-vm.sh --setup")
    for directory in dirs:
        shipped = {path.name.split(".ko")[0] for path in directory.iterdir()}
        missing = [name for name in listed if name not in shipped]
        # systemd-modules-load fails the boot unit on a name it cannot find.
        assert not missing, f"{directory}: {missing}"
