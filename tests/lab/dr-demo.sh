#!/bin/bash
# The seeds' DR lab with lvsd as the director's daemon (run as root on a kernel with IPVS).
# Addresses are TEST-NET-1 (192.0.2.0/24) inside network namespaces this script creates.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
LVSD=${LVSD:-$REPO/.venv/bin/lvsd}
PY=${PY:-$REPO/.venv/bin/python}
VIP=192.0.2.100
P=lvlab$$
WORK=$(mktemp -d /tmp/lvsd-lab.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    for n in cl lb rs1 rs2; do ip netns del "$P$n" 2>/dev/null || true; done
    ip link del "${P}br" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
elapsed() { awk -v t0="$1" -v now="$(date +%s.%N)" 'BEGIN { printf "%.2f", now - t0 }'; }
say() { printf '\n--- %s\n' "$*"; }
in_ns() { local ns=$1; shift; ip netns exec "$P$ns" "$@"; }

ip link add "${P}br" type bridge; ip link set "${P}br" up
host() { # name address
    ip netns add "$P$1"
    ip link add "v$P$1" type veth peer name eth0 netns "$P$1"
    ip link set "v$P$1" master "${P}br" up
    in_ns "$1" ip addr add "$2/24" dev eth0
    in_ns "$1" ip link set eth0 up; in_ns "$1" ip link set lo up
}
host cl 192.0.2.10; host lb 192.0.2.1; host rs1 192.0.2.11; host rs2 192.0.2.12
in_ns lb ip addr add $VIP/32 dev eth0
in_ns lb sysctl -qw net.ipv4.conf.all.send_redirects=0 net.ipv4.conf.eth0.send_redirects=0
start_web() { # rs
    # Not through in_ns: a backgrounded function is a subshell, and $! would be its pid.
    ip netns exec "$P$1" "$PY" -m http.server -b 0.0.0.0 -d "$WORK/www-$1" 80 >/dev/null 2>&1 &
    WEB[$1]=$!; PIDS+=($!)
}
declare -A WEB
for r in rs1 rs2; do
    in_ns $r ip addr add $VIP/32 dev lo
    in_ns $r sysctl -qw net.ipv4.conf.all.arp_ignore=1 net.ipv4.conf.all.arp_announce=2 \
        net.ipv4.conf.eth0.arp_ignore=1 net.ipv4.conf.eth0.arp_announce=2
    mkdir -p "$WORK/www-$r"; echo "hello from $r" > "$WORK/www-$r/index.html"
    start_web $r
done

cat > "$WORK/lvsd.toml" <<TOML
[daemon]
state_dir = "$WORK/state"
listen = "127.0.0.1:9163"
resync_interval = "10s"

[[services]]
name = "web"
protocol = "tcp"
address = "$VIP"
port = 80
scheduler = "rr"
forward = "route"

[services.check]
type = "http"
path = "/"
interval = "1s"
timeout = "1s"
rise = 2
fall = 2

[[services.real_servers]]
address = "192.0.2.11"

[[services.real_servers]]
address = "192.0.2.12"
TOML
say "config ($WORK/lvsd.toml)"; cat "$WORK/lvsd.toml"
"$LVSD" check-config "$WORK/lvsd.toml"

say "starting lvsd in the director's namespace"
ip netns exec "${P}lb" "$LVSD" run --config "$WORK/lvsd.toml" > "$WORK/lvsd.log" 2>&1 &
LVSD_PID=$!; PIDS+=($LVSD_PID)
weights() { in_ns lb ipvsadm -Ln | awk '/->/ && $2 ~ /192.0.2/ {printf "%s=%s ", $2, $4}'; }
wait_for() { # description, condition command..., up to 30 s
    local what=$1; shift
    for _ in $(seq 300); do "$@" && return 0; sleep 0.1; done
    echo "timed out waiting for: $what"; tail -n 30 "$WORK/lvsd.log"; exit 1
}
wait_for "both servers in rotation" bash -c "[[ \"\$(ip netns exec ${P}lb ipvsadm -Ln | grep -c ' 1 ')\" == 2 ]]"
in_ns lb ipvsadm -Ln
requests() { for _ in 1 2 3 4 5 6; do in_ns cl curl -s -m 2 "http://$VIP/" || echo "(no answer)"; done; }

say "6 requests to the VIP (rr, both healthy)"
out1=$(requests); echo "$out1"

say "killing rs1's web server"
kill "${WEB[rs1]}"; t0=$(date +%s.%N)
wait_for "rs1 weight 0" bash -c "ip netns exec ${P}lb ipvsadm -Ln | grep -q '192.0.2.11:80 *Route *0 '"
echo "rs1 taken out after $(elapsed "$t0") s: $(weights)"
say "6 requests to the VIP (rs1 down)"
out2=$(requests); echo "$out2"

say "starting rs1's web server again"
start_web rs1; t0=$(date +%s.%N)
wait_for "rs1 weight 1" bash -c "ip netns exec ${P}lb ipvsadm -Ln | grep -q '192.0.2.11:80 *Route *1 '"
echo "rs1 back after $(elapsed "$t0") s: $(weights)"
say "6 requests to the VIP (both healthy again)"
out3=$(requests); echo "$out3"

say "lvsd's status and save file"
in_ns lb curl -s http://127.0.0.1:9163/status | head -c 600; echo
cat "$WORK/state/ipvsadm.rules"
say "lvsd's log (health changes)"
grep -E 'health_change|table_change' "$WORK/lvsd.log" || true
kill -TERM $LVSD_PID; wait $LVSD_PID || true

count() { grep -c "$1" <<<"$2" || true; }
a=$(count rs1 "$out1"); b=$(count rs2 "$out1"); c=$(count rs1 "$out2"); d=$(count rs2 "$out2")
e=$(count rs1 "$out3"); f=$(count rs2 "$out3")
echo
if [[ $a == 3 && $b == 3 && $c == 0 && $d == 6 && $e == 3 && $f == 3 ]]; then
    echo "LAB OK: balanced 3/3, rs1 down 0/6, rs1 back 3/3"
else
    echo "LAB FAILED: $a/$b, then $c/$d, then $e/$f"; exit 1
fi
