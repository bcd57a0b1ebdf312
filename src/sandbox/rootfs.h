/*
 * The jail's filesystem view and each cell's private writable mounts.
 */
#ifndef PBX_SANDBOX_ROOTFS_H
#define PBX_SANDBOX_ROOTFS_H

#include <stdint.h>
#include <sys/types.h>

#include "common/error.h"

/* The uid and gid, inside the jail, that user code runs as. */
#define PBX_JOB_UID 1000
#define PBX_JOB_GID 1000

/*
 * In a fresh mount namespace (owned by the jail's user namespace): build a
 * read-only root on a tmpfs holding only what /usr/bin/python3 and the allowed
 * packages need, with a minimal /dev, and pivot_root into it.  The host's
 * root is detached; nothing else of the host stays reachable.
 */
int pbx_rootfs_enter(struct pbx_error **err);

/*
 * In a cell, after unshare(CLONE_NEWNS): one size- and inode-capped tmpfs
 * provides /work, /tmp and /dev/shm (they share the cap), owned by the job's
 * uid.  Returns 0 or -errno; does not allocate.
 */
int pbx_rootfs_cell_mounts(uint64_t size_bytes, uint32_t inodes);

#endif
