// SPDX-License-Identifier: GPL-2.0-only
/* LSM test program: on the file_open hook, denies opening the one file whose inode
 * number and size the test sets with --global deny_ino=... deny_size=...; everything
 * else passes. Counts its denials. (Not the device: on overlayfs, stat's st_dev is the
 * overlay's while st_ino is the real file's, and file_open sees both inodes.)
 * The structs are the few fields it reads, relocated against the kernel's BTF (CO-RE).
 */
#include "common.h"

struct inode {
	unsigned long i_ino;
	long long i_size;
} __attribute__((preserve_access_index));

struct file {
	struct inode *f_inode;
} __attribute__((preserve_access_index));

COUNTER_MAP(lsm_denials);

volatile const __u64 deny_ino = 0;
volatile const __u64 deny_size = 0;

SEC("lsm/file_open")
int lsm_deny_open(unsigned long long *ctx)
{
	struct file *file = (struct file *)ctx[0];
	int ret = (int)ctx[1];

	if (ret)
		return ret; /* an earlier LSM already refused */
	if (!deny_ino)
		return 0;
	if (file->f_inode->i_ino != deny_ino || file->f_inode->i_size != deny_size)
		return 0;
	bump(&lsm_denials);
	return -1; /* -EPERM */
}

char _license[] SEC("license") = "GPL";
