"""lvsd over the DR lab, observed from outside: a real Prometheus, ipvsadm --stats, and Chromium.

One lab for the module: ``lvsd run`` in the director's namespace with an HTTP check on both real
servers, Debian's Prometheus scraping it there every second, and the tests reading everything
through that namespace's loopback (HTTP from a thread in it; ipvsadm and chromium run inside
it).
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from conftest import DrLab, dr_lab_context, http_get_in_netns
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / ".lab"
LVSD_PORT = 9163
PROMETHEUS_PORT = 9090
CHECK_INTERVAL = 0.5
CHECK_TIMEOUT = 1.0
FALL = 2
# Detection of a refused server takes (fall - 1) * interval + one failing probe on the host;
# the VM runs Python ~10x slower, so the bound adds 5 s for the probe, the pass and the read.
DETECTION_BOUND = (FALL - 1) * CHECK_INTERVAL + CHECK_TIMEOUT + 5.0
CHROMIUM_TIMEOUT = 600  # headless Chromium under software emulation: minutes, not seconds

T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], timeout: float,
             interval: float = 0.5) -> T:
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = probe()
        if last is not None and last is not False:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})")


@dataclass
class Observed:
    lab: DrLab
    workdir: Path
    lvsd: subprocess.Popen[bytes]
    prometheus: subprocess.Popen[bytes]

    def fetch(self, port: int, path: str) -> tuple[int | None, str]:
        """(status, body) of ``GET path`` on 127.0.0.1:port in the director's namespace."""
        return http_get_in_netns(self.lab.director, port, path, timeout=10)

    def get(self, path: str) -> str:
        code, body = self.fetch(LVSD_PORT, path)
        assert code == 200, (path, code, body[:500])
        return body

    def status(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.get("/status"))
        return document

    def query(self, promql: str) -> list[dict[str, Any]]:
        code, body = self.fetch(PROMETHEUS_PORT,
                                f"/api/v1/query?{urllib.parse.urlencode({'query': promql})}")
        assert code == 200, (promql, code, body[:500])
        answer = json.loads(body)
        assert answer["status"] == "success", (promql, answer)
        vector: list[dict[str, Any]] = answer["data"]["result"]
        return vector

    def by_server(self, promql: str) -> dict[str, float]:
        return {sample["metric"]["remote_address"]: float(sample["value"][1])
                for sample in self.query(promql)}

    def server_status(self, address: str) -> dict[str, Any]:
        web = self.status()["services"][0]
        return next(s for s in web["servers"] if s["address"] == address)


def lvsd_config(lab: DrLab, state_dir: Path) -> str:
    servers = "".join(f'\n[[services.real_servers]]\naddress = "{s.address}"\n'
                      for s in lab.real_servers)
    return f"""
[daemon]
listen = "127.0.0.1:{LVSD_PORT}"
state_dir = "{state_dir}"
resync_interval = 5

[[services]]
name = "web <lab> & co"
address = "{lab.vip}"
port = {lab.port}
scheduler = "rr"

[services.check]
type = "http"
path = "/"
interval = {CHECK_INTERVAL}
timeout = {CHECK_TIMEOUT}
rise = 1
fall = {FALL}
{servers}"""


PROMETHEUS_CONFIG = f"""
global:
  # Python in the VM is ~10x slower: a 1 s timeout loses scrapes, and a lost scrape marks
  # every series stale until the next one.
  scrape_interval: 2s
  scrape_timeout: 2s
  evaluation_interval: 1s
scrape_configs:
  - job_name: lvsd
    static_configs:
      - targets: ["127.0.0.1:{LVSD_PORT}"]
"""


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def tail(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:] if path.exists() else ""


@pytest.fixture(scope="module")
def observed() -> Iterator[Observed]:
    for tool in ("prometheus", "ipvsadm"):
        assert shutil.which(tool), f"{tool} missing: bash tests/bootstrap.sh installs it"
    with dr_lab_context(2) as lab:
        workdir = Path(tempfile.mkdtemp(prefix="lvsd-observability-"))
        config = workdir / "lvsd.toml"
        config.write_text(lvsd_config(lab, workdir / "state"))
        (workdir / "prometheus.yml").write_text(PROMETHEUS_CONFIG)
        with open(workdir / "lvsd.log", "wb") as lvsd_log, \
                open(workdir / "prometheus.log", "wb") as prometheus_log:
            lvsd = subprocess.Popen(
                ["ip", "netns", "exec", lab.director, sys.executable, "-m", "lvsd", "run",
                 "-c", str(config)],
                stdin=subprocess.DEVNULL, stdout=lvsd_log, stderr=subprocess.STDOUT, cwd=REPO)
            prometheus = subprocess.Popen(
                ["ip", "netns", "exec", lab.director, "prometheus",
                 f"--config.file={workdir / 'prometheus.yml'}",
                 f"--storage.tsdb.path={workdir / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{PROMETHEUS_PORT}", "--log.level=warn"],
                stdin=subprocess.DEVNULL, stdout=prometheus_log, stderr=subprocess.STDOUT)
        observed = Observed(lab, workdir, lvsd, prometheus)
        try:
            try:
                wait_for("lvsd ready",
                         lambda: observed.fetch(LVSD_PORT, "/readyz")[0] == 200, 180)
                wait_for("Prometheus to scrape lvsd", lambda: [
                    s for s in observed.query('up{job="lvsd"}') if s["value"][1] == "1"], 180)
            except AssertionError as exc:
                raise AssertionError(f"{exc}\nlvsd log:\n{tail(workdir / 'lvsd.log')}\n"
                                     f"prometheus log:\n{tail(workdir / 'prometheus.log')}"
                                     ) from exc
            yield observed
        finally:
            stop(prometheus)
            stop(lvsd)
            shutil.rmtree(workdir, ignore_errors=True)


def both_up(observed: Observed) -> dict[str, float] | None:
    addresses = {s.address for s in observed.lab.real_servers}
    health = observed.by_server("lvsd_backend_health")
    weight = observed.by_server("lvsd_backend_weight")
    if set(health) == addresses and set(health.values()) == {1.0} and \
            set(weight) == addresses and set(weight.values()) == {1.0}:
        return health
    return None


def test_prometheus_reads_health_and_weight_of_each_server_and_sees_a_kill(
    observed: Observed,
) -> None:
    rs1 = observed.lab.real_servers[0]
    rs2 = observed.lab.real_servers[1]
    # One scrape may time out while the emulated daemon is busy: wait for a good one.
    wait_for("Prometheus to scrape lvsd", lambda: [
        s for s in observed.query('up{job="lvsd"}') if s["value"][1] == "1"], 30)
    wait_for("both servers up with weight 1 in Prometheus", lambda: both_up(observed), 60)
    (configured,) = observed.query(
        f'lvsd_backend_configured_weight{{remote_address="{rs1.address}"}}')
    assert configured["value"][1] == "1"
    assert configured["metric"]["local_address"] == observed.lab.vip
    assert configured["metric"]["proto"] == "TCP"
    assert configured["metric"]["local_port"] == str(observed.lab.port)

    observed.lab.stop_server(rs1.label)
    try:
        def rs1_down() -> bool:
            health = observed.by_server("lvsd_backend_health")
            weight = observed.by_server("lvsd_backend_weight")
            return (health.get(rs1.address) == 0 and weight.get(rs1.address) == 0
                    and health.get(rs2.address) == 1 and weight.get(rs2.address) == 1)

        wait_for("Prometheus to see rs1 down with weight 0", rs1_down, 60)
        (healthy,) = observed.query("lvsd_service_healthy_weight")
        assert healthy["value"][1] == "1"
    finally:
        asyncio.run(observed.lab.start_server(rs1.label))
    wait_for("Prometheus to see rs1 back", lambda: both_up(observed), 60)


def test_every_dashboard_query_evaluates_in_prometheus(observed: Observed) -> None:
    dashboard = json.loads((REPO / "config/grafana/lvsd-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) > 30

    def answered(promql: str) -> bool:
        # query() fails the test on a PromQL error; an empty answer is asked again in case a
        # slow scrape left a staleness gap.
        for _ in range(5):
            if observed.query(promql):
                return True
            time.sleep(1)
        return False

    empty = []
    for expr in exprs:
        promql = (expr.replace("$__rate_interval", "10s").replace("$instance", ".*")
                  .replace("$vip", ".*"))
        if not answered(promql):
            empty.append(promql)
    # Series that exist only after an event (reload, reconcile error, probe lateness) may be
    # empty here; the table's own series may not.
    table_queries = [e for e in empty if "lvsd_backend" in e or "lvsd_service" in e]
    assert not table_queries, "\n".join(table_queries)


def test_promtool_accepts_lvsd_s_metrics_over_the_lab(observed: Observed) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: bash tests/bootstrap.sh installs prometheus"
    body = observed.get("/metrics")
    assert "lvsd_backend_health{" in body
    result = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True,
                            text=True, timeout=60, check=False)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def ipvsadm_stats(observed: Observed) -> dict[str, tuple[int, ...]]:
    """``ipvsadm -Ln --stats --exact``: the five counters per service and per destination."""
    output = observed.lab.director.run("ipvsadm", "-Ln", "--stats", "--exact").stdout
    table: dict[str, tuple[int, ...]] = {}
    service = ""
    for line in output.splitlines():
        fields = line.split()
        if len(fields) == 7 and fields[0] in ("TCP", "UDP", "SCTP", "FWM"):
            service = fields[1]
            table[f"service {service}"] = tuple(int(v) for v in fields[2:7])
        elif len(fields) == 7 and fields[0] == "->":
            table[f"{service} -> {fields[1]}"] = tuple(int(v) for v in fields[2:7])
    return table


COUNTERS = ("connections_total", "incoming_packets_total", "outgoing_packets_total",
            "incoming_bytes_total", "outgoing_bytes_total")


def lvsd_stats(text: str, vip: str) -> dict[str, tuple[int, ...]]:
    values: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if labels.get("local_address") != vip:
                continue
            if "remote_address" in labels:
                where = f"{vip}:{labels['local_port']} -> " \
                        f"{labels['remote_address']}:{labels['remote_port']}"
                values[(where, sample.name.removeprefix("lvsd_backend_"))] = sample.value
            else:
                where = f"service {vip}:{labels['local_port']}"
                values[(where, sample.name.removeprefix("lvsd_service_"))] = sample.value
    places = {where for where, _ in values}
    return {where: tuple(int(values[(where, c)]) for c in COUNTERS)
            for where in places if all((where, c) in values for c in COUNTERS)}


def test_counters_match_ipvsadm_stats_after_traffic(observed: Observed) -> None:
    lab = observed.lab
    answers = asyncio.run(lab.fetch(20))
    assert None not in answers, answers

    service_key = f"service {lab.vip}:{lab.port}"

    def settled() -> dict[str, tuple[int, ...]] | None:
        # The kernel folds its per-CPU counters into what it reports on its 2 s estimator
        # timer: the 20 connections show once a tick has passed, and a value unchanged across
        # more than one period has no tick pending.
        first = ipvsadm_stats(observed)
        if first.get(service_key, (0,))[0] < 20:
            return None
        time.sleep(2.5)
        return first if ipvsadm_stats(observed) == first else None

    expected = wait_for("ipvsadm to count the 20 connections, and settle", settled, 40)
    assert set(expected) == {service_key, *(f"{lab.vip}:{lab.port} -> {s.address}:{lab.port}"
                                            for s in lab.real_servers)}
    assert lvsd_stats(observed.get("/metrics"), lab.vip) == expected

    def prometheus_agrees() -> bool:
        connections = observed.by_server("lvsd_backend_connections_total")
        in_bytes = observed.by_server("lvsd_backend_incoming_bytes_total")
        return all(
            connections.get(s.address) == expected[f"{lab.vip}:{lab.port} -> "
                                                   f"{s.address}:{lab.port}"][0]
            and in_bytes.get(s.address) == expected[f"{lab.vip}:{lab.port} -> "
                                                    f"{s.address}:{lab.port}"][3]
            for s in lab.real_servers)

    wait_for("Prometheus to scrape the same counters", prometheus_agrees, 30)


def chromium_command(profile: Path, screenshot: Path, url: str) -> list[str]:
    """Headless Chromium that prints the DOM and saves a screenshot of ``url``.

    Debian's chromium-headless-shell (Chromium's headless mode without the browser around it)
    does this in ~2 minutes under the VM's software emulation, the full browser in ~5; the
    full one needs a single process to finish at all there. No JIT: the page has no script,
    and emulated code generation is slow.
    """
    common = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--disable-extensions", "--disable-dev-shm-usage", "--mute-audio",
              "--js-flags=--jitless", f"--user-data-dir={profile}", "--window-size=1600,400",
              "--hide-scrollbars", f"--screenshot={screenshot}", "--dump-dom", url]
    if shutil.which("chromium-headless-shell"):
        return ["chromium-headless-shell", *common]
    assert shutil.which("chromium"), "chromium missing: bash tests/bootstrap.sh installs it"
    return ["chromium", "--headless", "--single-process", "--no-zygote", *common]


def test_status_page_in_chromium_shows_every_server_and_a_killed_one_down(
    observed: Observed,
) -> None:
    lab = observed.lab
    rs1, rs2 = lab.real_servers
    wait_for("both servers up", lambda: both_up(observed), 60)

    killed_at = time.monotonic()
    lab.stop_server(rs2.label)
    try:
        wait_for("lvsd to mark rs2 down",
                 lambda: observed.server_status(rs2.address)["health"] == "down",
                 DETECTION_BOUND, interval=0.1)
        detected_after = time.monotonic() - killed_at
        assert detected_after <= DETECTION_BOUND

        # The screenshot shows the kernel side too: wait for the pass that sets weight 0.
        wait_for("lvsd to set rs2's kernel weight to 0",
                 lambda: observed.server_status(rs2.address)["kernel_weight"] == 0, 30)
        ARTIFACTS.mkdir(exist_ok=True)
        screenshot = ARTIFACTS / "observability-status-page.png"
        screenshot.unlink(missing_ok=True)
        profile = Path(tempfile.mkdtemp(prefix="lvsd-chromium-"))
        try:
            started = time.monotonic()
            browser = subprocess.run(
                ["ip", "netns", "exec", lab.director,
                 *chromium_command(profile, screenshot,
                                   f"http://127.0.0.1:{LVSD_PORT}/?refresh=0")],
                capture_output=True, text=True, timeout=CHROMIUM_TIMEOUT, check=False)
            browser_seconds = time.monotonic() - started
        finally:
            # Chromium's helpers may still be writing its profile when it exits.
            shutil.rmtree(profile, ignore_errors=True)
        dom = browser.stdout
        assert browser.returncode == 0, browser.stderr[-2000:]
        assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert screenshot.stat().st_size > 10_000
        (ARTIFACTS / "observability-status-page.html").write_text(dom)

        rows = dict(re.findall(r'data-server="([^"]+)" data-health="([^"]+)"', dom))
        assert rows == {f"{rs1.address}:{lab.port}": "up", f"{rs2.address}:{lab.port}": "down"}
        down_row = re.search(rf'<tr class="down" data-server="{re.escape(rs2.address)}:80"'
                             r'.*?</tr>', dom)
        assert down_row is not None and ">DOWN<" in down_row.group(0)
        assert "web &lt;lab&gt; &amp; co" in dom  # the name, escaped, as the browser parsed it
    finally:
        asyncio.run(lab.start_server(rs2.label))
    print(f"rs2 detected down after {detected_after:.2f} s; Chromium took {browser_seconds:.0f} s;"
          f" screenshot {screenshot}", file=sys.stderr)
    wait_for("rs2 back", lambda: both_up(observed), 60)
