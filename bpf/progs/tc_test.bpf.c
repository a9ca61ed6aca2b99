// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* TC/TCX test programs (section "classifier", as aya's loader expects).
 * tc_drop_icmp: drops IPv4 ICMP (TC_ACT_SHOT), counts drops in `tc_drops`,
 *   and lets everything else go on (TCX_NEXT, i.e. TC_ACT_UNSPEC).
 * tc_count: counts every packet in `tc_seen` and lets it go on.
 * tc_chain: for dispatcher chains: counts IPv4 ICMP packets in `chain_hits` and returns
 *   `ret_code` for them (TC_ACT_OK by default; --global ret_code=02000000 for
 *   TC_ACT_SHOT); everything else gets TC_ACT_OK uncounted.
 */
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_endian.h>
#include "common.h"

COUNTER_MAP(tc_drops);
COUNTER_MAP(tc_seen);

SEC("classifier")
int tc_drop_icmp(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);

	if ((void *)(ip + 1) > end)
		return TC_ACT_UNSPEC;
	if (eth->h_proto != bpf_htons(ETH_P_IP) || ip->protocol != IPPROTO_ICMP)
		return TC_ACT_UNSPEC;
	bump(&tc_drops);
	return TC_ACT_SHOT;
}

SEC("classifier")
int tc_count(struct __sk_buff *skb)
{
	bump(&tc_seen);
	return TC_ACT_UNSPEC;
}

volatile const __s32 ret_code = TC_ACT_OK;

COUNTER_MAP(chain_hits);

SEC("classifier")
int tc_chain(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = data + sizeof(*eth);

	if ((void *)(ip + 1) > end)
		return TC_ACT_OK;
	if (eth->h_proto != bpf_htons(ETH_P_IP) || ip->protocol != IPPROTO_ICMP)
		return TC_ACT_OK;
	bump(&chain_hits);
	return ret_code;
}

char _license[] SEC("license") = "Dual BSD/GPL";
