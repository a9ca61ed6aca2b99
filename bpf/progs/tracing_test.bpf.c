// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Tracing test programs, each counting its events in its own map.
 * The `shared_hits` map is what map-sharing tests share between two loads.
 */
#include "common.h"

COUNTER_MAP(tp_hits);
COUNTER_MAP(shared_hits);
COUNTER_MAP(kprobe_hits);
COUNTER_MAP(kretprobe_hits);
COUNTER_MAP(uprobe_hits);
COUNTER_MAP(uretprobe_hits);
COUNTER_MAP(fentry_hits);
COUNTER_MAP(fexit_hits);

/* Only events of this thread group count (0 = all); set with --global. */
volatile const __u32 target_tgid = 0;

static __always_inline int mine(void)
{
	return !target_tgid || (bpf_get_current_pid_tgid() >> 32) == target_tgid;
}

SEC("tracepoint/syscalls/sys_enter_getpid")
int tp_count(void *ctx)
{
	if (mine())
		bump(&tp_hits);
	return 0;
}

/* Writes into shared_hits only: loaded a second time with --map-owner-id, its
 * increments land in the owner's map. */
SEC("tracepoint/syscalls/sys_enter_getppid")
int tp_shared(void *ctx)
{
	if (mine())
		bump(&shared_hits);
	return 0;
}

SEC("kprobe")
int kprobe_count(void *ctx)
{
	if (mine())
		bump(&kprobe_hits);
	return 0;
}

SEC("kretprobe")
int kretprobe_count(void *ctx)
{
	if (mine())
		bump(&kretprobe_hits);
	return 0;
}

SEC("uprobe")
int uprobe_count(void *ctx)
{
	bump(&uprobe_hits);
	return 0;
}

SEC("uretprobe")
int uretprobe_count(void *ctx)
{
	bump(&uretprobe_hits);
	return 0;
}

SEC("fentry")
int fentry_count(void *ctx)
{
	if (mine())
		bump(&fentry_hits);
	return 0;
}

SEC("fexit")
int fexit_count(void *ctx)
{
	if (mine())
		bump(&fexit_hits);
	return 0;
}

char _license[] SEC("license") = "GPL";
