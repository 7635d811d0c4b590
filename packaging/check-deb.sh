#!/bin/bash
# Install a built lvsd .deb on this machine, use it, purge it, and check nothing is left.
# Needs root; leaves the machine as it found it (the package is purged even on failure).
#
# Usage: bash packaging/check-deb.sh dist/lvsd_<version>_<arch>.deb
set -euo pipefail
DEB=$1
dpkg-query -W -f='${Status}' lvsd 2>/dev/null | grep -q "ok installed" && {
    echo "check-deb: lvsd is already installed here; not touching it" >&2; exit 2; }
trap 'dpkg -P lvsd >/dev/null 2>&1 || true' EXIT
dpkg -i "$DEB"
FILES=$(dpkg -L lvsd)
lvsd --version
lvsd check-config /etc/lvsd/lvsd.toml
MANPAGER=cat man lvsd | grep -q "lvsd check-config"
MANPAGER=cat man 5 lvsd.toml | grep -q "resync_interval"
systemd-analyze verify /lib/systemd/system/lvsd.service
lvsd import ipvsadm-save - <<<'-A -t 192.0.2.1:80 -s rr' >/dev/null
dpkg -P lvsd
trap - EXIT
left=()
while read -r path; do
    [[ -e $path && ! -d $path ]] && left+=("$path")
    [[ -d $path && $path == /opt/lvsd* ]] && left+=("$path")
done <<<"$FILES"
for path in /etc/lvsd /opt/lvsd /var/lib/lvsd; do [[ -e $path ]] && left+=("$path"); done
if (( ${#left[@]} )); then
    printf 'check-deb: left behind: %s\n' "${left[@]}" >&2
    exit 1
fi
echo "check-deb: installed, ran, purged; nothing left behind"
