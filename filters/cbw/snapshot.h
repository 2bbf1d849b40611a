/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * The snapshot engine of the cbw filter: copy-before-write on the
 * guest's path (copy.c), reads of the point-in-time views, releasing
 * regions (view.c), begin and end (snapshot.c).  The locking rules are
 * in snapshot-int.h.
 */

#ifndef FLEECE_CBW_SNAPSHOT_H
#define FLEECE_CBW_SNAPSHOT_H

#include <stdbool.h>
#include <stdint.h>

#include <nbdkit-filter.h>

#include "fleece-api.h"
#include "json.h"

extern void snapshot_init (void);
extern void snapshot_cleanup (void);

/* Guest writes, zeroes and trims: call before passing the request
 * down, and snapshot_after_write once it has finished, whatever its
 * result.  Between the two the snapshot cannot begin or end, so every
 * request is wholly before or wholly after a snapshot point.  On
 * failure (-1 with *err) the request must fail and
 * snapshot_after_write must not be called.  fast_zero: the request is
 * a zero with NBDKIT_FLAG_FAST_ZERO, which fails with ENOTSUP rather
 * than wait for a copy.
 */
extern int snapshot_before_write (nbdkit_next *next, uint32_t count,
                                  uint64_t offset, bool fast_zero,
                                  int *err);
extern void snapshot_after_write (void);

/* Control commands (called from the control thread, serialised). */
/* name is "" for the default snapshot.  provisional: a backup job's
 * snapshot, whose new checkpoint stays provisional until the job
 * completes (fleece_db_api.begin_checkpoint_provisional).
 */
extern int snapshot_begin (const char *name, const char *checkpoint,
                           const char *since, bool provisional,
                           struct jbuf *reply, char **errmsg);
extern int snapshot_end (const char *name, struct jbuf *reply,
                         char **errmsg);
extern void snapshot_status (struct jbuf *reply);

/* The interface for snapshot-access (see fleece-api.h). */
extern void snapshot_info (const char *name,
                           struct fleece_snapshot_info *info);
extern char **snapshot_names (void);
extern int snapshot_pread (uint64_t id, nbdkit_next *next, void *buf,
                           uint32_t count, uint64_t offset, int *err);
extern int snapshot_extents (uint64_t id, nbdkit_next *next,
                             uint32_t count, uint64_t offset,
                             uint32_t flags,
                             struct nbdkit_extents *extents, int *err);
extern int snapshot_release (uint64_t id, uint32_t count, uint64_t offset,
                             int *err);
extern int snapshot_changed_since (uint64_t id, const char *name,
                                   uint32_t unit, struct bitset *out,
                                   char **errmsg);
extern char **snapshot_delta_names (uint64_t id);

/* Every context's handshake reports the disk's size here (cbw's
 * .get_size): the size the next snapshot takes, and a shrink below an
 * active snapshot's size breaks it.
 */
extern void snapshot_saw_size (int64_t size);

/* cbw-buffer: a background write of target bytes [offset,
 * offset+count) failed with err after the guest writes that queued
 * them completed.  Every snapshot holding a copy in that range breaks
 * (whatever cbw-on-error says: the guest writes cannot fail any more).
 * Called by the buffer's writer thread holding no lock.
 */
extern void snapshot_target_lost (uint64_t offset, uint64_t count, int err);

#endif /* FLEECE_CBW_SNAPSHOT_H */
