// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* XDP test programs.
 * xdp_drop_proto: drops IPv4 packets whose protocol is `drop_proto` (a global,
 *   ICMP by default; rewrite it with `--global drop_proto=06` to drop TCP instead)
 *   and counts the drops in `xdp_drops`; every other packet passes.
 * xdp_count_pass: counts every packet in `xdp_seen` and passes it.
 */
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <bpf/bpf_endian.h>
#include "common.h"

volatile const __u8 drop_proto = 1; /* IPPROTO_ICMP */

COUNTER_MAP(xdp_drops);
COUNTER_MAP(xdp_seen);

/* The IPv4 protocol of the frame, or -1 when it is not a whole IPv4 header. */
static __always_inline int ipv4_proto(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);

	if ((void *)(ip + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return -1;
	return ip->protocol;
}

SEC("xdp")
int xdp_drop_proto(struct xdp_md *ctx)
{
	if (ipv4_proto(ctx) != drop_proto)
		return XDP_PASS;
	bump(&xdp_drops);
	return XDP_DROP;
}

SEC("xdp")
int xdp_count_pass(struct xdp_md *ctx)
{
	bump(&xdp_seen);
	return XDP_PASS;
}

/* For dispatcher chains: counts IPv4 ICMP packets in `chain_hits` and returns
 * `ret_code` for them (XDP_PASS by default; --global ret_code=01000000 for XDP_DROP);
 * everything else passes uncounted. */
volatile const __u32 ret_code = XDP_PASS;

COUNTER_MAP(chain_hits);

SEC("xdp")
int xdp_chain(struct xdp_md *ctx)
{
	if (ipv4_proto(ctx) != 1 /* IPPROTO_ICMP */)
		return XDP_PASS;
	bump(&chain_hits);
	return ret_code;
}

/* Multi-buffer aware (section xdp.frags): counts every packet in `frags_seen`, passes. */
COUNTER_MAP(frags_seen);

SEC("xdp.frags")
int xdp_frags_count(struct xdp_md *ctx)
{
	bump(&frags_seen);
	return XDP_PASS;
}

char _license[] SEC("license") = "Dual BSD/GPL";
