"""The pure core is a leaf: importing it loads no checker and no third-party library, and the
lvsd modules import each other without a cycle."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "lvsd"
PURE_CORE = ("lvsd.model", "lvsd.health", "lvsd.reconcile")

LOADED_BY = """
import json, sys
before = set(sys.modules)
import {module}
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def modules_loaded_by(module: str) -> list[str]:
    """The modules a fresh interpreter loads to import ``module``."""
    result = subprocess.run([sys.executable, "-c", LOADED_BY.format(module=module)],
                            capture_output=True, text=True, timeout=60, check=True)
    loaded: list[str] = json.loads(result.stdout)
    return loaded


def is_standard_library(name: str) -> bool:
    top = name.split(".", maxsplit=1)[0]
    # sysconfig's generated data module is stdlib, though not in stdlib_module_names.
    return top in sys.stdlib_module_names or top.startswith("_sysconfigdata_")


@pytest.mark.parametrize("module", PURE_CORE)
def test_the_pure_core_loads_no_checker(module: str) -> None:
    checkers = [name for name in modules_loaded_by(module) if name.startswith("lvsd.checks")]
    assert checkers == [], f"importing {module} loads {checkers}"


@pytest.mark.parametrize("module", PURE_CORE)
def test_the_pure_core_loads_only_the_standard_library(module: str) -> None:
    foreign = [name for name in modules_loaded_by(module)
               if not is_standard_library(name) and name.split(".", maxsplit=1)[0] != "lvsd"]
    assert foreign == [], f"importing {module} loads third-party modules: {foreign[:20]}"


# --- the import graph -----------------------------------------------------------------------


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_in(node: ast.AST, *, deferred: bool) -> Iterator[ast.Import | ast.ImportFrom]:
    """The imports that run when the module is imported (not under ``if TYPE_CHECKING:``,
    whose ``else:`` does run); with ``deferred``, also those inside functions and classes."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child
        elif isinstance(child, ast.If) and is_type_checking(child.test):
            for statement in child.orelse:
                yield from imports_in(ast.Module(body=[statement], type_ignores=[]),
                                      deferred=deferred)
        elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
            if deferred:  # a class body, unlike a function's, runs at import
                yield from imports_in(child, deferred=deferred)
        else:
            yield from imports_in(child, deferred=deferred)


def imported_lvsd_modules(name: str, *, deferred: bool = False) -> set[str]:
    """The lvsd modules ``name`` imports (``from lvsd.x import y`` names ``lvsd.x.y`` when that
    is a module, else ``lvsd.x``): at module level, or anywhere with ``deferred``."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    tree = ast.parse(path.read_text(), str(path))
    for node in imports_in(tree, deferred=deferred):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
            continue
        base = node.module or ""
        if node.level:
            anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
            base = ".".join([*anchor, *([base] if base else [])])
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            targets.add(submodule if submodule in MODULES else base)
    return {target for target in targets if target in MODULES and target != name}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path ``[a, b, …, a]``, or None."""
    done: set[str] = set()
    stack: list[str] = []
    on_stack: set[str] = set()

    def visit(node: str) -> list[str] | None:
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target in on_stack:
                return [*stack[stack.index(target):], target]
            if target not in done:
                found = visit(target)
                if found:
                    return found
        stack.pop()
        on_stack.discard(node)
        done.add(node)
        return None

    for start in sorted(graph):
        if start not in done:
            found = visit(start)
            if found:
                return found
    return None


def test_the_graph_sees_the_imports_it_should() -> None:
    graph = {name: imported_lvsd_modules(name) for name in MODULES}
    assert "lvsd.model" in graph["lvsd.reconcile"]
    assert "lvsd.errors" in graph["lvsd.cli"]
    assert "lvsd.daemon" not in graph["lvsd.cli"]  # imported inside main()
    assert "lvsd.daemon" in imported_lvsd_modules("lvsd.cli", deferred=True)
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_among_lvsd_modules() -> None:
    graph = {name: imported_lvsd_modules(name) for name in MODULES}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_cycle_hidden_in_a_deferred_import() -> None:
    """An import moved into a function to dodge a cycle is still a cycle in the design."""
    graph = {name: imported_lvsd_modules(name, deferred=True) for name in MODULES}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle (counting imports inside functions): " + " -> ".join(
        cycle or [])


def test_the_daemon_loads_dnspython_only_for_a_dns_check() -> None:
    """dnspython costs seconds of start-up under emulation; a DNS check imports it itself."""
    loaded = modules_loaded_by("lvsd.daemon")
    assert "lvsd.checks.dns" in loaded
    assert [name for name in loaded if name.split(".")[0] == "dns"] == []


# --- what a command line loads --------------------------------------------------------------

COMMAND_LOADS = """
import json, sys
from lvsd.cli import build_parser, main
build_parser().parse_args({argv!r})
parsed = set(sys.modules)
code = main({argv!r})
print(json.dumps({{"parsed": sorted(parsed), "ran": sorted(sys.modules), "code": code}}))
"""
DAEMON_ONLY = ("lvsd.daemon", "lvsd.config", "lvsd.checks", "aiohttp.web", "pydantic",
               "prometheus_client", "structlog")


def command_loads(argv: list[str]) -> dict[str, list[str]]:
    """The modules loaded by importing lvsd.cli and parsing ``argv``, then by running it."""
    result = subprocess.run([sys.executable, "-c", COMMAND_LOADS.format(argv=argv)],
                            capture_output=True, text=True, timeout=60, check=True)
    loaded: dict[str, list[str]] = json.loads(result.stdout)
    return loaded


def under(names: list[str], packages: tuple[str, ...]) -> list[str]:
    return [name for name in names
            if any(name == package or name.startswith(package + ".") for package in packages)]


@pytest.mark.parametrize("command", [["status"], ["events"], ["drain", "web", "10.0.0.1"],
                                     ["reload"]])
def test_lvsd_ctl_loads_nothing_of_the_daemon(command: list[str], tmp_path: Path) -> None:
    """Every ``lvsd ctl`` a test or an operator runs pays its imports: minutes in the VM."""
    loaded = command_loads(["ctl", "--socket", str(tmp_path / "missing.sock"), *command])
    assert loaded["code"] == 1  # no daemon: it ran as far as connecting
    assert under(loaded["parsed"], DAEMON_ONLY) == []
    assert under(loaded["ran"], DAEMON_ONLY) == []


def test_the_parser_loads_only_the_cli_modules() -> None:
    """``lvsd --version``, help and every subcommand's parsing need none of what they run."""
    loaded = modules_loaded_by("lvsd.cli")
    lvsd_modules = {name for name in loaded if name.split(".")[0] == "lvsd"}
    cli_modules = {name for name in MODULES if name.startswith("lvsd.cli")}
    assert lvsd_modules - cli_modules == {"lvsd", "lvsd.errors"}
    assert [name for name in loaded if not is_standard_library(name)
            and name.split(".")[0] != "lvsd"] == []


UNUSED_SECTIONS = """
import json
from lvsd import config
config.loads('[daemon]\\nallow_empty = true\\n')
print(json.dumps({{name: getattr(config, name).__pydantic_complete__ for name in {names!r}}}))
"""


def test_a_config_builds_only_the_schemas_of_its_sections() -> None:
    """pydantic builds a schema in ms (tenths of a second in the VM): absent sections cost none."""
    names = ["DaemonSchema", "TimeoutsSchema", "SyncSchema", "RoleSchema", "AnnounceSchema",
             "AnnouncedVipSchema", "ServiceSchema"]
    result = subprocess.run([sys.executable, "-c", UNUSED_SECTIONS.format(names=names)],
                            capture_output=True, text=True, timeout=60, check=True)
    built = json.loads(result.stdout)
    assert built == {name: name == "DaemonSchema" for name in names}
