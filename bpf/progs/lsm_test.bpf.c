// SPDX-License-Identifier: GPL-2.0-only
/* LSM test program: on the file_open hook, denies opening the one file whose inode
 * number and device (the kernel's dev_t: major << 20 | minor) the test sets with
 * --global deny_ino=... deny_dev=...; everything else passes. Counts its denials.
 * The structs are the few fields it reads, relocated against the kernel's BTF (CO-RE).
 */
#include "common.h"

struct super_block {
	__u32 s_dev;
} __attribute__((preserve_access_index));

struct inode {
	unsigned long i_ino;
	struct super_block *i_sb;
} __attribute__((preserve_access_index));

struct file {
	struct inode *f_inode;
} __attribute__((preserve_access_index));

COUNTER_MAP(lsm_denials);

volatile const __u64 deny_ino = 0;
volatile const __u32 deny_dev = 0;

SEC("lsm/file_open")
int lsm_deny_open(unsigned long long *ctx)
{
	struct file *file = (struct file *)ctx[0];
	int ret = (int)ctx[1];

	if (ret)
		return ret; /* an earlier LSM already refused */
	if (!deny_ino)
		return 0;
	if (file->f_inode->i_ino != deny_ino || file->f_inode->i_sb->s_dev != deny_dev)
		return 0;
	bump(&lsm_denials);
	return -1; /* -EPERM */
}

char _license[] SEC("license") = "GPL";
