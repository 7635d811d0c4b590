"""`lvsd run` raises its soft limit on open files to the hard one: every probe in flight
holds a socket, and a shell's soft limit (often 1,024) is far below the default
``max_probes_in_flight`` (10,000)."""

from __future__ import annotations

import subprocess
import sys
import textwrap


def test_the_soft_limit_on_open_files_goes_up_to_the_hard_one() -> None:
    script = textwrap.dedent("""
        import resource
        from lvsd.cli import raise_open_files_limit
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        raise_open_files_limit()
        print(resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard), hard > 256)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, check=True)
    assert done.stdout.split() == ["True", "True"], done.stderr
