"""Every benchmark in one command: runs the parts, writes BENCHMARKS.md and bench/plots/*.png.

    .venv/bin/python bench/report.py                  # everything (long: an hour or more)
    .venv/bin/python bench/report.py --only metrics   # one part; the report keeps the others'
    .venv/bin/python bench/report.py --smoke          # every part at tiny sizes (CI)
    .venv/bin/python bench/report.py --report-only    # rewrite the report from saved results

Parts on this host: ``probes`` (bench/probes.py: P1, P3), ``metrics`` (bench/metrics.py: P6,
cost against table size), ``daemon`` (bench/daemon.py as root: P2 at scale, P7, reload),
``start`` (bench/start.py as root: P8 on the host, start to ready at 10,000 servers).
Parts in one VM boot (tests/vm/run-in-vm.sh), side by side with the peers: ``peers``
(bench/peers.py: P9, P8, P2 against keepalived; P6 against node_exporter) and ``table``
(bench/table.py: P4, P5 and dumps against ipvsadm) and ``pairs`` (bench/pairs.py: issue 12's
flows lost per failover, withdraw time, flows kept); ``LVSD_BENCH_PEERS`` adds options to
peers.py's (e.g. ``--servers 100``). Each part's output, figures, load average
and duration are saved as JSON under ``--results`` (default .lab/bench, or .lab/bench-smoke);
the report is written from every part saved there, so a part rerun alone replaces only its
own figures. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
HOST_PARTS = ("probes", "metrics", "daemon", "start")
VM_PARTS = ("peers", "table", "pairs")
PARTS = HOST_PARTS + VM_PARTS
PROBES_ASKED_INTERVAL = 2.0
VM_DETECT_BOUND = 1.0 + 1.0 + 1.0 + 0.1  # (fall-1)*retry + interval + timeout + 100 ms


def commands(part: str, smoke: bool, results: Path) -> list[str]:
    """The command line of one part (VM parts: as run inside the VM)."""
    bench = REPO / "bench"
    match part, smoke:
        case "probes", True:
            return [PYTHON, str(bench / "probes.py"), "--sizes", "200", "--seconds", "6",
                    "--workers", "0", "1"]
        case "probes", False:
            return [PYTHON, str(bench / "probes.py"), "--sizes", "1000", "10000", "37000",
                    "--seconds", "20", "--workers", "0", "2"]
        case "metrics", True:
            return [PYTHON, str(bench / "metrics.py"), "--runs", "2", "--shapes", "10x10",
                    "2x50", "--sweep", "100", "1000", "--json", str(results / "metrics.raw")]
        case "metrics", False:
            return [PYTHON, str(bench / "metrics.py"), "--runs", "9", "--sweep", "100", "1000",
                    "3000", "10000", "20000", "37000", "--json", str(results / "metrics.raw")]
        case "daemon", True:
            return [PYTHON, str(bench / "daemon.py"), "--servers", "100", "--flips", "3",
                    "--parts", "memory", "reload", "detect"]
        case "daemon", False:
            return [PYTHON, str(bench / "daemon.py"), "--servers", "10000"]
        case "start", True:
            return [PYTHON, str(bench / "start.py"), "--servers", "100", "--runs", "1"]
        case "start", False:
            return [PYTHON, str(bench / "start.py"), "--servers", "10000", "--runs", "5"]
        case "peers", True:
            return [PYTHON, str(bench / "peers.py"), "--smoke", "--json",
                    str(results / "peers.raw")]
        case "peers", False:
            return [PYTHON, str(bench / "peers.py"), "--servers", "200", "--seconds", "30",
                    "--detect-servers", "40", "--shape", "1000x10", "--runs", "5", "--json",
                    str(results / "peers.raw"), *os.environ.get("LVSD_BENCH_PEERS", "").split()]
        case "table", True:
            return [PYTHON, str(bench / "table.py"), "--quick", "--runs", "1", "--flips", "2",
                    "--json", str(results / "table.raw")]
        case "table", False:
            return [PYTHON, str(bench / "table.py"), "--json", str(results / "table.raw")]
        case "pairs", True:
            return [PYTHON, str(bench / "pairs.py"), "--smoke", "--json",
                    str(results / "pairs.raw")]
        case "pairs", False:
            return [PYTHON, str(bench / "pairs.py"), "--rounds", "5", "--json",
                    str(results / "pairs.raw")]
    raise ValueError(f"no part {part!r}")


# --- running ------------------------------------------------------------------------------------


class Progress:
    """A bar on stderr, redrawn while a part runs (a line every 30 s when not a terminal)."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.label = total, 0, ""
        self.began = self.part_began = time.monotonic()
        self.tty = sys.stderr.isatty()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick, daemon=True)
        self._thread.start()

    def part(self, label: str) -> None:
        self.label, self.part_began = label, time.monotonic()
        self.draw(end="\n")

    def finish_part(self) -> None:
        self.done += 1
        self.draw(end="\n")

    def draw(self, end: str = "") -> None:
        width = 24
        filled = width * self.done // max(self.total, 1)
        now = time.monotonic()
        line = (f"[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} parts; "
                f"{self.label} {now - self.part_began:4.0f} s (all {now - self.began:5.0f} s)")
        print(("\r" if self.tty else "") + line, end=end or ("" if self.tty else "\n"),
              file=sys.stderr, flush=True)

    def _tick(self) -> None:
        while not self._stop.wait(1.0 if self.tty else 30.0):
            self.draw()

    def close(self) -> None:
        self._stop.set()


def run_part(part: str, argv: Sequence[str], results: Path, parse: Callable[..., Any],
             timeout: float) -> dict[str, Any]:
    """Run one part, stream its output, save its envelope as ``results/PART.json``."""
    load_before = os.getloadavg()
    began = time.monotonic()
    lines: list[str] = []
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, cwd=REPO) as process:
        assert process.stdout is not None
        timer = threading.Timer(timeout, process.kill)
        timer.start()
        for line in process.stdout:
            lines.append(line)
            print(line, end="", flush=True)
        returncode = process.wait()
        timer.cancel()
    output = "".join(lines)
    envelope: dict[str, Any] = {
        "part": part, "command": " ".join(shown(a) for a in argv),
        "returncode": returncode, "seconds": time.monotonic() - began,
        "load_before": load_before, "load_after": os.getloadavg(), "output": output,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine(),
    }
    try:
        envelope["figures"] = parse(output, results)
    except (ValueError, KeyError, IndexError, OSError) as exc:
        envelope["figures"] = None
        envelope["parse_error"] = f"{type(exc).__name__}: {exc}"
    (results / f"{part}.json").write_text(json.dumps(envelope, indent=1))
    return envelope


def shown(arg: str) -> str:
    """An argument as the report shows it: paths relative to the repository."""
    if arg == PYTHON:
        return ".venv/bin/python"
    return arg.removeprefix(f"{REPO}/")


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"nproc": os.cpu_count(), "cpu": model, "kernel": os.uname().release}


# --- what each part printed -----------------------------------------------------------------


def number(text: str) -> float:
    return float(text.replace(",", "").rstrip("sm%µx"))


def parse_probes(output: str, results: Path) -> dict[str, Any]:
    """The rows of bench/probes.py's table, by size (and worker processes, ``SIZE/wN``)."""
    rows = {}
    with_workers = any(line.split()[:2] == ["servers", "workers"]
                       for line in output.splitlines() if line.strip())
    for line in output.splitlines():
        words = line.split()
        if len(words) < 16 or not words[0].isdigit() or "|" not in words:
            continue
        if with_workers:  # size workers probes/s fail inconcl CPU user cores main peer p50 ...
            workers = int(words[1])
            extra = {"inconclusive": number(words[4])}
            words = [words[0], *words[2:4], *words[5:8], *words[10:13], *words[14:17],
                     *words[words.index("|"):]]
        else:
            workers, extra = 0, {}
        bare = words[words.index("|") + 2] if len(words) > words.index("|") + 2 else "-"
        rows[words[0] + (f"/w{workers}" if workers else "")] = {
            "size": int(words[0]), "workers": workers, "probes_per_s": number(words[1]),
            "failures": number(words[2]), "cpu_per_probe_us": number(words[3]),
            "cores": number(words[5]), "late_p50_ms": number(words[6]),
            "late_p99_ms": number(words[7]), "late_max_ms": number(words[8]),
            "startup_peak_over_mean": number(words[9]),
            "steady_peak_over_mean": number(words[10]),
            "all_within_interval": words[11] == "yes",
            "bare_cpu_per_probe_us": float("nan") if bare == "-" else number(bare), **extra,
        }
    if not rows:
        raise ValueError("no result rows in bench/probes.py's output")
    return rows


def parse_raw(name: str) -> Callable[[str, Path], Any]:
    def parse(output: str, results: Path) -> Any:
        return json.loads((results / f"{name}.raw").read_text())

    return parse


def parse_daemon(output: str, results: Path) -> dict[str, Any]:
    figures: dict[str, Any] = {"detect": {}}
    if found := re.search(r"s of probing .*?(\d+\.\d) MB", output):
        figures["rss_mb"] = float(found.group(1))
    if found := re.search(r"peak \(VmHWM\)\s+(\d+\.\d) MB", output):
        figures["hwm_mb"] = float(found.group(1))
    if found := re.search(r"memory, RSS of one process: ([\d,]+) real servers", output):
        figures["memory_servers"] = int(found.group(1).replace(",", ""))
    if found := re.search(r"longest loop stall around the reload: (\d+) ms", output):
        figures["reload_stall_ms"] = float(found.group(1))
    if found := re.search(r"reload .*?: ([\d,]+) TCP checks", output):
        figures["reload_servers"] = int(found.group(1).replace(",", ""))
    for block in re.split(r"(?=detection, )", output)[1:]:
        head = re.match(r"detection, ([\d,]+) servers", block)
        if head is None:
            continue
        n = int(head.group(1).replace(",", ""))
        entry: dict[str, Any] = {}
        for kind in ("refused", "black-holed"):
            row = re.search(rf"{kind}\s+failure -> weight 0 s p50/p99/max\s+(\S+)\s+(\S+)\s+"
                            rf"(\S+)\s+<= bound ([\d.]+) s: (\d+)/(\d+)", block)
            if row:
                entry[kind] = {"p50": float(row.group(1)), "p99": float(row.group(2)),
                               "max": float(row.group(3)), "bound": float(row.group(4)),
                               "within": int(row.group(5)), "of": int(row.group(6))}
        if row := re.search(r"out within interval\*fall \+ 2 s = (\d+) s: (\d+)/(\d+)", block):
            entry["all_out"] = {"limit": float(row.group(1)), "out": int(row.group(2)),
                                "of": int(row.group(3))}
        figures["detect"][str(n)] = entry
    return figures


def parse_start(output: str, results: Path) -> dict[str, Any]:
    """bench/start.py's medians: start to READY=1, lvsd's CPU to it, start to all up."""
    head = re.search(r"start to ready: ([\d,]+) servers", output)
    if head is None:
        raise ValueError("no head line in bench/start.py's output")
    figures: dict[str, Any] = {"servers": int(head.group(1).replace(",", ""))}
    for key, label in (("ready_s", "start to ready \\(READY=1\\)"),
                       ("ready_cpu_s", "CPU of lvsd to ready"),
                       ("all_up_s", "start to all in rotation")):
        found = re.search(rf"{label}: median ([\d.]+) s \(min ([\d.]+), max ([\d.]+)\)",
                          output)
        if found is None:
            raise ValueError(f"no '{label}' line in bench/start.py's output")
        figures[key] = {"median": float(found.group(1)), "min": float(found.group(2)),
                        "max": float(found.group(3))}
    return figures


PARSERS: dict[str, Callable[[str, Path], Any]] = {
    "probes": parse_probes, "metrics": parse_raw("metrics"), "daemon": parse_daemon,
    "start": parse_start,
    "peers": parse_raw("peers"), "table": parse_raw("table"), "pairs": parse_raw("pairs"),
}


def vm_side(parts: Sequence[str], smoke: bool, results: Path) -> int:
    """Inside the VM: run the VM parts one after the other."""
    failed = 0
    for part in parts:
        print(f"=== {part} (in the VM)", flush=True)
        envelope = run_part(part, commands(part, smoke, results), results, PARSERS[part],
                            timeout=3600)
        failed += envelope["returncode"] != 0
    return failed


# --- the report ---------------------------------------------------------------------------------


class Row:
    def __init__(self, goal: str, what: str, lvsd: str, against: str, ratio: str,
                 verdict: str) -> None:
        self.cells = (goal, what, lvsd, against, ratio, verdict)


def judged(value: float | None, bound: float, higher_is_better: bool = False) -> str:
    if value is None or math.isnan(value):
        return "not measured"
    if higher_is_better:
        return "met" if value >= bound else f"**missed** ({value / bound:.2f}x of the goal)"
    if value <= bound:
        return "met"
    return f"**missed** ({value / bound:.2f}x the bound)" if bound else "**missed**"


def ratio_text(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.2f}x"


def fmt(value: float | None, unit: str, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f} {unit}".strip()


def figures_of(envelopes: dict[str, dict[str, Any]], part: str) -> Any:
    envelope = envelopes.get(part)
    return None if envelope is None else envelope.get("figures")


def goal_rows(envelopes: dict[str, dict[str, Any]]) -> list[Row]:
    rows: list[Row] = []
    probes = figures_of(envelopes, "probes") or {}
    for row in sorted(probes.values(), key=lambda row: (row["size"], row.get("workers", 0))):
        n = row["size"]
        asked = n / PROBES_ASKED_INTERVAL
        what = f"{n:,} servers, HTTP every 2 s" + (
            f", {row['workers']} worker processes" if row.get("workers") else "")
        if n >= 10_000 and n < 37_000:
            rows.append(Row("P1", f"{what}: cores", fmt(row["cores"], "core"), "≤ 0.5 core",
                            ratio_text(row["cores"] / 0.5), judged(row["cores"], 0.5)))
        rows.append(Row("P1", f"{what}: probes/s", fmt(row["probes_per_s"], "/s", 0),
                        f"{asked:,.0f}/s asked", ratio_text(row["probes_per_s"] / asked),
                        judged(row["probes_per_s"], 0.99 * asked, higher_is_better=True)))
        rows.append(Row("P1", f"{what}: start lateness p99", fmt(row["late_p99_ms"], "ms", 1),
                        "≤ 50 ms", ratio_text(row["late_p99_ms"] / 50),
                        judged(row["late_p99_ms"], 50)))
        rows.append(Row("P1", f"{what}: CPU per probe", fmt(row["cpu_per_probe_us"], "µs", 0),
                        f"bare prober {fmt(row['bare_cpu_per_probe_us'], 'µs', 0)}; "
                        "budget ~100 µs", ratio_text(row["cpu_per_probe_us"] / 100),
                        judged(row["cpu_per_probe_us"], 100)))
        for phase, key in (("start-up", "startup_peak_over_mean"),
                           ("steady", "steady_peak_over_mean")):
            rows.append(Row("P3", f"{what}: peak/mean in 10 ms bins, {phase}",
                            fmt(row[key], ""), "≤ 2", ratio_text(row[key] / 2),
                            judged(row[key], 2)))
        rows.append(Row("P3", f"{what}: every check within interval + 1 s of start",
                        "yes" if row["all_within_interval"] else "no", "yes", "-",
                        "met" if row["all_within_interval"] else "**missed**"))
    daemon = figures_of(envelopes, "daemon") or {}
    for n, entry in sorted(daemon.get("detect", {}).items(), key=lambda item: int(item[0])):
        for kind in ("refused", "black-holed"):
            if kind in entry:
                f = entry[kind]
                rows.append(Row("P2", f"{int(n):,} failing at once, {kind}: p99 detection",
                                fmt(f["p99"], "s"), f"≤ {f['bound']:.1f} s (bound)",
                                ratio_text(f["p99"] / f["bound"]), judged(f["p99"], f["bound"])))
        if "all_out" in entry:
            f = entry["all_out"]
            rows.append(Row("P2", f"{int(n):,} failing at once: out within "
                            f"{f['limit']:.0f} s", f"{f['out']:,}/{f['of']:,}",
                            f"{f['of']:,}", ratio_text(f["out"] / f["of"]),
                            judged(f["out"], f["of"], higher_is_better=True)))
    peers = figures_of(envelopes, "peers") or {}
    checkers = peers.get("checkers")
    if checkers:
        lv, ka = checkers["lvsd"], checkers["keepalived"]
        n = checkers["servers"]
        for how, label in (("refuse", "refused"), ("hang", "hung")):
            lvf, kaf = lv[how], ka[how]
            rows.append(Row("P2", f"VM, {checkers['detect_servers']} of {n} {label} at random "
                            "moments (1 s, 1 s, one retry): p99 detection",
                            fmt(lvf.get("p99"), "s"),
                            f"keepalived {fmt(kaf.get('p99'), 's')}; bound "
                            f"{VM_DETECT_BOUND:.1f} s",
                            ratio_text(lvf["p99"] / kaf["p99"]) + " of keepalived",
                            judged(lvf.get("p99"), VM_DETECT_BOUND)))
        rows.append(Row("P8", f"VM, {n} servers: start to all in rotation",
                        fmt(lv["all_in_rotation_s"], "s", 1),
                        f"keepalived {fmt(ka['all_in_rotation_s'], 's', 1)}",
                        ratio_text(checkers["ratio_ready"]), judged(checkers["ratio_ready"], 1)))
        rows.append(Row("P9", f"VM, {n} servers every 1 s: CPU per check answered",
                        fmt(lv["cpu_per_check_ms"], "ms"),
                        f"keepalived {fmt(ka['cpu_per_check_ms'], 'ms')}",
                        ratio_text(checkers["ratio_cpu_per_check"]),
                        judged(checkers["ratio_cpu_per_check"], 0.5)))
        rows.append(Row("P9", f"VM, {n} servers every 1 s: checks answered/s, false downs",
                        f"{lv['checks_per_s']:.0f}/s, {lv['false_downs']}",
                        f"keepalived {ka['checks_per_s']:.0f}/s, {ka['false_downs']}; "
                        f"{lv['asked_per_s']:.0f}/s asked", "-",
                        "met" if lv["false_downs"] == 0
                        and lv["checks_per_s"] >= 0.95 * lv["asked_per_s"] else "**missed**"))
    table = (figures_of(envelopes, "table") or {}).get("medians", {})
    for name in sorted({key[:-5] for key in table if key.endswith(" lvsd")}):
        restore = table.get(f"{name} ipvsadm-restore")
        if restore:
            lvsd = table[f"{name} lvsd"]
            rows.append(Row("P4", f"VM, cold program {name}", fmt(lvsd, "s", 3),
                            f"ipvsadm-restore {fmt(restore, 's', 3)}",
                            ratio_text(lvsd / restore), judged(lvsd / restore, 1.0)))
        dump, save = table.get(f"{name} dump lvsd"), table.get(f"{name} dump ipvsadm-save")
        if dump and save:
            rows.append(Row("dump", f"VM, dump {name}", fmt(dump, "s", 3),
                            f"ipvsadm-save -n {fmt(save, 's', 3)}", ratio_text(dump / save),
                            judged(dump / save, 1.0)))
    events = sorted({key[:-13] for key in table if key.endswith(" event direct")},
                    key=lambda name: math.prod(int(x) for x in name.split("x")))
    if events:
        first = table[f"{events[0]} event direct"]
        for name in events:
            direct = table[f"{name} event direct"]
            rows.append(Row("P5", f"VM, health event -> kernel, {name}",
                            fmt(direct * 1000, "ms", 1),
                            f"{events[0]}: {fmt(first * 1000, 'ms', 1)} (flat: ≤ 1.5x)",
                            ratio_text(direct / first), judged(direct / first, 1.5)))
            noop, save = table.get(f"{name} noop reconcile"), table.get(f"{name} ipvsadm-save")
            if noop and save:
                rows.append(Row("P5", f"VM, no-op full reconcile {name}", fmt(noop, "s", 3),
                                f"ipvsadm-save -n {fmt(save, 's', 3)}", ratio_text(noop / save),
                                judged(noop / save, 1.0)))
    rows += pair_rows(figures_of(envelopes, "pairs") or {})
    metrics = figures_of(envelopes, "metrics") or {}
    for shape in metrics.get("shapes", []):
        what = f"{shape['dests']:,} destinations ({shape['services']} x {shape['per_service']})"
        for key, label in (("get_plain", "plain"), ("get_gzip", "gzip")):
            ms = shape[key] * 1000
            rows.append(Row("P6", f"GET /metrics {label}, {what}", fmt(ms, "ms", 1), "≤ 100 ms",
                            ratio_text(ms / 100), judged(ms, 100) if shape["dests"] >= 10_000
                            else "(size below the goal's)"))
        rows.append(Row("P6", f"series per destination, {what}",
                        fmt(shape["series_per_dest"], "", 1), "≤ 10",
                        ratio_text(shape["series_per_dest"] / 10),
                        judged(shape["series_per_dest"], 10)))
    for row in metrics.get("sweep", []):
        if row["dests"] == 10_000:
            cpu = (row["render_cpu"] + row["gzip_cpu"]) * 1000
            rows.append(Row("P6", "render + gzip CPU, 10,000 destinations (1,000 x 10; a "
                            "bound on a gzip scrape's time that load does not inflate)",
                            fmt(cpu, "ms", 1), "≤ 100 ms", ratio_text(cpu / 100),
                            judged(cpu, 100)))
    vm_metrics = peers.get("metrics")
    if vm_metrics:
        for encoding in ("plain", "gzip"):
            lv, ne = vm_metrics[f"lvsd {encoding}"], vm_metrics[f"node_exporter {encoding}"]
            for what, key in (("wall", "wall"), ("CPU", "cpu")):
                value = vm_metrics[f"ratio_{encoding}_{key}"]
                rows.append(Row("P6", f"VM, /metrics {encoding} at {vm_metrics['dests']:,} "
                                f"destinations: {what}", fmt(lv[key], "s", 3),
                                f"node_exporter {fmt(ne[key], 's', 3)}", ratio_text(value),
                                judged(value, 1.0)))
    if daemon and "rss_mb" not in daemon:
        rows.append(Row("P7", "RSS at 10,000 servers after probing", "-", "≤ 100 MB", "-",
                        "not measured (the memory part failed: see its output)"))
    if "rss_mb" in daemon:
        rows.append(Row("P7", f"RSS at {daemon.get('memory_servers', 0):,} servers after "
                        "probing", fmt(daemon["rss_mb"], "MB", 1), "≤ 100 MB",
                        ratio_text(daemon["rss_mb"] / 100), judged(daemon["rss_mb"], 100)))
    if "reload_stall_ms" in daemon:
        rows.append(Row("reload", f"loop stall of a reload at {daemon.get('reload_servers', 0):,}"
                        " servers", fmt(daemon["reload_stall_ms"], "ms", 0), "≤ 50 ms",
                        ratio_text(daemon["reload_stall_ms"] / 50),
                        judged(daemon["reload_stall_ms"], 50)))
    start = figures_of(envelopes, "start")
    if start:
        ready = start["ready_s"]
        rows.append(Row("P8", f"host: start to ready (READY=1) at {start['servers']:,} servers, "
                        f"median (min-max) of the runs", f"{ready['median']:.2f} s "
                        f"({ready['min']:.2f}-{ready['max']:.2f})", "≤ 2 s",
                        ratio_text(ready["median"] / 2), judged(ready["median"], 2)))
        rows.append(Row("P8", f"host: start to all {start['servers']:,} in rotation, median",
                        f"{start['all_up_s']['median']:.2f} s", "-", "-", "(shown)"))
    else:
        rows.append(Row("P8", "host: start to ready at 10,000 servers", "-", "≤ 2 s", "-",
                        "not measured (run `bench/report.py --only start`)"))
    return rows


def pair_rows(pairs: dict[str, Any]) -> list[Row]:
    """Issue 12's figures from bench/pairs.py (VM): failover with and without sync, mh against
    rr when a director of an ECMP pair dies, and the announcement's withdraw time."""
    rows: list[Row] = []
    for part, entry in pairs.items():
        if "error" in entry:
            rows.append(Row("#12", f"VM, bench/pairs.py {part}", "-", "-", "-",
                            f"not measured ({entry['error'][:80]})"))
    failover = pairs.get("failover")
    if failover and "error" not in failover:
        flows, lost = failover["flows"], failover["lost"]
        both, off = lost.get("both", []), lost.get("off", [])
        if both:
            rows.append(Row("#12", f"VM, VRRP failover, {flows} flows, sync both: flows lost "
                            f"per failover ({len(both)} failovers)", f"max {max(both)}",
                            f"sync off: mean {statistics.fmean(off):.1f}" if off else "-",
                            "-", judged(max(both), 0)))
    for scheduler, bound_text in (("mh", "0 lost, 100% kept"), ("rr", "control")):
        entry = pairs.get("hashing", {}).get(scheduler) if "error" not in pairs.get(
            "hashing", {}) else None
        if entry:
            through, kept = sum(entry["through_d1"]), sum(entry["kept_server"])
            share = kept / through if through else float("nan")
            rows.append(Row("#12", f"VM, ECMP pair, {scheduler}, a director dies and returns: "
                            f"flows lost per death; moved flows that kept their real server",
                            f"max {max(entry['lost'])} of {pairs['hashing']['flows']}; "
                            f"{kept}/{through} ({share:.0%})", bound_text, "-",
                            ("met" if max(entry["lost"]) == 0 and kept == through
                             else "**missed**") if scheduler == "mh"
                            else "(the control: loses what mh keeps)"))
    withdraw = pairs.get("withdraw")
    if withdraw and "error" not in withdraw:
        rows.append(Row("#12", f"VM, quorum lost -> next hop leaves the BIRD router's route, "
                        f"p50/max over {withdraw['rounds']}",
                        f"{fmt(withdraw['router_p50'], 's', 3)} / "
                        f"{fmt(withdraw['router_max'], 's', 3)}", "≤ 1 s (the issue's)",
                        ratio_text(withdraw["router_max"] / 1.0),
                        judged(withdraw["router_max"], 1.0)))
    return rows


def write_report(envelopes: dict[str, dict[str, Any]], out: Path, plots: Path,
                 smoke: bool) -> None:
    rows = goal_rows(envelopes)
    made = make_plots(envelopes, plots)
    lines = ["# lvsd benchmarks", ""]
    if smoke:
        lines += ["**Smoke run** (tiny sizes, to keep the benchmark code working): these figures "
                  "say nothing about the goals.", ""]
    lines += [
        "Written by `.venv/bin/python bench/report.py` from the parts saved under its results "
        "directory. Host parts ran on this machine; VM parts inside one QEMU/TCG boot "
        "(`tests/vm/run-in-vm.sh`) beside the peers, where only ratios mean anything (Python "
        "and the kernel run ~10x slower there). The machine is shared: each part's load "
        "average is listed with it. Goals: `/work/shared/performance.md` P1-P9 and issue 9.",
        "", "| goal | measure | lvsd | peer or bound | ratio | verdict |",
        "|---|---|---|---|---|---|",
    ]
    lines += ["| " + " | ".join(row.cells) + " |" for row in rows]
    missing = [part for part in PARTS if part not in envelopes]
    if missing:
        lines += ["", f"Not run yet: {', '.join(missing)}."]
    lines += ["", "## Runs", "", "| part | command | date | machine | load before → after | "
              "took | exit |", "|---|---|---|---|---|---|---|"]
    for part in PARTS:
        e = envelopes.get(part)
        if e is None:
            continue
        m = e["machine"]
        where = f"{m['nproc']} x {m['cpu']}, kernel {m['kernel']}"
        lines.append(f"| {part} | `{e['command']}` | {e['date']} | {where} | "
                     f"{e['load_before'][0]:.2f} → {e['load_after'][0]:.2f} | "
                     f"{e['seconds']:.0f} s | {e['returncode']} |")
    if made:
        lines += ["", "## Plots", ""]
        lines += [f"![{title}]({path.relative_to(out.parent).as_posix()})" + "\n"
                  for title, path in made]
    lines += ["", "## What each part printed", ""]
    for part in PARTS:
        e = envelopes.get(part)
        if e is None:
            continue
        lines += [f"<details><summary>{part}</summary>", "", "```", e["output"].rstrip(), "```",
                  "", "</details>", ""]
        if e.get("parse_error"):
            lines += [f"(its figures could not be read: {e['parse_error']})", ""]
    out.write_text("\n".join(lines) + "\n")


def make_plots(envelopes: dict[str, dict[str, Any]], plots: Path) -> list[tuple[str, Path]]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("report: matplotlib missing (bash tests/bootstrap.sh): no plots", file=sys.stderr)
        return []
    plots.mkdir(parents=True, exist_ok=True)
    made: list[tuple[str, Path]] = []
    checkers = (figures_of(envelopes, "peers") or {}).get("checkers")
    if checkers and checkers["lvsd"].get("lateness_buckets"):
        buckets = checkers["lvsd"]["lateness_buckets"]
        bounds = [b for b, _ in buckets]
        counts = [c - (buckets[i - 1][1] if i else 0) for i, (_, c) in enumerate(buckets)]
        labels = [f"≤{b * 1000:g} ms" if b < 1 else (f"≤{b:g} s" if b != math.inf else "more")
                  for b in bounds]
        figure, axes = plt.subplots(figsize=(8, 4))
        axes.bar(range(len(counts)), counts)
        axes.set_xticks(range(len(counts)), labels, rotation=45, ha="right")
        axes.set_ylabel("probes")
        axes.set_title(f"lvsd probe start lateness, VM, {checkers['servers']} servers every "
                       f"{checkers['interval']:g} s (lvsd_probe_lateness_seconds)")
        figure.tight_layout()
        path = plots / "probe-lateness-vm.png"
        figure.savefig(path, dpi=100)
        plt.close(figure)
        made.append(("probe start lateness", path))
    if checkers:
        figure, axes = plt.subplots(figsize=(8, 4.5))
        for kind, style in (("lvsd", "-"), ("keepalived", "--")):
            for how, label in (("refuse", "refused"), ("hang", "hung")):
                values = sorted(checkers[kind][how]["latencies"])
                if values:
                    axes.step(values, [(i + 1) / len(values) for i in range(len(values))],
                              style, where="post", label=f"{kind}, {label}")
        axes.axvline(VM_DETECT_BOUND, color="grey", linewidth=0.8)
        axes.text(VM_DETECT_BOUND, 0.02, " P2 bound", color="grey")
        axes.set_xlabel("failure → weight 0 in the kernel (s)")
        axes.set_ylabel("fraction of failed servers")
        axes.set_title(f"Detection in the VM, {checkers['detect_servers']} servers failing at "
                       "random moments (interval 1 s, timeout 1 s, one retry)")
        axes.legend()
        figure.tight_layout()
        path = plots / "detection-cdf-vm.png"
        figure.savefig(path, dpi=100)
        plt.close(figure)
        made.append(("detection latency CDF", path))
    sweep = (figures_of(envelopes, "metrics") or {}).get("sweep") or []
    probes = figures_of(envelopes, "probes") or {}
    if sweep or probes:
        figure, axes = plt.subplots(figsize=(8, 4.5))
        if sweep:
            sizes = [row["dests"] for row in sweep]
            axes.plot(sizes, [row["render_cpu"] * 1000 for row in sweep], "o-",
                      label="/metrics render, CPU ms")
            axes.plot(sizes, [(row["render_cpu"] + row["gzip_cpu"]) * 1000 for row in sweep],
                      "s-", label="/metrics render + gzip, CPU ms")
        if probes:
            for workers in sorted({row.get("workers", 0) for row in probes.values()}):
                rows = sorted((row for row in probes.values() if row.get("workers", 0) == workers),
                              key=lambda row: row["size"])
                axes.plot([row["size"] for row in rows],
                          [row["cpu_per_probe_us"] for row in rows], "^-",
                          label=f"CPU per probe, µs (HTTP every 2 s, {workers} workers)")
        axes.set_xscale("log")
        axes.set_yscale("log")
        axes.set_xlabel("table size (real servers / destinations)")
        axes.set_title("Cost against table size, on this host")
        axes.legend()
        figure.tight_layout()
        path = plots / "cost-vs-size.png"
        figure.savefig(path, dpi=100)
        plt.close(figure)
        made.append(("cost against table size", path))
    return made


def load_envelopes(results: Path) -> dict[str, dict[str, Any]]:
    found = {}
    for part in PARTS:
        path = results / f"{part}.json"
        if path.exists():
            found[part] = json.loads(path.read_text())
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=PARTS, help="run these parts only")
    parser.add_argument("--smoke", action="store_true", help="every part at tiny sizes")
    parser.add_argument("--results", type=Path, help="where each part's figures are saved")
    parser.add_argument("--out", type=Path,
                        help="the report (default BENCHMARKS.md; with --smoke, in --results)")
    parser.add_argument("--report-only", action="store_true", help="run nothing")
    parser.add_argument("--vm-side", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    results = (args.results or REPO / ".lab" / ("bench-smoke" if args.smoke else "bench"))
    results = results.resolve()
    results.mkdir(parents=True, exist_ok=True)
    parts = args.only or list(PARTS)
    if args.vm_side:
        sys.exit(vm_side([p for p in parts if p in VM_PARTS], args.smoke, results))
    out = args.out or (results / "BENCHMARKS.md" if args.smoke else REPO / "BENCHMARKS.md")
    plots = (results / "plots") if args.smoke else REPO / "bench" / "plots"
    failed: list[str] = []
    if not args.report_only:
        host = [p for p in parts if p in HOST_PARTS]
        vm = [p for p in parts if p in VM_PARTS]
        progress = Progress(len(host) + (1 if vm else 0))
        try:
            for part in host:
                progress.part(part)
                envelope = run_part(part, commands(part, args.smoke, results), results,
                                    PARSERS[part], timeout=5400)
                if envelope["returncode"] or envelope["figures"] is None:
                    failed.append(part)
                progress.finish_part()
            if vm:
                progress.part(f"{' + '.join(vm)} in one VM boot")
                argv = ["bash", str(REPO / "tests/vm/run-in-vm.sh"), PYTHON, __file__,
                        "--vm-side", "--results", str(results), "--only", *vm]
                done = subprocess.run([*argv, *(["--smoke"] if args.smoke else [])],
                                      cwd=REPO, check=False,
                                      env={**os.environ, "VM_TIMEOUT": "7200"})
                for part in vm:
                    saved = load_envelopes(results).get(part)
                    if done.returncode or saved is None or saved["returncode"] \
                            or saved.get("figures") is None:
                        failed.append(part)
                progress.finish_part()
        finally:
            progress.close()
    write_report(load_envelopes(results), out, plots, args.smoke)
    print(f"report: wrote {out}" + (f"; failed: {', '.join(failed)}" if failed else ""),
          file=sys.stderr)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
