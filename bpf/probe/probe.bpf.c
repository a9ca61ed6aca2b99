// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Feature probes, loaded once by the daemon at start-up (never attached to a hook):
 * - probe_xdp calls the global function probe_target, which probe_ext replaces
 *   (freplace, BPF_PROG_TYPE_EXT): the mechanism the XDP/TC dispatchers need;
 * - probe_fentry is loaded against a kernel function (BPF_PROG_TYPE_TRACING);
 * - probe_lsm is loaded against the file_open LSM hook (BPF_PROG_TYPE_LSM).
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

__attribute__((noinline)) int probe_target(struct xdp_md *ctx)
{
	volatile int ret = XDP_PASS;

	if (!ctx)
		return XDP_ABORTED;
	return ret;
}

SEC("xdp")
int probe_xdp(struct xdp_md *ctx)
{
	return probe_target(ctx);
}

SEC("freplace/probe_target")
int probe_ext(struct xdp_md *ctx)
{
	return XDP_PASS;
}

SEC("fentry")
int probe_fentry(void *ctx)
{
	return 0;
}

SEC("lsm/file_open")
int probe_lsm(void *ctx)
{
	return 0;
}

char _license[] SEC("license") = "GPL";
