// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* bpfman's XDP dispatcher, following the libxdp multi-prog protocol (dispatcher
 * version 2): ten noinline slot functions that user programs replace with freplace
 * (BPF_PROG_TYPE_EXT), and a config in .rodata that the daemon writes before load.
 * Slot i runs when num_progs_enabled > i; the chain goes on only when bit (1 << ret)
 * of chain_call_actions[i] is set, otherwise the dispatcher returns ret. A slot that
 * was never replaced returns XDP_DISPATCHER_RETVAL (31), whose bit is always set.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define XDP_METADATA_SECTION "xdp_metadata"
#define XDP_DISPATCHER_VERSION 2
#define XDP_DISPATCHER_MAGIC 236
#define XDP_DISPATCHER_RETVAL 31
#define MAX_DISPATCHER_ACTIONS 10

struct xdp_dispatcher_config {
	__u8 magic;
	__u8 dispatcher_version;
	__u8 num_progs_enabled;
	__u8 is_xdp_frags;
	__u32 chain_call_actions[MAX_DISPATCHER_ACTIONS];
	__u32 run_prios[MAX_DISPATCHER_ACTIONS];
	__u32 program_flags[MAX_DISPATCHER_ACTIONS];
};

/* Written by the daemon before load; the verifier prunes the unused slots. */
volatile const struct xdp_dispatcher_config conf = {};

#define SLOT(n)                                                      \
	__attribute__((noinline)) int prog##n(struct xdp_md *ctx)        \
	{                                                                \
		volatile int ret = XDP_DISPATCHER_RETVAL;                    \
		if (!ctx)                                                    \
			return XDP_ABORTED;                                      \
		return ret;                                                  \
	}

SLOT(0) SLOT(1) SLOT(2) SLOT(3) SLOT(4) SLOT(5) SLOT(6) SLOT(7) SLOT(8) SLOT(9)

__attribute__((noinline)) int compat_test(struct xdp_md *ctx)
{
	volatile int ret = XDP_DISPATCHER_RETVAL;

	if (!ctx)
		return XDP_ABORTED;
	return ret;
}

#define RUN(n)                                                       \
	if (num_progs_enabled < n + 1)                                   \
		goto out;                                                    \
	ret = prog##n(ctx);                                              \
	if (!((1U << ret) & conf.chain_call_actions[n]))                 \
		return ret;

#define DISPATCH(ctx)                                                \
	__u8 num_progs_enabled = conf.num_progs_enabled;                 \
	int ret;                                                         \
                                                                     \
	RUN(0) RUN(1) RUN(2) RUN(3) RUN(4) RUN(5) RUN(6) RUN(7) RUN(8) RUN(9) \
out:                                                                 \
	return XDP_PASS;

SEC("xdp")
int xdp_dispatcher(struct xdp_md *ctx)
{
	DISPATCH(ctx)
}

/* The same dispatcher loaded with BPF_F_XDP_HAS_FRAGS, used when every program on the
 * interface supports multi-buffer packets (their section is "xdp.frags"). */
SEC("xdp.frags")
int xdp_dispatcher_frags(struct xdp_md *ctx)
{
	DISPATCH(ctx)
}

char _license[] SEC("license") = "GPL";
__uint(dispatcher_version, XDP_DISPATCHER_VERSION) SEC(XDP_METADATA_SECTION);
