// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* One object with a program of every type, named as in upstream's `app-test` bytecode
 * (the image its operator samples load), for the local equivalents of those samples
 * (examples/kubernetes/samples). Each program counts its events in `app_hits[<type>]` and
 * lets traffic through; GLOBAL_u8 and GLOBAL_u32 are the globals the samples set.
 */
#include "common.h"

volatile const __u8 GLOBAL_u8 = 0;
volatile const __u32 GLOBAL_u32 = 0;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, 10);
} app_hits SEC(".maps");

static __always_inline void hit(__u32 slot)
{
	__u64 *v = bpf_map_lookup_elem(&app_hits, &slot);
	if (v)
		__sync_fetch_and_add(v, 1 + (GLOBAL_u8 & 0) + (GLOBAL_u32 & 0));
}

SEC("kprobe")
int kprobe_test(void *ctx) { hit(0); return 0; }

SEC("kretprobe")
int kretprobe_test(void *ctx) { hit(1); return 0; }

SEC("tracepoint/syscalls/sys_enter_openat")
int tracepoint_test(void *ctx) { hit(2); return 0; }

SEC("classifier")
int tc_pass_test(struct __sk_buff *skb) { hit(3); return -1; /* TC_ACT_UNSPEC: next */ }

SEC("classifier")
int tcx_next_test(struct __sk_buff *skb) { hit(4); return -1; /* TCX_NEXT */ }

SEC("uprobe")
int uprobe_test(void *ctx) { hit(5); return 0; }

SEC("uretprobe")
int uretprobe_test(void *ctx) { hit(6); return 0; }

SEC("xdp")
int xdp_pass_test(struct xdp_md *ctx) { hit(7); return XDP_PASS; }

SEC("fentry")
int fentry_test(void *ctx) { hit(8); return 0; }

SEC("fexit")
int fexit_test(void *ctx) { hit(9); return 0; }

char _license[] SEC("license") = "GPL";
