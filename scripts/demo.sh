#!/usr/bin/env bash
# The main job, end to end on this machine (as root): build bpfman, start the daemon
# on a private runtime dir and socket, load a real XDP program that drops ICMP, attach it
# to a veth whose peer lives in a network namespace made for the demo, show ping stop,
# detach it, show ping come back, and clean everything up. Traffic stays on the veth.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "demo.sh: run as root (it loads eBPF programs)" >&2; exit 1; }

cargo build -q --bin bpfman
make -s -C bpf
bpfman=$PWD/target/debug/bpfman
work=$(mktemp -d /tmp/bpfman-demo.XXXXXX)
export BPFMAN_SOCKET=$work/bpfman.sock
ns=bpfman-demo-$$
daemon_pid=

cleanup() {
    set +e
    [ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null
    ip netns del "$ns" 2>/dev/null
    ip link del bdemo0 2>/dev/null
    # Pins keep programs alive after the daemon exits: remove them, then the mount.
    rm -rf "$work/run/fs/prog_"* "$work/run/fs/links" "$work/run/fs/maps" 2>/dev/null
    umount "$work/run/fs" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

echo "== starting the daemon (runtime dir $work/run, socket $BPFMAN_SOCKET)"
: > "$work/bpfman.toml"
"$bpfman" daemon --runtime-dir "$work/run" --config "$work/bpfman.toml" 2> "$work/daemon.log" &
daemon_pid=$!
for _ in $(seq 100); do [ -S "$BPFMAN_SOCKET" ] && break; sleep 0.1; done
"$bpfman" system info

echo "== a veth pair: bdemo0 (10.250.0.1) here, bdemo1 (10.250.0.2) in netns $ns"
ip netns add "$ns"
ip link add bdemo0 type veth peer name bdemo1
ip link set bdemo1 netns "$ns"
ip addr add 10.250.0.1/24 dev bdemo0 && ip link set bdemo0 up
ip -n "$ns" addr add 10.250.0.2/24 dev bdemo1 && ip -n "$ns" link set bdemo1 up
ping_peer() { ip netns exec "$ns" ping -c 2 -i 0.2 -W 1 10.250.0.1 | grep -E "packets"; }
ping_peer

echo "== load and attach xdp_drop_proto (drops ICMP)"
"$bpfman" load file --path "$PWD/target/bpf/xdp_test.bpf.o" --programs xdp:xdp_drop_proto \
    --application demo --metadata owner=demo
id=$("$bpfman" -o json list programs --application demo | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')
link=$("$bpfman" -o json attach "$id" xdp --iface bdemo0 --priority 50 | python3 -c 'import json,sys; print(json.load(sys.stdin)["link_id"])')
"$bpfman" list links
echo "-- ping with the program attached (expect 100% loss):"
ping_peer || true

echo "== detach link $link"
"$bpfman" detach "$link"
echo "-- ping after detach (expect 0% loss):"
ping_peer
"$bpfman" unload "$id"
"$bpfman" list programs
echo "== done"
