// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* bpfman's TC dispatcher: the XDP dispatcher's scheme with TC return codes. Because
 * TC_ACT_UNSPEC is -1, the chain goes on when bit (1 << (ret + 1)) of
 * chain_call_actions[i] is set. An unreplaced slot returns TC_DISPATCHER_RETVAL (30).
 * Falling off the end returns TC_ACT_OK.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#define TC_DISPATCHER_VERSION 1
#define TC_DISPATCHER_MAGIC 84 /* 'T' */
#define TC_DISPATCHER_RETVAL 30
#define MAX_DISPATCHER_ACTIONS 10

struct tc_dispatcher_config {
	__u8 magic;
	__u8 dispatcher_version;
	__u8 num_progs_enabled;
	__u8 pad;
	__u32 chain_call_actions[MAX_DISPATCHER_ACTIONS];
	__u32 run_prios[MAX_DISPATCHER_ACTIONS];
};

volatile const struct tc_dispatcher_config conf = {};

#define SLOT(n)                                                      \
	__attribute__((noinline)) int prog##n(struct __sk_buff *skb)     \
	{                                                                \
		volatile int ret = TC_DISPATCHER_RETVAL;                     \
		if (!skb)                                                    \
			return TC_ACT_SHOT;                                      \
		return ret;                                                  \
	}

SLOT(0) SLOT(1) SLOT(2) SLOT(3) SLOT(4) SLOT(5) SLOT(6) SLOT(7) SLOT(8) SLOT(9)

__attribute__((noinline)) int compat_test(struct __sk_buff *skb)
{
	volatile int ret = TC_DISPATCHER_RETVAL;

	if (!skb)
		return TC_ACT_SHOT;
	return ret;
}

#define RUN(n)                                                       \
	if (num_progs_enabled < n + 1)                                   \
		goto out;                                                    \
	ret = prog##n(skb);                                              \
	if (ret < -1 || ret > 30 || !((1U << (ret + 1)) & conf.chain_call_actions[n])) \
		return ret;

SEC("classifier")
int tc_dispatcher(struct __sk_buff *skb)
{
	__u8 num_progs_enabled = conf.num_progs_enabled;
	int ret;

	RUN(0) RUN(1) RUN(2) RUN(3) RUN(4) RUN(5) RUN(6) RUN(7) RUN(8) RUN(9)
out:
	return TC_ACT_OK;
}

char _license[] SEC("license") = "GPL";
