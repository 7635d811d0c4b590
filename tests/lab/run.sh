#!/bin/bash
# The lab: install lvsd and run it on the seeds' direct-routing topology (a client, a director
# holding the VIP, two real servers with the VIP on lo), show traffic balanced, a real server
# killed and taken out, then brought back. Where this kernel has no IPVS, the lab runs inside a
# throw-away VM that boots one (tests/vm/run-in-vm.sh). Needs root.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
cd "$REPO"
bash tests/bootstrap.sh
if modprobe -q ip_vs 2>/dev/null && [[ -e /proc/net/ip_vs ]]; then
    exec bash tests/lab/dr-demo.sh
fi
echo "lab: this kernel has no IPVS; running the lab in a VM with one"
exec bash tests/vm/run-in-vm.sh bash tests/lab/dr-demo.sh
