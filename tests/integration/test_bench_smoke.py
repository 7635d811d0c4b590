"""The VM-side table benchmark keeps running: bench/table.py (beside ipvsadm) at smoke size exits
0 and prints its figures. (bench/peers.py, beside keepalived and node_exporter, and
bench/pairs.py, three director-pair labs with lvsd on each director, take minutes even at smoke
size; they are run by hand: `bench/report.py --smoke --only peers pairs`.)

A benchmark is a program, not a timed test: nothing here judges a figure, only that each part
ran to the end and measured something (CI would otherwise let the benchmark code rot).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_bench(*argv: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([sys.executable, *argv], cwd=REPO, capture_output=True, text=True,
                          timeout=600, check=False)
    assert done.returncode == 0, (f"{argv[0]} exited {done.returncode}:\n{done.stdout}\n"
                                  f"{done.stderr}")
    return done


def test_the_table_benchmark_runs_beside_ipvsadm(ipvs_kernel: None, tmp_path: Path) -> None:
    results = tmp_path / "table.json"
    done = run_bench("bench/table.py", "--quick", "--runs", "1", "--flips", "1", "--json",
                     str(results))
    assert "P4: cold program" in done.stdout and "P5: no-op full reconcile" in done.stdout
    medians = json.loads(results.read_text())["medians"]
    assert any(name.endswith(" ipvsadm-restore") for name in medians)
    assert all(value > 0 for value in medians.values())
