#!/bin/bash
# Prepare a fresh Debian 12 machine for lvsd's lab and tests (idempotent, needs root):
# Debian packages (the VM's kernel and qemu, ipvsadm, systemd-analyze, promtool/prometheus,
# chromium-headless-shell, the benchmarks' peers keepalived and prometheus-node-exporter, and
# bird2 for the announcement lab and the check of config/bird/) and a virtualenv at .venv with
# lvsd installed in editable mode (with the test, fast and bench extras).
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$REPO"
APT_PACKAGES=(qemu-system-x86 linux-image-amd64 busybox-static kmod cpio ipvsadm iproute2
              procps curl systemd prometheus chromium-headless-shell python3-venv
              keepalived prometheus-node-exporter man-db bird2)
missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if (( ${#missing[@]} )); then
    echo "bootstrap: apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi
if [[ ! -x .venv/bin/lvsd ]] \
        || ! .venv/bin/python -c 'import lvsd, pytest, xdist, hypothesis, matplotlib' 2>/dev/null; then
    echo "bootstrap: preparing .venv"
    [[ -x .venv/bin/python ]] || python3 -m venv .venv
    .venv/bin/pip install -q -e '.[test,fast,bench]'
fi
