"""What the running kernel was built with, read from its config file (for the mh table size).

Debian and most distributions install ``/boot/config-<release>``; kernels built with
``CONFIG_IKCONFIG_PROC`` expose ``/proc/config.gz``. Neither is required: the Kconfig default
is assumed when both are missing, and said so.
"""

from __future__ import annotations

import gzip
import os
import re
from dataclasses import dataclass
from pathlib import Path

from lvsd.consistent import DEFAULT_TAB_INDEX, table_size

_MH_TAB_INDEX = re.compile(rb"^CONFIG_IP_VS_MH_TAB_INDEX=(\d+)$", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class MhTableSize:
    size: int
    source: str  # the file it was read from, or why the default was assumed


def mh_table_size(root: Path = Path("/")) -> MhTableSize:
    release = os.uname().release
    candidates = (root / "boot" / f"config-{release}", root / "proc" / "config.gz")
    for path in candidates:
        try:
            data = path.read_bytes()
            if path.suffix == ".gz":
                data = gzip.decompress(data)
        except (OSError, EOFError, gzip.BadGzipFile):
            continue
        found = _MH_TAB_INDEX.search(data)
        if found is not None and (size := table_size(int(found.group(1)))) is not None:
            return MhTableSize(size, str(path))
    default = table_size(DEFAULT_TAB_INDEX)
    assert default is not None
    return MhTableSize(default, f"assumed: the Kconfig default (no {candidates[0]} or "
                                f"{candidates[1]} names CONFIG_IP_VS_MH_TAB_INDEX)")
