"""The lab the control and ctl-view kernel tests share: a DR lab of two real servers behind
two services of one VIP, the servers adopted as serving so no first probe holds them back."""

from __future__ import annotations

from tests.integration.conftest import DrLab
from tests.integration.daemon_support import kernel_table, weights

VIP = "192.0.2.100"
RS1, RS2 = "192.0.2.11", "192.0.2.12"
WEB, ALT = f"tcp:{VIP}:80", f"tcp:{VIP}:8080"

CONFIG = f"""
[daemon]
resync_interval = "5s"

[[services]]
name = "web"
address = "{VIP}"
port = 80
scheduler = "rr"
check = {{ type = "http", path = "/", interval = "1s", timeout = "1s", rise = 1, fall = 2 }}
[[services.real_servers]]
address = "{RS1}"
[[services.real_servers]]
address = "{RS2}"

[[services]]
name = "alt"
address = "{VIP}"
port = 8080
scheduler = "rr"
[[services.real_servers]]
address = "{RS1}"
[[services.real_servers]]
address = "{RS2}"
"""

ALL_SERVING = {f"{WEB} -> {RS1}:80": 1, f"{WEB} -> {RS2}:80": 1,
               f"{ALT} -> {RS1}:8080": 1, f"{ALT} -> {RS2}:8080": 1}


def adopt_serving(lab: DrLab) -> None:
    """Both services in the kernel before lvsd starts, every server at weight 1."""
    for port in (80, 8080):
        lab.director.run("ipvsadm", "-A", "-t", f"{VIP}:{port}", "-s", "rr")
        for address in (RS1, RS2):
            lab.director.run("ipvsadm", "-a", "-t", f"{VIP}:{port}", "-r",
                             f"{address}:{port}", "-g", "-w", "1")


def table_weights(lab: DrLab) -> dict[str, int]:
    return weights(kernel_table(lab.director))
