#!/usr/bin/env bash
# Builds the bpfman image (daemon + CLI `/bpfman`, `/bpfman-agent`, `/bpfman-operator`) with
# buildah from scratch: the release binaries, the shared libraries they link (from the build
# machine, found with ldd), and the CA bundle for registry pulls. No base image, no registry.
#   scripts/build-image.sh [IMAGE] [OCI_ARCHIVE]
# IMAGE defaults to localhost/bpfman:latest; the OCI archive (default
# target/bpfman-image.oci.tar) is what `ctr -n k8s.io images import` takes on a node without a
# registry, or `skopeo copy oci-archive:... docker://REGISTRY/...` pushes.
# BPFMAN_IMAGE_PROFILE=debug uses target/debug (faster to build, for local tries).
set -euo pipefail
cd "$(dirname "$0")/.."
image="${1:-localhost/bpfman:latest}"
archive="${2:-target/bpfman-image.oci.tar}"
profile="${BPFMAN_IMAGE_PROFILE:-release}"
if [ "$profile" = release ]; then
    cargo build -q --release -p bpfman-cli -p bpfman-agent -p bpfman-operator
else
    cargo build -q -p bpfman-cli -p bpfman-agent -p bpfman-operator
fi
bins=(target/"$profile"/bpfman target/"$profile"/bpfman-agent target/"$profile"/bpfman-operator)
work="$(mktemp -d /tmp/bpfman-image.XXXXXX)"
trap 'rm -rf "$work"' EXIT
bh() { buildah --root "$work/root" --runroot "$work/runroot" --storage-driver vfs "$@"; }
c="$(bh from scratch)"
for b in "${bins[@]}"; do
    bh copy "$c" "$b" "/$(basename "$b")" >/dev/null
done
# The libraries the binaries link, at the paths the loader looks for them.
libs="$(for b in "${bins[@]}"; do ldd "$b"; done | grep -oE '/[^ ]+\.so[^ ]*' | sort -u)"
for l in $libs; do
    bh copy "$c" "$(readlink -f "$l")" "$l" >/dev/null
done
bh copy "$c" /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt >/dev/null
# The daemon's runtime and config dirs and /tmp exist in the image; everything else is mounted.
mk="$work/dirs"
mkdir -p "$mk/etc/bpfman" "$mk/run/bpfman" "$mk/tmp" "$mk/sys/fs/bpf"
chmod 1777 "$mk/tmp"
bh copy "$c" "$mk/" / >/dev/null
bh config --entrypoint '["/bpfman"]' --cmd '["daemon"]' \
    --label org.opencontainers.image.title=bpfman \
    --label org.opencontainers.image.source=https://github.com/bpfman/bpfman "$c"
bh commit -q "$c" "$image" >/dev/null
rm -f "$archive"
bh push -q "$image" "oci-archive:$archive:$image"
echo "build-image: $image in $archive"
