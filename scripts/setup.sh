#!/usr/bin/env bash
# Installs what building, the demo and the test suites need (Debian packages + virtme-ng).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq clang llvm libbpf-dev iproute2 iputils-ping make \
    qemu-system-x86 linux-image-amd64 busybox-static xdp-tools bpftool python3-pip \
    docker-registry apache2-utils buildah skopeo >/dev/null
command -v vng >/dev/null || pip install -q virtme-ng
echo "setup: done"
