"""BIRD 2 on the pair lab (ECMP mode), and the router's route as rtnetlink tells it.

``start_bird(lab)`` runs the shipped configs (config/bird/director.conf on d1 and d2,
router.conf on the router), with only the director's own address substituted and the log sent
to a file: the configs tested are the ones operators copy.

``RouteMonitor`` runs ``ip -tshort -oneline monitor route`` in a namespace: iproute2 stamps
each rtnetlink message as it arrives, so times come from the route events themselves, not from
a test's polling. ``next_hops_at`` replays them into the VIP's next hops over time.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from tests.integration.pairlab import D1, D2, VIP, Director, PairLab

BIRD_CONFIGS = Path(__file__).resolve().parents[2] / "config" / "bird"
_STAMP = re.compile(r"^\[(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)\] (.*)$")


@dataclass
class Bird:
    name: str
    process: subprocess.Popen[bytes]
    control: Path
    log: Path

    def show(self, *command: str, ns: str) -> str:
        result = subprocess.run(["ip", "netns", "exec", ns, "birdc", "-s", str(self.control),
                                 *command], capture_output=True, text=True, timeout=20,
                                check=False)
        return result.stdout + result.stderr

    def report(self, ns: str) -> str:
        """What to look at when the routes do not come: the process, BGP and BFD, its log."""
        state = "running" if self.process.poll() is None else f"exited {self.process.poll()}"
        log = self.log.read_text(errors="replace")[-1500:] if self.log.exists() else "no log"
        return (f"--- bird {self.name} ({state})\n{self.show('show', 'protocols', ns=ns)}"
                f"{self.show('show', 'bfd', 'sessions', ns=ns)}{log}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def director_bird_config(director: Director) -> str:
    text = (BIRD_CONFIGS / "director.conf").read_text()
    return text.replace("192.0.2.11", director.address)


def _start(ns: str, name: str, config: str, base: Path) -> Bird:
    base.mkdir(parents=True, exist_ok=True)
    conf, control, log = base / f"{name}.conf", base / f"{name}.ctl", base / f"{name}.log"
    conf.write_text(config.replace("log syslog all;", f'log "{log}" all;'))
    with (base / f"{name}.out").open("wb") as out:
        process = subprocess.Popen(
            ["ip", "netns", "exec", ns, "bird", "-f", "-c", str(conf), "-s", str(control)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    return Bird(name, process, control, log)


def start_bird(lab: PairLab) -> dict[str, Bird]:
    base = lab.dir / "bird"
    birds = {"router": _start(lab.router, "router", (BIRD_CONFIGS / "router.conf").read_text(),
                              base)}
    for director in lab.directors:
        birds[director.label] = _start(director.ns, director.label,
                                       director_bird_config(director), base)
    return birds


@dataclass(frozen=True)
class RouteEvent:
    at: float  # Unix time, as iproute2 stamped the message
    line: str

    @property
    def deleted(self) -> bool:
        return self.line.startswith("Deleted ")

    @property
    def destination(self) -> str:
        return self.line.removeprefix("Deleted ").split(" ", 1)[0]

    @property
    def next_hops(self) -> frozenset[str]:
        return frozenset() if self.deleted else frozenset(re.findall(r"via (\S+)", self.line))


@dataclass
class RouteMonitor:
    ns: str
    path: Path
    process: subprocess.Popen[bytes] | None = None
    started_at: float = field(default_factory=time.time)

    def start(self) -> RouteMonitor:
        out = self.path.open("ab")
        self.process = subprocess.Popen(["ip", "netns", "exec", self.ns, "ip", "-tshort",
                                         "-oneline", "monitor", "route"],
                                        stdin=subprocess.DEVNULL, stdout=out,
                                        stderr=subprocess.STDOUT)
        out.close()
        return self

    def events(self, destination: str = VIP, table: str | None = None) -> list[RouteEvent]:
        found = []
        for raw in self.path.read_text(errors="replace").splitlines():
            match = _STAMP.match(raw)
            if match is None:
                continue
            event = RouteEvent(datetime.fromisoformat(match.group(1)).timestamp(),
                               match.group(2))
            in_table = f" table {table} " in f"{event.line} " if table else \
                " table " not in event.line
            if event.destination == destination and in_table:
                found.append(event)
        return found

    def next_hop_changes(self, next_hop: str, since: float = 0.0) -> list[tuple[float, bool]]:
        """When ``next_hop`` joined (True) or left (False) the VIP's route, from ``since``."""
        changes: list[tuple[float, bool]] = []
        present = False
        for event in self.events():
            now = next_hop in event.next_hops
            if now != present:
                present = now
                if event.at >= since:
                    changes.append((event.at, now))
        return changes

    def left_at(self, next_hop: str, since: float) -> float | None:
        """When ``next_hop`` first left the VIP's route after ``since``."""
        return next((at for at, joined in self.next_hop_changes(next_hop, since)
                     if not joined), None)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


def birds_report(lab: PairLab, birds: dict[str, Bird]) -> str:
    where = {"router": str(lab.router), **{d.label: str(d.ns) for d in lab.directors}}
    tables = "".join(
        f"--- {d.label} table 250: "
        f"{d.ns.run('ip', 'route', 'show', 'table', '250', check=False).stdout}"
        for d in lab.directors)
    outputs = "".join(f"--- {path.name}: {path.read_text(errors='replace')[-500:]}"
                      for path in sorted((lab.dir / "bird").glob("*.out")))
    return "\n".join(bird.report(where[name]) for name, bird in birds.items()) + tables + outputs


def route_next_hops(ns: str, table: str = "main") -> frozenset[str]:
    result = subprocess.run(["ip", "netns", "exec", ns, "ip", "-o", "route", "show", "table",
                             table, f"{VIP}/32"], capture_output=True, text=True, timeout=10,
                            check=False)
    return frozenset(re.findall(r"via (\S+)", result.stdout))


async def wait_next_hops(ns: str, expected: frozenset[str], timeout: float,
                         what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while (found := route_next_hops(ns)) != expected:
        if time.monotonic() > deadline:
            raise AssertionError(f"the router's route to {VIP} goes via {sorted(found)}, not "
                                 f"{sorted(expected)}, after {timeout} s {what}")
        await asyncio.sleep(0.1)


BOTH = frozenset({D1, D2})
