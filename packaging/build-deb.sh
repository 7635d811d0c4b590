#!/bin/bash
# Build dist/lvsd_<version>_<arch>.deb from this tree with dpkg-deb (no debhelper needed).
#
# The package carries lvsd and its Python dependencies under /opt/lvsd/lib (a private
# site directory, byte-compiled at build time) and a /usr/bin/lvsd launcher for Debian's
# python3. Debian 12's own python3-pydantic (1.10) and python3-pyroute2 (0.7) are older than
# lvsd needs (pydantic 2, pyroute2 0.9), so Depends: on Debian's packages cannot work there;
# the dependencies come from the wheels pip finds (its cache or the configured index) when
# the package is built, and the installed package needs nothing from the network. Some of
# them are compiled for CPython 3.11 on this architecture, hence Architecture: amd64 (not
# all) and Depends: python3 (>= 3.11), python3 (<< 3.12).
#
# Usage: bash packaging/build-deb.sh [OUTDIR]     (default: dist/)
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$REPO"
OUT=$(mkdir -p "${1:-dist}" && cd "${1:-dist}" && pwd -P)
PY=${PYTHON:-$REPO/.venv/bin/python}
VERSION=$("$PY" -c 'import lvsd; print(lvsd.__version__)')
ARCH=$(dpkg --print-architecture)
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
ROOT=$WORK/root

"$PY" -m pip wheel -q -w "$WORK/wheels" ".[fast]"
"$PY" -m pip install -q --no-index --find-links "$WORK/wheels" --no-compile \
    --target "$ROOT/opt/lvsd/lib" "lvsd[fast]==$VERSION"
# The wheel's data files (share/…) land in the target too: the package puts them in place below.
rm -rf "$ROOT/opt/lvsd/lib/share" "$ROOT/opt/lvsd/lib/bin"
"$PY" -m compileall -q -j0 "$ROOT/opt/lvsd/lib" >/dev/null

install -d "$ROOT/usr/bin"
cat > "$ROOT/usr/bin/lvsd" <<'LAUNCHER'
#!/usr/bin/python3
import sys

sys.dont_write_bytecode = True  # every .pyc is in the package: dpkg -P leaves none behind
sys.path.insert(0, "/opt/lvsd/lib")
from lvsd.cli import main  # noqa: E402

sys.exit(main())
LAUNCHER
chmod 755 "$ROOT/usr/bin/lvsd"

install -d "$ROOT/lib/systemd/system"
sed 's|/usr/local/bin/lvsd|/usr/bin/lvsd|g' systemd/lvsd.service > "$ROOT/lib/systemd/system/lvsd.service"
install -Dm644 systemd/modules-load.d/lvsd.conf "$ROOT/usr/lib/modules-load.d/lvsd.conf"
install -Dm644 config/lvsd.toml "$ROOT/etc/lvsd/lvsd.toml"
install -Dm644 man/lvsd.8 "$ROOT/usr/share/man/man8/lvsd.8"
install -Dm644 man/lvsd.toml.5 "$ROOT/usr/share/man/man5/lvsd.toml.5"
gzip -9n "$ROOT/usr/share/man/man8/lvsd.8" "$ROOT/usr/share/man/man5/lvsd.toml.5"
install -Dm644 completion/lvsd.bash "$ROOT/usr/share/bash-completion/completions/lvsd"
install -Dm644 completion/_lvsd "$ROOT/usr/share/zsh/vendor-completions/_lvsd"
DOC=$ROOT/usr/share/doc/lvsd
install -d "$DOC/examples" "$DOC/prometheus" "$DOC/grafana"
install -m644 config/examples/*.toml "$DOC/examples/"
install -m644 config/prometheus/lvsd-alerts.yml config/prometheus/prometheus.yml "$DOC/prometheus/"
install -m644 config/grafana/lvsd-dashboard.json "$DOC/grafana/"
install -m644 README.md "$DOC/README.md"
gzip -9nc CHANGELOG.md > "$DOC/changelog.gz"
{ echo "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/"
  echo "Upstream-Name: lvsd"
  echo; echo "Files: *"; echo "License: GPL-2.0-or-later"
  echo " On Debian systems the full text is in /usr/share/common-licenses/GPL-2."
  echo " The Python libraries under /opt/lvsd/lib carry their own licences in their"
  echo " *.dist-info directories."; } > "$DOC/copyright"

install -d "$ROOT/DEBIAN"
echo /etc/lvsd/lvsd.toml > "$ROOT/DEBIAN/conffiles"
SIZE=$(du -sk --exclude=DEBIAN "$ROOT" | cut -f1)
cat > "$ROOT/DEBIAN/control" <<CONTROL
Package: lvsd
Version: $VERSION
Architecture: $ARCH
Maintainer: lvsd developers <lvsd@localhost>
Installed-Size: $SIZE
Depends: python3 (>= 3.11), python3 (<< 3.12)
Recommends: ipvsadm
Section: net
Priority: optional
Description: health-checking director daemon for Linux Virtual Server (IPVS)
 lvsd owns the director's IPVS table over generic netlink, probes every real
 server and drives each server's weight from its health; it keeps the rules in
 ipvsadm-save format and exports Prometheus metrics.
CONTROL
cat > "$ROOT/DEBIAN/postinst" <<'SCRIPT'
#!/bin/sh
set -e
if [ "$1" = configure ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
fi
SCRIPT
cat > "$ROOT/DEBIAN/prerm" <<'SCRIPT'
#!/bin/sh
set -e
if [ -d /run/systemd/system ] && [ "$1" = remove ]; then
    systemctl stop lvsd.service || true
    systemctl disable lvsd.service || true
fi
SCRIPT
cat > "$ROOT/DEBIAN/postrm" <<'SCRIPT'
#!/bin/sh
set -e
if [ "$1" = purge ]; then
    rm -rf /var/lib/lvsd /run/lvsd
    rmdir /etc/lvsd 2>/dev/null || true
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
fi
SCRIPT
chmod 755 "$ROOT/DEBIAN/postinst" "$ROOT/DEBIAN/prerm" "$ROOT/DEBIAN/postrm"
DEB=$OUT/lvsd_${VERSION}_${ARCH}.deb
dpkg-deb --root-owner-group -Zxz --build "$ROOT" "$DEB" >/dev/null
echo "$DEB"
