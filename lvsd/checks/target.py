"""Where a probe goes: the contract between the checkers, the DR path and the runner.

A leaf module (it imports only the model), so ``lvsd.checks.base`` and ``lvsd.checks.drpath``
both depend on it instead of on each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lvsd import model
from lvsd.model import Address, format_endpoint


@dataclass(frozen=True, slots=True)
class ProbeTarget:
    """Where a probe goes, and the service context some checks report (exec, file).

    ``address``/``port`` are what the probe connects to; ``mark`` (SO_MARK) and ``source`` (the
    bound source address) are set for the DR path (see ``lvsd.checks.drpath``).
    """

    address: Address
    port: int
    rs_address: Address | None = None
    rs_port: int = 0
    vip: Address | None = None
    vport: int = 0
    protocol: model.Protocol | None = None
    mark: int = 0
    source: Address | None = None
    host: str = field(init=False, repr=False, compare=False)  # str(address), made once

    def __post_init__(self) -> None:
        object.__setattr__(self, "host", str(self.address))

    def __str__(self) -> str:
        text = format_endpoint(self.address, self.port)
        if self.mark:
            text += f" mark {self.mark:#x}"
        if self.source is not None:
            text += f" from {self.source}"
        return text
