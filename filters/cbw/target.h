/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * The fleecing target: where cbw keeps the old contents of clusters.
 * Cluster N of the disk lives at the same offset in the target, so the
 * target is a sparse image of the disk's size holding only the copied
 * clusters.
 *
 * This header is what the snapshot engine and cbw.c see: one target,
 * chosen at start-up from cbw-target=.  Behind it (target-ops.h) is a
 * stack of `struct target`, each an ops table and its state:
 *
 *      target.c     the wrappers below; owns the top of the stack and
 *        |          the one cbw-timeout rule (every operation but a
 *        v          copy's write is bounded by now + cbw-timeout)
 *   [ layers ]      target-buffer.c (cbw-buffer=SIZE) or none; a layer
 *        |          holds `below`, the target under it
 *        |
 *        v
 *   target-file.c   temporary or named file, or block device
 *   target-nbd.c    NBD server through a pool of libnbd handles
 *
 * The cbw-buffer layer (target-buffer.c) defines a third `struct
 * target_ops` over the backend; target_open makes it the top when
 * cbw-buffer= is set.  Its write stores the copy in memory (or, when
 * the buffer is full, waits for room until the write's deadline, which
 * is "guest writes wait for the target as without it") and a writer
 * thread calls below->ops->write; its read serves buffered bytes and
 * passes the rest to below; release and end drop buffered clusters
 * before passing down; begin starts the writer, end discards the queue
 * and stops it.  Its status op gives the "buffer" status keys.  The
 * snapshot engine sees no difference, except that a background write
 * that fails calls snapshot_target_lost.
 *
 * Several snapshots share one target through the cluster store
 * (store.c), which places each copy in a slot (its cluster's own offset
 * when free, else an overflow slot past the disk's end); the target
 * only ever sees offsets.
 *
 * Thread safety: every function may be called from many threads at
 * once, except target_open, target_after_fork, target_close,
 * target_begin and target_end, which the caller serialises (start-up,
 * and the control thread with no copy in flight: cbw holds its gate
 * for writing around begin and end).
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

/* Memory of the target itself to read a copy of count bytes into
 * (cbw-buffer's chunks), so that target_write keeps it instead of
 * copying it; or NULL, then use memory of your own.  A buffer from
 * here goes to target_write, which takes it whatever it returns, or
 * back through target_put_buffer.
 */
extern void *target_get_buffer (uint32_t count);
extern void target_put_buffer (void *buf);

/* deadline: CLOCK_MONOTONIC time after which the write counts as
 * failed with ETIMEDOUT, or NULL for none.
 */
extern int target_write (const void *buf, uint32_t count, uint64_t offset,
                         const struct timespec *deadline, int *err);
extern int target_read (void *buf, uint32_t count, uint64_t offset,
                        int *err);
/* Give back the space of [offset, offset+count); best effort. */
extern void target_release (uint64_t offset, uint64_t count);

struct jbuf;
/* The members of status's "buffer" object (cbw-buffer use); size 0
 * and nothing else without cbw-buffer.
 */
extern void target_status (struct jbuf *reply);

#endif /* FLEECE_CBW_TARGET_H */
