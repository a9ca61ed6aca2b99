/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Shared helpers for bpfman's test programs. */
#pragma once
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

/* A one-slot u64 array used as a counter. */
#define COUNTER_MAP(name)                    \
	struct {                                 \
		__uint(type, BPF_MAP_TYPE_ARRAY);    \
		__type(key, __u32);                  \
		__type(value, __u64);                \
		__uint(max_entries, 1);              \
	} name SEC(".maps")

static __always_inline void bump(void *map)
{
	__u32 key = 0;
	__u64 *v = bpf_map_lookup_elem(map, &key);
	if (v)
		__sync_fetch_and_add(v, 1);
}
