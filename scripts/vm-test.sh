#!/usr/bin/env bash
# Runs the suite's kernel-feature tests (kprobe/kretprobe, fentry/fexit) inside a VM
# booted with Debian's stock kernel, where those features work (the host kernel lacks
# them: ../shared/KERNEL.md). The VM sees this machine's files read-only; the tests
# write only under /tmp, which is the guest's own.
#
#   scripts/vm-test.sh [TEST_FILTER...]     (default: kprobe fentry dispatcher)
#
# Needs (installed by .ci/run): qemu-system-x86, linux-image-amd64, virtme-ng (pip).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

kernel=${BPFMAN_VM_KERNEL:-$(ls /boot/vmlinuz-*-amd64 2>/dev/null | sort -V | tail -n 1 || true)}
if [ -z "$kernel" ]; then
    echo "vm-test: no /boot/vmlinuz-*-amd64; install linux-image-amd64" >&2
    exit 1
fi
command -v vng >/dev/null || { echo "vm-test: vng not found; pip install virtme-ng" >&2; exit 1; }

filters=("$@")
[ ${#filters[@]} -gt 0 ] || filters=(kprobe fentry dispatcher)

make -s -C bpf
cargo build -q --bin bpfman
test_bin() {
    cargo test -q --test "$1" --no-run --message-format=json 2>/dev/null |
        python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == sys.argv[1] and m.get("executable"):
        print(m["executable"])' "$1"
}
bin=$(test_bin host)
crash=$(test_bin crash)
[ -n "$bin" ] && [ -n "$crash" ] || { echo "vm-test: could not build the test binaries" >&2; exit 1; }

echo "vm-test: booting $kernel (software emulation, ~1 min) to run: ${filters[*]}"
# In the guest the features must be there: a test that would skip fails instead.
vng --disable-kvm --memory 2G --cpus 2 --user root --run "$kernel" --exec "
    mount -t bpf bpf /sys/fs/bpf 2>/dev/null
    mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
    cd '$repo' && export BPFMAN_REQUIRE_FEATURES=kprobe,fentry,freplace &&
    '$bin' --test-threads=1 ${filters[*]} &&
    '$crash' --test-threads=1 --nocapture ${filters[*]}
"
