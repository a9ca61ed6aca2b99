#!/usr/bin/env bash
# Runs the suite's kernel-feature tests (kprobe/kretprobe, fentry/fexit, dispatchers)
# inside VMs booted with Debian's stock kernels, where those features work (the host
# kernel lacks them: ../shared/KERNEL.md). Each kernel series in /boot gets one boot:
# 6.1 (freplace, no TCX: the classic clsact TC dispatcher) and 6.12 from backports
# (freplace and TCX: the TC dispatcher behind a TCX link). The VM sees this machine's
# files read-only; the tests write only under /tmp, which is the guest's own.
#
#   scripts/vm-test.sh [TEST_FILTER...]     (default: kprobe fentry dispatcher lsm)
#   BPFMAN_VM_KERNEL=/boot/vmlinuz-...      one kernel only
#
# Needs (installed by .ci/run): qemu-system-x86, linux-image-amd64 (bookworm and
# bookworm-backports), virtme-ng (pip).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

# The newest kernel of each series (6.1, 6.12, ...), or the one asked for.
if [ -n "${BPFMAN_VM_KERNEL:-}" ]; then
    kernels=("$BPFMAN_VM_KERNEL")
else
    mapfile -t kernels < <(ls /boot/vmlinuz-*-amd64 2>/dev/null | sort -V |
        awk -F- '{split($2, v, "."); s = v[1] "." v[2]; last[s] = $0; if (!(s in seen)) { seen[s] = 1; order[++n] = s } }
                 END { for (i = 1; i <= n; i++) print last[order[i]] }')
fi
if [ ${#kernels[@]} -eq 0 ]; then
    echo "vm-test: no /boot/vmlinuz-*-amd64; install linux-image-amd64" >&2
    exit 1
fi
command -v vng >/dev/null || { echo "vm-test: vng not found; pip install virtme-ng" >&2; exit 1; }

filters=("$@")
[ ${#filters[@]} -gt 0 ] || filters=(kprobe fentry dispatcher lsm modules)

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

for kernel in "${kernels[@]}"; do
    # In the guest the features must be there: a test that would skip fails instead.
    require=kprobe,fentry,freplace,lsm
    version=$(basename "$kernel" | sed 's/^vmlinuz-//')
    if [ "$(printf '%s\n' 6.6 "$version" | sort -V | head -n 1)" = 6.6 ]; then
        require=$require,tcx
    fi
    echo "vm-test: booting $kernel (software emulation, ~1 min) to run: ${filters[*]} (requires $require)"
    vng --disable-kvm --memory 2G --cpus 2 --user root --run "$kernel" --exec "
        mount -t bpf bpf /sys/fs/bpf 2>/dev/null
        mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
        cd '$repo' && export BPFMAN_REQUIRE_FEATURES=$require &&
        '$bin' --test-threads=1 ${filters[*]} &&
        '$crash' --test-threads=1 --nocapture ${filters[*]}
    " 2>&1 | cat  # through a pipe: vng reopens its output, which truncates a log file
done
