"""A config's owner state built to the side, then put in use in one step.

At 10,000 servers each owner's rebuild for a new config (drains, probe marks, the health book,
agents, slow-start ramps) is tens of ms of Python: built in slices on the loop
(``lvsd.pacing``), probes and the API keep running between them, and nothing in use changes
until ``commit``, which does no await. A reload that fails before it leaves the old config
whole; reports taken in meanwhile carry over (``HealthBook.commit``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from lvsd import logs
from lvsd.checks.drpath import director_problems
from lvsd.drains import Drains, unconfigured_steps
from lvsd.healthbook import serving_in
from lvsd.intake import ProbeIntake, StagedProbes
from lvsd.marks import ProbeMarks, marks_in_use
from lvsd.model import Dest, ServiceKey, Table
from lvsd.pacing import Pacer, paced
from lvsd.probe import Runner
from lvsd.reconcile import dr_checked_steps
from lvsd.spec import Config, ServerRef
from lvsd.statekeeper import StateKeeper
from lvsd.steering import Steering

# Its lines keep the daemon's logger name, as before the move: log filters rely on it.
log = logs.get_logger("lvsd.daemon")


@dataclass(frozen=True, slots=True)
class Staged:
    """What a config needs besides itself, built and not in use yet (``Stager.commit``)."""

    dr_refs: list[ServerRef]  # the servers with a DR-path check
    marks: dict[ServerRef, int]
    drains: list[tuple[ServiceKey, Dest]]  # to start
    probes: StagedProbes


class Stager:
    def __init__(self, marks: ProbeMarks, drains: Drains, intake: ProbeIntake,
                 keeper: StateKeeper, *, runner: Runner, steering: Steering) -> None:
        self._marks = marks
        self._drains = drains
        self._intake = intake
        self._keeper = keeper
        self._runner = runner
        self._steering = steering

    async def stage(self, config: Config, actual: Table, managed: Collection[ServiceKey],
                    pacer: Pacer | None = None) -> Staged:
        """Drains, marks and probes for ``config`` over the kernel table ``actual``, in
        slices; nothing in use changes. ``managed``: the services whose servers that the
        config does not name drain. One ``pacer`` across the steps: the loop gets its turn
        every slice of them all."""
        pacer = pacer or Pacer()
        dr_refs = await paced(dr_checked_steps(config), pacer)
        marks = self._marks.choose(dr_refs, base=config.daemon.dr_check_mark_base,
                                   taken=marks_in_use(config, actual, self._keeper.state.owned))
        drains = await paced(unconfigured_steps(config, actual, managed), pacer)
        probes = await self._intake.stage(config, marks, serving_in(actual), pacer)
        await asyncio.sleep(0)  # the commit that follows gets a slice of its own
        return Staged(dr_refs, marks, drains, probes)

    def commit(self, config: Config, staged: Staged) -> None:
        """Put ``staged`` in use, at once: probes and marks that did not change keep their
        state."""
        self._drains.start_all(staged.drains, config.daemon.drain_timeout,
                               now=time.monotonic(), wall=time.time())
        self._marks.adopt(staged.marks, base=config.daemon.dr_check_mark_base)
        self._runner.update(self._intake.commit(staged.probes))
        self._steering.keep_configured(config)

    async def stored(self, staged: Staged) -> None:
        """After ``commit``: the state file (marks, overrides) written, the DR path checked."""
        await self._keeper.store_in_thread()
        await warn_about_dr_path(staged.dr_refs)


async def warn_about_dr_path(dr_refs: Iterable[ServerRef]) -> None:
    """DR-path replies come back from the VIP: say so if this director would drop them.
    ``dr_refs``: the servers with a DR-path check (``dr_checked``)."""
    pairs = {(server.address, service.address) for service, server in dr_refs}
    for address, vip in sorted(pairs, key=str):
        for problem in await director_problems(address, vip):
            log.warning("dr_path_director_problem", server=str(address), problem=problem)
