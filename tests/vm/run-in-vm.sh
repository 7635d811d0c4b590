#!/bin/bash
# run-in-vm.sh: run CMD as root in a throw-away QEMU/TCG VM booting the distribution kernel
# (IPVS as modules); exit with CMD's exit code (124 timeout, 125 VM failure).
#   tests/vm/run-in-vm.sh --setup          # once per machine, as root (apt)
#   tests/vm/run-in-vm.sh CMD [ARGS...]    # e.g. tests/vm/run-in-vm.sh .venv/bin/pytest tests/integration
# Guest root = host / read-only (9p) + tmpfs overlay; $VM_WORKDIR (default: this repository)
# is shared read-write.  The caller's env and cwd are kept; stdin=/dev/null; stdout+stderr
# stream to our stdout.  No NIC.  The kernel's module autoloader works (modprobe in the guest
# root), and VM_MODULES are loaded before CMD starts.
# Knobs: VM_MEM (2G) VM_CPUS (2) VM_CPU (the CPU model, max) VM_TIMEOUT (1800 s) VM_MODULES VM_CACHE, VM_CONSOLE (a file
# to keep the guest kernel's console log in), VM_APPEND (more kernel arguments, e.g. loglevel=7).
set -euo pipefail
if [[ ${1:-} == --setup ]]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    exec apt-get install -y -q --no-install-recommends qemu-system-x86 linux-image-amd64 \
        busybox-static kmod cpio ipvsadm iproute2 procps curl
fi
[[ ${1:-} == -- ]] && shift
(( $# )) || { echo "usage: $0 --setup | CMD [ARGS...]" >&2; exit 2; }

KVER=$(ls -d /lib/modules/*/kernel/net/netfilter/ipvs/ip_vs.ko 2>/dev/null | cut -d/ -f4 | sort -V | tail -n1 || true)
[[ -n $KVER && -x /bin/busybox ]] && command -v qemu-system-x86_64 >/dev/null \
    || { echo "run-in-vm: run '$0 --setup' first (as root)" >&2; exit 2; }
MODS=/lib/modules/$KVER/kernel
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
WORKDIR=$(realpath "${VM_WORKDIR:-$REPO}"); [[ $WORKDIR != / ]] || { echo "VM_WORKDIR=/ unsupported" >&2; exit 2; }
# Every scheduler the kernel ships, the SIP persistence engine, and what the labs need.
# (SCTP support is built into ip_vs itself.)
PRELOAD=${VM_MODULES:-"ip_vs ip_vs_rr ip_vs_wrr ip_vs_lc ip_vs_wlc ip_vs_lblc ip_vs_lblcr ip_vs_dh
    ip_vs_sh ip_vs_sed ip_vs_nq ip_vs_fo ip_vs_ovf ip_vs_mh ip_vs_pe_sip veth bridge dummy"}
PRELOAD=$(echo $PRELOAD)
CPUS=${VM_CPUS:-2}

# Uncompressed vmlinux boots via PVH: no BIOS/xz stage, ~1.5 s faster under TCG.
CACHE=${VM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/run-in-vm}; KERNEL=$CACHE/vmlinux-$KVER
if [[ ! -s $KERNEL ]]; then
    mkdir -p "$CACHE" 2>/dev/null || true
    python3 -c 'import lzma,sys; d=open(sys.argv[1],"rb").read(); i=d.find(b"\xfd7zXZ\0")
open(sys.argv[2],"wb").write(lzma.LZMADecompressor().decompress(d[i:]))' \
        "/boot/vmlinuz-$KVER" "$KERNEL.tmp" 2>/dev/null && mv "$KERNEL.tmp" "$KERNEL" \
        || KERNEL=/boot/vmlinuz-$KVER
fi

# Bytecode for the shared tree's Python, compiled here where CPU is ~10x cheaper than in the
# guest: without it (PYTHONDONTWRITEBYTECODE=1, as this machine's environment sets it, writes
# none for the editable checkout) every lvsd, ctl and pytest process in the guest compiles lvsd
# from source anew, seconds per start under TCG. compileall writes .pyc whatever that variable says.
PY=$REPO/.venv/bin/python; [[ -x $PY ]] || PY=python3
for tree in lvsd tests bench; do
    [[ -d $WORKDIR/$tree ]] && { "$PY" -m compileall -q "$WORKDIR/$tree" >/dev/null || true; }
done

RUN=$(mktemp -d "${TMPDIR:-/tmp}/run-in-vm.XXXXXX"); PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null; [[ -n ${VM_CONSOLE:-} ]] && cp "$RUN/console" "$VM_CONSOLE"; rm -rf "$RUN"' EXIT
trap 'exit 130' INT TERM
IR=$RUN/ir; mkdir -p "$IR"/{bin,proc,sys,dev,lower,rw,newroot,mods}
cp /bin/busybox "$IR/bin/"
ORDER="virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci netfs fscache 9pnet 9pnet_virtio 9p overlay virtio_console"
for m in $ORDER; do
    ko=$(find "$MODS" -name "$m.ko" | head -n1)
    [[ -n $ko ]] || { echo "run-in-vm: module $m not found under $MODS" >&2; exit 125; }
    cp "$ko" "$IR/mods/"
done
{   export -p | grep -vE '^declare -x (BASHOPTS|SHELLOPTS|SHLVL|PWD|OLDPWD|_)='
    printf 'export RUN_IN_VM=1\ncd %q || exit 125\nexec' "$(pwd -P)"; printf ' %q' "$@"; echo
} > "$IR/cmd.sh"
# The kernel runs its module loader in PID 1's root (this initramfs): hand it to the real one.
printf '#!/bin/busybox sh\nexec /bin/busybox chroot /newroot /sbin/modprobe "$@"\n' > "$IR/modprobe"
chmod +x "$IR/modprobe"
cat > "$IR/init" <<EOF
#!/bin/busybox sh
B=/bin/busybox R=/newroot L="-t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=loose"
\$B mount -t proc p /proc; \$B mount -t sysfs s /sys; \$B mount -t devtmpfs d /dev
die() { echo "run-in-vm: \$*"; echo 125 >/dev/ttyS1; \$B poweroff -f; }
for m in $ORDER; do \$B insmod /mods/\$m.ko; done
\$B mount \$L,ro hostroot /lower || die 9p; \$B mount -t tmpfs t /rw; \$B mkdir /rw/u /rw/w
\$B mount -t overlay -o lowerdir=/lower,upperdir=/rw/u,workdir=/rw/w o \$R || die overlay
\$B mount \$L work "\$R$WORKDIR" || die workdir
\$B mount -t proc p \$R/proc; \$B mount -t sysfs s \$R/sys; \$B mount -t devtmpfs d \$R/dev
\$B mount -t cgroup2 c \$R/sys/fs/cgroup; \$B mount -t tmpfs t \$R/run; \$B mkdir -p \$R/run/vm \$R/dev/pts
\$B mount -t devpts d \$R/dev/pts; \$B mkdir -p \$R/dev/shm; \$B mount -t tmpfs t \$R/dev/shm
\$B ln -sf /proc/self/fd \$R/dev/fd; for i in 0:stdin 1:stdout 2:stderr; do \$B ln -sf /proc/self/fd/\${i%:*} \$R/dev/\${i#*:}; done
\$B cp /cmd.sh \$R/run/vm/; \$B hostname ipvsvm; \$B ip link set lo up
echo /modprobe > /proc/sys/kernel/modprobe
OUT=/dev/console   # the virtio-serial port named "out": not a tty (no colours, no CRLF)
for p in /sys/class/virtio-ports/*; do [ "\$(\$B cat \$p/name)" = out ] && OUT=/dev/\${p##*/}; done
if ! \$B chroot \$R /sbin/modprobe -a $PRELOAD 2>/dev/null; then
    for m in $PRELOAD; do \$B chroot \$R /sbin/modprobe \$m || echo "run-in-vm: modprobe \$m failed" >\$OUT; done
fi
\$B chroot \$R /bin/bash /run/vm/cmd.sh </dev/null >\$OUT 2>&1
echo \$? >/dev/ttyS1; \$B sync; \$B poweroff -f
EOF
chmod +x "$IR/init"; (cd "$IR" && find . | cpio -o -H newc --quiet) > "$RUN/initrd"

# Guest clock: HPET, whose rate QEMU fixes, rather than the TSC, whose rate the guest measures at
# boot; on a busy host that measurement can be off many times over, and every timeout with it.
# guest output: virtio-serial port -> FIFO -> cat -> our stdout
# (a 'stdio' chardev never reports "connected" to a non-console port: guest writes hang)
mkfifo "$RUN/out"; cat "$RUN/out" & CAT=$!; PIDS+=($CAT); : > "$RUN/rc"
timeout -k 5 "${VM_TIMEOUT:-1800}" qemu-system-x86_64 -accel tcg,thread=multi -cpu "${VM_CPU:-max}" \
    -machine q35 -m "${VM_MEM:-2G}" -smp "$CPUS" \
    -nodefaults -no-user-config -display none -no-reboot -kernel "$KERNEL" -initrd "$RUN/initrd" \
    -append "console=ttyS0 loglevel=5 panic=-1 rdinit=/init clocksource=hpet tsc=reliable no_timer_check random.trust_cpu=on ${VM_APPEND:-}" \
    -serial "file:$RUN/console" -serial "file:$RUN/rc" \
    -fsdev local,id=r,path=/,security_model=none,readonly=on,multidevs=remap \
    -device virtio-9p-pci,fsdev=r,mount_tag=hostroot \
    -fsdev "local,id=w,path=$WORKDIR,security_model=none,multidevs=remap" \
    -device virtio-9p-pci,fsdev=w,mount_tag=work \
    -device virtio-serial-pci -chardev "file,id=out,path=$RUN/out" \
    -device virtserialport,chardev=out,name=out </dev/null & PIDS+=($!)
set +e; wait $!; QRC=$?
exec 4<>"$RUN/out"; exec 4>&-; wait $CAT   # unblock cat if qemu never opened the FIFO
RC=$(tr -dc 0-9 < "$RUN/rc")
[[ -n $RC ]] && exit "$RC"
echo "run-in-vm: no exit code from VM (qemu/timeout rc=$QRC); console tail:" >&2
tail -n 80 "$RUN/console" >&2
[[ $QRC == 124 || $QRC == 137 ]] && exit 124; exit 125
