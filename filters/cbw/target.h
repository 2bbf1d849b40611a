/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * The fleecing target: where cbw keeps the old contents of clusters.
 * Cluster N of the disk lives at the same offset in the target, so the
 * target is a sparse image of the disk's size holding only the copied
 * clusters.
 *
 * Thread safety: every function may be called from many threads at
 * once, except target_open, target_begin and target_end, which the
 * caller serialises (start-up, and the control thread with no copy in
 * flight: cbw holds its gate for writing around begin and end).
 */

#ifndef FLEECE_CBW_TARGET_H
#define FLEECE_CBW_TARGET_H

#include <stdint.h>
#include <time.h>

/* Prepare the target at start-up (open or create files).  NBD targets
 * connect only at target_begin, so a target server may start later.
 */
extern int target_open (void);
/* In the process that serves (after nbdkit's fork): record its pid in
 * the lock file of a file target.
 */
extern void target_after_fork (void);
extern void target_close (void);

/* A snapshot of a disk of size bytes begins: the target must be
 * empty and hold at least size bytes.  Returns 0 or -1 with *errmsg
 * (malloc'd) saying what is wrong.
 */
extern int target_begin (uint64_t size, char **errmsg);
/* Bytes the target can hold (after target_begin): a file grows as
 * needed (UINT64_MAX), a block device or an NBD export has its size.
 */
extern uint64_t target_capacity (void);
/* The snapshot ended: release all the target's space. */
extern void target_end (void);

/* deadline: CLOCK_MONOTONIC time after which the write counts as
 * failed with ETIMEDOUT, or NULL for none.
 */
extern int target_write (const void *buf, uint32_t count, uint64_t offset,
                         const struct timespec *deadline, int *err);
extern int target_read (void *buf, uint32_t count, uint64_t offset,
                        int *err);
/* Give back the space of [offset, offset+count); best effort. */
extern void target_release (uint64_t offset, uint64_t count);

#endif /* FLEECE_CBW_TARGET_H */
