#!/usr/bin/env bash
# Dispatcher overhead benchmark (issue 3): bpfman's XDP dispatcher vs the program run
# directly vs libxdp's dispatcher (xdp-loader), in the VM where freplace works.
# Absolute figures under software emulation are meaningless; compare within one run.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
kernel=${BPFMAN_VM_KERNEL:-$(ls /boot/vmlinuz-*-amd64 2>/dev/null | sort -V | tail -n 1 || true)}
[ -n "$kernel" ] || { echo "bench-dispatcher: no /boot/vmlinuz-*-amd64" >&2; exit 1; }
make -s -C bpf
cargo build -q --release --bin bpfman
bin=$(cargo bench -q --bench dispatcher --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == "dispatcher" and m.get("executable"):
        print(m["executable"])')
[ -n "$bin" ] || { echo "bench-dispatcher: build failed" >&2; exit 1; }
vng --disable-kvm --memory 2G --cpus 2 --user root --run "$kernel" --exec "
    mount -t bpf bpf /sys/fs/bpf 2>/dev/null
    uname -r
    cd '$repo' && BENCH_REPEAT=${BENCH_REPEAT:-1000000} BENCH_SETUPS=${BENCH_SETUPS:-6} '$bin'
"
