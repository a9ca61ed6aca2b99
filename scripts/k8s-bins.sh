#!/usr/bin/env bash
# Builds the Kubernetes control-plane binaries the tests run (etcd, kube-apiserver,
# kube-controller-manager, kubectl; kubelet and kube-scheduler on request) from the Go
# module proxy, using the pinned wrapper modules in tests/k8s/{kube,etcd}. Binaries are
# cached outside the clone, keyed by the pinned versions, so only the first run on a
# machine pays (about 14 minutes of CPU); later runs return at once.
#
#   scripts/k8s-bins.sh [--print-dir] [component...]
#
# The cache root is $BPFMAN_TEST_CACHE (default /var/cache/bpfman-test). The tests read
# the same directory (or $BPFMAN_K8S_BIN when set).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
kube_mod="$here/tests/k8s/kube"
etcd_mod="$here/tests/k8s/etcd"
k8s_ver="$(awk '{for(i=1;i<NF;i++) if($i=="k8s.io/kubernetes" && $(i+1)~/^v/){print $(i+1); exit}}' "$kube_mod/go.mod")"
etcd_ver="$(awk '{for(i=1;i<NF;i++) if($i=="go.etcd.io/etcd/server/v3" && $(i+1)~/^v/){print $(i+1); exit}}' "$etcd_mod/go.mod")"
[ -n "$k8s_ver" ] && [ -n "$etcd_ver" ] || { echo "k8s-bins: cannot read pinned versions from tests/k8s/*/go.mod" >&2; exit 1; }
dir="${BPFMAN_K8S_BIN:-${BPFMAN_TEST_CACHE:-/var/cache/bpfman-test}/k8s-$k8s_ver-etcd-$etcd_ver/bin}"
if [ "${1:-}" = "--print-dir" ]; then echo "$dir"; exit 0; fi
components=("$@")
[ ${#components[@]} -gt 0 ] || components=(etcd kube-apiserver kube-controller-manager kubectl)
command -v go >/dev/null || { echo "k8s-bins: Go is not installed; Go 1.26 or newer is needed once to build the test control plane" >&2; exit 1; }
gominor="$(go env GOVERSION | sed -E 's/^go1\.([0-9]+).*/\1/')"
if [ "${gominor:-0}" -lt 26 ] 2>/dev/null; then
    echo "k8s-bins: $(go env GOVERSION) is too old: Kubernetes ${k8s_ver} needs Go 1.26 or newer" >&2
    exit 1
fi
mkdir -p "$dir"
export GOFLAGS="-mod=readonly -buildvcs=false"
for c in "${components[@]}"; do
    [ -x "$dir/$c" ] && continue
    start=$(date +%s)
    case "$c" in
        etcd)
            (cd "$etcd_mod" && go build -o "$dir/.$c.tmp" go.etcd.io/etcd/server/v3) ;;
        kube-apiserver|kube-controller-manager|kubectl|kube-scheduler|kubelet)
            (cd "$kube_mod" && go build -ldflags "-X k8s.io/component-base/version.gitVersion=$k8s_ver" \
                -o "$dir/.$c.tmp" "k8s.io/kubernetes/cmd/$c") ;;
        *) echo "k8s-bins: unknown component $c" >&2; exit 1 ;;
    esac
    mv "$dir/.$c.tmp" "$dir/$c"
    echo "k8s-bins: built $c in $(( $(date +%s) - start ))s -> $dir/$c"
done
echo "$dir"
