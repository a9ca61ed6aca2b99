#!/usr/bin/env bash
# The whole test suite, as CI runs it (needs root):
#   1. formatting and lints;
#   2. unit tests, the host integration suite (real daemon, CLI, kernel, veth/netns) and the
#      Kubernetes suites (CRDs and types against a real etcd + kube-apiserver + controller-manager);
#   3. the kernel-feature tests (kprobe, fentry/fexit, LSM, dispatchers) in VMs with stock kernels.
# Set BPFMAN_SKIP_VM=1 to skip step 3 (it says so when skipped).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "test.sh: the suites load eBPF programs and create network namespaces: run as root" >&2
    exit 1
fi
mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing

echo "== fmt and clippy"
cargo fmt --all -- --check
cargo clippy -q --all-targets -- -D warnings

echo "== Kubernetes control-plane binaries (built once, cached outside the clone)"
scripts/k8s-bins.sh
scripts/k8s-bins.sh kubelet

echo "== unit tests, host integration suite, Kubernetes suites (real etcd + kube-apiserver)"
make -s -C bpf
# Every package's binaries: the agent suites run the real bpfman-agent, which cargo does not
# build for another package's integration tests.
cargo build --workspace --bins
cargo test --workspace --no-fail-fast 2>&1 | tee /tmp/bpfman-host-tests.log
grep -q "test result: ok" /tmp/bpfman-host-tests.log

if [ "${BPFMAN_SKIP_VM:-0}" = 1 ]; then
    echo "== SKIPPED: VM suite (BPFMAN_SKIP_VM=1); kprobe and fentry/fexit were not exercised"
else
    echo "== VM suite (stock kernels 6.1 and 6.12: kprobe, kretprobe, fentry, fexit, LSM, XDP and TC dispatchers, no module loads by interface name, dispatcher crash test)"
    scripts/vm-test.sh
fi
