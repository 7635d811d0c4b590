"""What ``lvsd run``, ``lvsd ctl`` and ``lvsd --version`` cost to start: their imports.

    .venv/bin/python bench/imports.py [--runs 5] [--top 15]
    bash tests/vm/run-in-vm.sh .venv/bin/python bench/imports.py --runs 1

Each command runs as an operator types it, in a fresh interpreter, as often as ``--runs`` says;
the figures are the best run's:

- wall: from the process start to its exit (``python -c pass`` is printed beside it);
- under ``python -X importtime``: how many modules it loads, their self time summed, lvsd's own
  modules' share, the packages that cost most and the slowest modules.

It says first how many of lvsd's modules have no up-to-date bytecode (``__pycache__``), which
every start then compiles anew: with ``PYTHONDONTWRITEBYTECODE=1`` nothing writes it for an
editable checkout but ``python -m compileall lvsd`` (tests/vm/run-in-vm.sh runs that).

``lvsd run`` gets a config of one service with an HTTP check on a state directory of its own,
and an API address the benchmark holds: it loads everything it needs to start, then exits 2
at binding its API, before it touches the kernel (safe where IPVS is there, as in the VM).
``lvsd ctl status`` asks a socket nobody listens on: it loads what it would to ask a daemon,
then exits 1.
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import re
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

PYTHON = sys.executable
PACKAGE = Path(__file__).resolve().parent.parent / "lvsd"
LIMIT = 300.0  # seconds for one command
IMPORT_LINE = re.compile(r"import time:\s+(\d+) \|\s+(\d+) \|\s*(\S+)")
CONFIG = """[daemon]
state_dir = "{state}"
listen = "127.0.0.1:{port}"
control_socket = "{state}/lvsd.sock"

[[services]]
name = "web"
address = "192.0.2.10"
port = 80
check = {{ type = "http", path = "/" }}

[[services.real_servers]]
address = "192.0.2.11"
port = 80
"""


@dataclass
class Imports:
    wall: float  # seconds
    modules: dict[str, float]  # name: self seconds

    def total(self, prefix: str = "") -> float:
        return sum(s for name, s in self.modules.items() if name.split(".")[0].startswith(prefix))


def run_once(argv: list[str], *, importtime: bool) -> Imports:
    flags = ["-X", "importtime"] if importtime else []
    started = time.perf_counter()
    result = subprocess.run([PYTHON, *flags, *argv], capture_output=True, text=True,
                            timeout=LIMIT, check=False)
    wall = time.perf_counter() - started
    modules: dict[str, float] = {}
    for line in result.stderr.splitlines():
        match = IMPORT_LINE.match(line)
        if match:
            modules[match[3]] = int(match[1]) / 1e6
    return Imports(wall, modules)


def best(argv: list[str], runs: int) -> tuple[float, Imports]:
    """The least wall time of ``runs`` plain runs, and the least-total -X importtime run."""
    wall = min(run_once(argv, importtime=False).wall for _ in range(runs))
    timed = min((run_once(argv, importtime=True) for _ in range(runs)),
                key=lambda imports: imports.total())
    return wall, timed


def report(name: str, wall: float, baseline: float, imports: Imports, top: int) -> None:
    packages: collections.defaultdict[str, float] = collections.defaultdict(float)
    for module, seconds in imports.modules.items():
        packages[module.split(".")[0]] += seconds
    print(f"{name}: wall {wall * 1000:.0f} ms (python -c pass {baseline * 1000:.0f} ms), "
          f"{len(imports.modules)} modules, import self time {imports.total() * 1000:.0f} ms, "
          f"lvsd's own {imports.total('lvsd') * 1000:.0f} ms")
    costliest = sorted(packages.items(), key=lambda item: -item[1])[:top]
    print("  packages: " + ", ".join(f"{package} {seconds * 1000:.0f}"
                                     for package, seconds in costliest))
    slowest = sorted(imports.modules.items(), key=lambda item: -item[1])[:top]
    print("  modules: " + ", ".join(f"{module} {seconds * 1000:.1f}"
                                    for module, seconds in slowest))


def uncompiled(package: Path) -> tuple[int, int]:
    """(modules whose .pyc is missing or older than their source, modules) under ``package``."""
    sources = sorted(package.rglob("*.py"))
    stale = 0
    for source in sources:
        cached = Path(importlib.util.cache_from_source(str(source)))
        if not cached.exists() or cached.stat().st_mtime < source.stat().st_mtime:
            stale += 1
    return stale, len(sources)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs of each command (best kept)")
    parser.add_argument("--top", type=int, default=15, help="packages and modules listed")
    args = parser.parse_args()
    stale, modules = uncompiled(PACKAGE)
    print(f"lvsd modules without up-to-date bytecode: {stale} of {modules}")
    with (tempfile.TemporaryDirectory(prefix="lvsd-imports-") as workdir,
          socket.socket() as taken):
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        state = Path(workdir)
        config = state / "lvsd.toml"
        config.write_text(CONFIG.format(state=state, port=taken.getsockname()[1]))
        commands = {
            "lvsd --version": ["-m", "lvsd", "--version"],
            "lvsd ctl status": ["-m", "lvsd", "ctl", "--socket", str(state / "nobody.sock"),
                                "status"],
            "lvsd check-config": ["-m", "lvsd", "check-config", str(config)],
            "lvsd run": ["-m", "lvsd", "run", "--config", str(config)],
        }
        baseline = min(run_once(["-c", "pass"], importtime=False).wall
                       for _ in range(args.runs))
        for name, argv in commands.items():
            wall, imports = best(argv, args.runs)
            report(name, wall, baseline, imports, args.top)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
