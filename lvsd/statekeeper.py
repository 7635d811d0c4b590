"""What lvsd remembers, as last stored in the state file (``lvsd.statefile``): the services it
owns, the probe marks, the operator overrides and the consistent-hash servers' last weights.
A pass tells it what it did; it stores only when that changed what is remembered.
"""

from __future__ import annotations

from collections.abc import Collection

from lvsd.consistent import Hashing, hashing_of, last_weights_after
from lvsd.marks import ProbeMarks
from lvsd.model import Op, ServiceKey
from lvsd.overrides import Overrides
from lvsd.overrides import encode as encode_overrides
from lvsd.reconcile import Plan, owned_after
from lvsd.spec import Config, ServerRef
from lvsd.statefile import DaemonState, StateFile


class StateKeeper:
    def __init__(self, state_file: StateFile, overrides: Overrides, marks: ProbeMarks) -> None:
        self.file = state_file
        self.state = DaemonState()  # as last stored
        self._overrides = overrides
        self._marks = marks
        self._hashed: tuple[Config | None, Hashing] = (None, Hashing())

    def load(self) -> DaemonState:
        self.state = self.file.load()
        return self.state

    def store(self, *, owned: frozenset[ServiceKey] | None = None,
              last_weights: dict[ServerRef, int] | None = None) -> bool:
        """Store the marks and overrides as they are now, with ``owned`` and ``last_weights``
        if given; False if the file could not be written."""
        return self.file.store(self._remember(owned, last_weights))

    async def store_in_thread(self, *, owned: frozenset[ServiceKey] | None = None,
                              last_weights: dict[ServerRef, int] | None = None) -> bool:
        """``store``, the file written by a worker thread (``StateFile.store_in_thread``)."""
        return await self.file.store_in_thread(self._remember(owned, last_weights))

    def _remember(self, owned: frozenset[ServiceKey] | None,
                  last_weights: dict[ServerRef, int] | None) -> DaemonState:
        owned = self.state.owned if owned is None else owned
        last = self.state.last_weights if last_weights is None else last_weights
        self.state = DaemonState(owned, dict(self._marks.marks), encode_overrides(self._overrides),
                                 last)
        return self.state

    def hashing(self, config: Config) -> Hashing:
        """The consistent-hash services' configured weights (rebuilt with the config) and the
        last weights lvsd remembers."""
        if self._hashed[0] is not config:
            self._hashed = (config, hashing_of(config, {}))
        return Hashing(self._hashed[1].weights, self.state.last_weights)

    async def after_pass(self, done: Plan, failed: Collection[Op], config: Config) -> None:
        """Remember what a pass made lvsd own and the weights it left; ``failed``: its
        refused ops."""
        owned = owned_after(self.state.owned, done, failed)
        hashing = self.hashing(config)
        last = last_weights_after(self.state.last_weights, done.seen, done.ops, failed,
                                  hashing.weights,
                                  hashing.refs if done.wanted is not None else None)
        if owned != self.state.owned or last != self.state.last_weights:
            await self.store_in_thread(owned=frozenset(owned), last_weights=last)
