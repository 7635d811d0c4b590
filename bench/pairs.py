"""Director pairs and fleets (issue 12), in the VM: flows lost per failover, withdraw, flows kept.

    tests/vm/run-in-vm.sh .venv/bin/python bench/pairs.py [--rounds 5] [--flows 50]
        [--only failover|hashing|withdraw] [--smoke] [--json results.json]
    .venv/bin/python bench/report.py --only pairs     # the same, through the report

Three labs from tests/integration (pairlab.py, birdlab.py), each with lvsd on its directors
and the configs the kernel tests use:

- ``failover``: keepalived -P pairs d1 and d2, rr, lvsd's ``[sync] mode`` "both" then "off";
  ``--flows`` long-lived TCP flows (a numbered echo every 200 ms each) through the master,
  which dies silently (every frame dropped at its bridge port) for 3 s of echoes: flows lost
  per failover. The flows are judged while d1 is still dead, so a stalled flow counts as lost.
- ``hashing``: an ECMP pair (the router's L4-hashed multipath route), ``sloppy_tcp=1``, no sync,
  lvsd's ``consistent_hash`` (mh) then rr; 40 flows spread over both, d1 dies for 10 echoes of
  every flow and returns: flows lost per death, and of the flows d1 carried, how many the
  survivor sent to the same real server (from both directors' connection tables).
- ``withdraw``: BIRD 2 on the router (multipath, BFD) and on both directors (the shipped
  configs), lvsd on d1 announcing the VIP while its service meets quorum: d1's quorum taken
  away (a file check) until its next hop leaves the router's route; p50/max over the rounds,
  from the route events' own timestamps (``ip -ts monitor route``), split into lvsd's withdraw
  (its route leaves table 250 on d1) and BGP's propagation to the router.

Every load loop is bounded (``--rounds``); traffic stays in the lab's namespaces (TEST-NET).
Needs root and an IPVS kernel: run it in the VM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.integration.birdlab import BOTH, RouteMonitor, start_bird, wait_next_hops  # noqa: E402
from tests.integration.daemon_support import LvsdProcess, kernel_table  # noqa: E402
from tests.integration.pairlab import (  # noqa: E402
    D1,
    D2,
    ECHO_PORT,
    VIP,
    FlowHarness,
    PairLab,
    ecmp_director_death,
    pair_lab,
)
from tests.integration.test_announce_kernel import TABLE  # noqa: E402
from tests.integration.test_announce_kernel import director_config as announce_config  # noqa: E402
from tests.integration.test_pair_failover import config as failover_config  # noqa: E402
from tests.integration.test_pair_fleet import lvsd_config as fleet_config  # noqa: E402

START_TIMEOUT = 300.0  # two daemons starting at once in a loaded emulator
HASHING_FLOWS = 40
SYNC_MODES = ("both", "off")
WITHDRAW_SETTLE = 2.0  # s after the (re-)announce before the quorum is taken away again


def progress(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@asynccontextmanager
async def daemons(lab: PairLab, config: str, *directors: str) -> AsyncIterator[
        dict[str, LvsdProcess]]:
    """lvsd with ``config`` on the lab's directors labelled ``directors``, started at once."""
    running = {d.label: LvsdProcess(d.ns, "") for d in lab.directors if d.label in directors}
    for process in running.values():
        process.write_config(config)
    try:
        await asyncio.gather(*(p.start(timeout=START_TIMEOUT) for p in running.values()))
        yield running
    finally:
        for process in running.values():
            await process.stop()
            process.cleanup()


async def reconfigure(running: dict[str, LvsdProcess], config: str,
                      ready: Any, what: str) -> None:
    """SIGHUP every daemon with ``config`` and wait until ``ready(process)`` holds for each."""
    for process in running.values():
        process.write_config(config)
        process.send(signal.SIGHUP)
    for process in running.values():
        await process.wait_for(lambda p=process: ready(p), 60, what, poll=0.5)


# --- failover: a VRRP pair, sync on and off ---------------------------------------------------


def sync_daemons(lab: PairLab) -> list[list[str]]:
    return [[line.split()[0] for line in d.ns.run("ipvsadm", "-L", "--daemon").stdout.splitlines()
             if line.strip()] for d in lab.directors]


async def failover(rounds: int, flows: int) -> dict[str, Any]:
    lost: dict[str, list[int]] = {}
    stalls: dict[str, list[float]] = {}
    with pair_lab() as lab:
        async with daemons(lab, failover_config("both"), "d1", "d2") as running:
            lab.sync_sysctls()  # ip_vs is loaded now (lvsd opened the namespace's table)
            lab.start_keepalived()
            await lab.wait_master(lab.d1)
            for mode in SYNC_MODES:
                want = [["master", "backup"]] * 2 if mode == "both" else [[], []]
                await reconfigure(running, failover_config(mode),
                                  lambda _p, w=want: sync_daemons(lab) == w, f"sync {mode}")
                lost[mode], stalls[mode] = [], []
                for round_ in range(rounds):
                    harness = FlowHarness(lab, flows)
                    await harness.open()
                    await harness.wait_echoed(12, 15)  # > 2 s: every sync buffer went out
                    lab.die_silently(lab.d1)
                    try:
                        report = await harness.finish(run_for=3.0)
                    finally:
                        lab.revive(lab.d1)
                    lost[mode].append(len(report.lost))
                    stalls[mode].append(round(report.longest_stall, 2))
                    progress(f"failover, sync {mode}, round {round_ + 1}: {report}")
                    await lab.wait_master(lab.d1)
                    # d1 never stopped being master in its own view while its frames were
                    # dropped, so it sends no gratuitous ARP on its return and the router's
                    # entry for the VIP still names d2 (which gave the VIP up): ask again.
                    lab.router.ip("neigh", "flush", "to", VIP)
    for mode, counts in lost.items():
        print(f"failover, sync {mode}: flows lost per failover {counts} of {flows} "
              f"(mean {statistics.fmean(counts):.1f}); longest stall per failover "
              f"{stalls[mode]} s")
    return {"flows": flows, "lost": lost, "longest_stall": stalls}


# --- hashing: an ECMP pair, mh and rr -------------------------------------------------------


def scheduler_of(process: LvsdProcess) -> str:
    (service,) = [vs for vs in kernel_table(process.director).services
                  if vs.key.port == ECHO_PORT]
    return service.service.scheduler


async def hashing(rounds: int) -> dict[str, Any]:
    figures: dict[str, dict[str, list[int]]] = {}
    with pair_lab(mode="ecmp") as lab:
        for director in lab.directors:
            director.ns.run("ipvsadm", "-Ln")  # the namespace's IPVS sysctls exist from here
        lab.director_sysctls(sloppy_tcp="1")
        async with daemons(lab, fleet_config(), "d1", "d2") as running:
            for scheduler, consistent in (("mh", True), ("rr", False)):
                await reconfigure(running, fleet_config(consistent=consistent),
                                  lambda p, s=scheduler: scheduler_of(p) == s, scheduler)
                rows = figures[scheduler] = {"through_d1": [], "kept_server": [], "lost": []}
                for round_ in range(rounds):
                    death = await ecmp_director_death(lab, HASHING_FLOWS, returns=True)
                    progress(f"hashing, {scheduler}, round {round_ + 1}: {death}")
                    rows["through_d1"].append(len(death.through_dead))
                    rows["kept_server"].append(len(death.same_server))
                    rows["lost"].append(len(death.report.lost))
    for scheduler, rows in figures.items():
        through, kept = sum(rows["through_d1"]), sum(rows["kept_server"])
        print(f"hashing, {scheduler}: flows lost per director death {rows['lost']} of "
              f"{HASHING_FLOWS}; of the flows d1 carried, the survivor kept the real server of "
              f"{kept}/{through} ({100 * kept / max(through, 1):.0f}%)")
    return {"flows": HASHING_FLOWS, **figures}


# --- withdraw: BIRD, quorum lost on d1 ------------------------------------------------------


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def withdraw(rounds: int) -> dict[str, Any]:
    totals: list[float] = []
    by_lvsd: list[float] = []
    with pair_lab(mode="ecmp", static_ecmp=False) as lab:
        router_routes = RouteMonitor(lab.router, lab.dir / "router-routes.txt").start()
        d1_routes = RouteMonitor(lab.d1.ns, lab.dir / "d1-routes.txt").start()
        down = lab.dir / "d1.down"
        lab.d2.ns.run("ip", "route", "add", f"{VIP}/32", "dev", "lo", "table", TABLE,
                      "proto", "250")  # d2 announces by hand, as in the kernel test
        birds = start_bird(lab)
        try:
            async with daemons(lab, announce_config(down), "d1"):
                await wait_next_hops(lab.router, BOTH, 60, "after lvsd started on d1")
                for round_ in range(rounds):
                    await asyncio.sleep(WITHDRAW_SETTLE)
                    lost_at = time.time()
                    down.touch()
                    await wait_next_hops(lab.router, frozenset({D2}), 10, "quorum lost")
                    left = router_routes.left_at(D1, lost_at)
                    withdrawn = next(e.at for e in d1_routes.events(table=TABLE)
                                     if e.deleted and e.at >= lost_at)
                    assert left is not None
                    totals.append(left - lost_at)
                    by_lvsd.append(withdrawn - lost_at)
                    progress(f"withdraw, round {round_ + 1}: lvsd {by_lvsd[-1]:.3f} s, "
                             f"router {totals[-1]:.3f} s")
                    down.unlink()
                    try:
                        await wait_next_hops(lab.router, BOTH, 60, "quorum back")
                    except AssertionError as exc:  # BFD sessions lost on a loaded emulator
                        print(f"withdraw: stopped after {round_ + 1} rounds: {exc}")
                        break
        finally:
            for bird in birds.values():
                bird.stop()
            router_routes.stop()
            d1_routes.stop()
    figures = {"rounds": len(totals),
               "router_p50": statistics.median(totals), "router_max": max(totals),
               "lvsd_p50": statistics.median(by_lvsd), "lvsd_max": max(by_lvsd),
               "router_p90": percentile(totals, 0.9)}
    print(f"withdraw, quorum lost on d1 -> its next hop leaves the router's route: p50 "
          f"{figures['router_p50']:.3f} s, max {figures['router_max']:.3f} s over {len(totals)} "
          f"rounds (lvsd's own withdraw p50 {figures['lvsd_p50']:.3f} s, max "
          f"{figures['lvsd_max']:.3f} s)")
    return figures


PARTS = ("failover", "hashing", "withdraw")


async def run(parts: list[str], rounds: int, flows: int) -> dict[str, Any]:
    """Every part asked for; one that fails is reported (and fails the run) without losing
    the figures of the others."""
    figures: dict[str, Any] = {}
    for part in parts:
        began = time.monotonic()
        try:
            match part:
                case "failover":
                    figures[part] = await failover(rounds, flows)
                case "hashing":
                    figures[part] = await hashing(rounds)
                case "withdraw":
                    figures[part] = await withdraw(rounds * 2)
                case _:
                    raise ValueError(f"no part {part!r}")
        except Exception as exc:  # reported below, and the run exits 1
            figures[part] = {"error": f"{type(exc).__name__}: {exc}"}
            print(f"{part}: failed: {figures[part]['error']}")
        progress(f"{part}: {time.monotonic() - began:.0f} s")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--only", choices=PARTS, action="append")
    parser.add_argument("--rounds", type=int, default=5,
                        help="failovers and deaths per setting (withdraw: twice as many)")
    parser.add_argument("--flows", type=int, default=50, help="failover part's flows")
    parser.add_argument("--smoke", action="store_true", help="one round each, 10 flows")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if os.geteuid() != 0 or not os.path.exists("/proc/net/ip_vs"):
        sys.exit("bench/pairs.py needs root and an IPVS kernel: run it in the VM "
                 "(tests/vm/run-in-vm.sh)")
    rounds, flows = (1, 10) if args.smoke else (args.rounds, args.flows)
    figures = asyncio.run(run(args.only or list(PARTS), rounds, flows))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    sys.exit(1 if any("error" in part for part in figures.values()) else 0)


if __name__ == "__main__":
    main()
