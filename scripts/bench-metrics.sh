#!/usr/bin/env bash
# Metrics benchmarks (issue 13), numbers in docs/benchmarks.md:
#
#   scripts/bench-metrics.sh            scrape time and size with 1,000 programs (host)
#   BENCH_PROGRAMS=N scripts/bench-metrics.sh
#   scripts/bench-metrics.sh stats      per-run cost of kernel run statistics, in a VM with
#                                       the instruction-count clock (`-icount shift=0`: one
#                                       guest "ns" per guest instruction executed)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
make -s -C bpf
cargo build -q --release --bin bpfman
bin=$(cargo bench -q -p bpfman-cli --bench metrics --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == "metrics" and m.get("executable"):
        print(m["executable"])')
[ -n "$bin" ] || { echo "bench-metrics: build failed" >&2; exit 1; }
case "${1:-scrape}" in
    scrape) "$bin" scrape ;;
    stats)
        kernel=${BPFMAN_VM_KERNEL:-$(ls /boot/vmlinuz-*-amd64 2>/dev/null | sort -V | tail -n 1 || true)}
        [ -n "$kernel" ] || { echo "bench-metrics: no /boot/vmlinuz-*-amd64" >&2; exit 1; }
        repeat=${BENCH_REPEAT:-100000}
        echo "bench-metrics stats: $kernel, icount clock, $repeat runs per sample"
        vng --disable-kvm --memory 2G --cpus 1 --qemu-opts "-icount shift=0" --user root --run "$kernel" --exec "
            mount -t bpf bpf /sys/fs/bpf 2>/dev/null
            uname -r
            cd '$repo' && BENCH_REPEAT=$repeat '$bin' stats
        " ;;
    *) echo "usage: bench-metrics.sh [scrape|stats]" >&2; exit 1 ;;
esac
