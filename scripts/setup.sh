#!/usr/bin/env bash
# Installs what building, the demo and the test suites need (Debian packages + virtme-ng, and
# the Kubernetes control-plane binaries the Kubernetes suites run).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq clang llvm libbpf-dev iproute2 iputils-ping make \
    qemu-system-x86 linux-image-amd64 busybox-static xdp-tools bpftool python3-pip \
    docker-registry apache2-utils buildah skopeo \
    containerd runc containernetworking-plugins >/dev/null
# containerd is run by the agent suite's test node only (its own config, socket and dirs):
# the package's own service, where systemd runs it, stays off.
systemctl disable --now containerd >/dev/null 2>&1 || true
# Prometheus for the metrics suite (tests start their own on 127.0.0.1); the package's own
# service, where systemd runs it, would listen on every address: keep it off.
apt-get install -y -qq --no-install-recommends prometheus >/dev/null
systemctl disable --now prometheus >/dev/null 2>&1 || true
# A second VM kernel with both TCX and freplace (the host has TCX without freplace, 6.1
# freplace without TCX): Debian's 6.12 from bookworm-backports, beside the 6.1 one.
if [ ! -e /etc/apt/sources.list.d/backports.sources ] && grep -q bookworm /etc/os-release; then
    cat >/etc/apt/sources.list.d/backports.sources <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    apt-get update -qq
fi
if ! ls /boot/vmlinuz-6.1[2-9]* >/dev/null 2>&1; then
    apt-get install -y -qq -t bookworm-backports linux-image-amd64 >/dev/null
fi
command -v vng >/dev/null || pip install -q virtme-ng
# The Kubernetes test control plane (etcd, kube-apiserver, kube-controller-manager, kubectl),
# built from the Go module proxy with the machine's Go (1.26; Debian's 1.19 is too old for
# Kubernetes 1.37). Cached outside the clone: about 10-14 minutes of CPU on a fresh machine, once.
"$(dirname "$0")/k8s-bins.sh"
# The kubelet for the agent suite's real node (pods through containerd): about 4 minutes once.
"$(dirname "$0")/k8s-bins.sh" kubelet
echo "setup: done"
