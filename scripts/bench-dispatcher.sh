#!/usr/bin/env bash
# Dispatcher overhead benchmark (issue 3): bpfman's XDP dispatcher vs the program run
# directly vs libxdp's dispatcher (xdp-loader), in a VM where freplace works.
#
#   scripts/bench-dispatcher.sh                  instruction-count clock (default)
#   BENCH_CLOCK=wall scripts/bench-dispatcher.sh wall-clock time under emulation
#   BPFMAN_VM_KERNEL=/boot/vmlinuz-... ...       another kernel (default: the newest)
#
# BENCH_CLOCK=icount boots QEMU with `-icount shift=0`: the guest's clock advances one
# nanosecond per guest instruction executed, so BPF_PROG_TEST_RUN's "ns per run" is the
# number of x86 instructions one run executes: deterministic, and independent of where
# the emulator's translated code lands. BENCH_CLOCK=wall measures emulated wall time,
# which software emulation makes noisy (compare only within one run).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
kernel=${BPFMAN_VM_KERNEL:-$(ls /boot/vmlinuz-*-amd64 2>/dev/null | sort -V | tail -n 1 || true)}
[ -n "$kernel" ] || { echo "bench-dispatcher: no /boot/vmlinuz-*-amd64" >&2; exit 1; }
clock=${BENCH_CLOCK:-icount}
case "$clock" in
    icount) qemu=(--cpus 1 --qemu-opts "-icount shift=0"); repeat=${BENCH_REPEAT:-100000}; setups=${BENCH_SETUPS:-2} ;;
    wall) qemu=(--cpus 2); repeat=${BENCH_REPEAT:-1000000}; setups=${BENCH_SETUPS:-6} ;;
    *) echo "bench-dispatcher: BENCH_CLOCK is icount or wall" >&2; exit 1 ;;
esac
make -s -C bpf
cargo build -q --release --bin bpfman
bin=$(cargo bench -q --bench dispatcher --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == "dispatcher" and m.get("executable"):
        print(m["executable"])')
[ -n "$bin" ] || { echo "bench-dispatcher: build failed" >&2; exit 1; }
echo "bench-dispatcher: $kernel, clock $clock, $repeat runs per sample, $setups setups"
vng --disable-kvm --memory 2G "${qemu[@]}" --user root --run "$kernel" --exec "
    mount -t bpf bpf /sys/fs/bpf 2>/dev/null
    uname -r
    cd '$repo' && BENCH_CLOCK=$clock BENCH_REPEAT=$repeat BENCH_SETUPS=$setups '$bin'
"
