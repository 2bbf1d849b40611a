/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * The snapshot engine's shared state, for snapshot.c (lifecycle),
 * copy.c (the guest's write path) and view.c (reading snapshots).
 *
 * Several snapshots may be active at once: the default one (name "")
 * and up to SNAP_MAX_NAMED named ones, each taken at its own point.
 *
 * State of cluster c for snapshot s, from two bits of s:
 *
 *   need copied
 *    1    0     s's data for c is still only on the disk
 *    0    1     s's data for c is in the target, at slot_of (s, c)
 *    0    0     s does not hold c (released, or outside the since= map):
 *               reads fail with EPERM
 *
 * The key invariant: need_s[c] == 1 means the disk still holds c as it
 * was at s's point.  So every snapshot whose need bit is set for c
 * needs the same bytes, the disk's current ones, and a guest write
 * copies them once for all of them (store.h: they share the slot).
 *
 * Locks, in the order they are taken:
 *
 * gate (rwlock, writers preferred).  Protects the set of active
 *   snapshots (snaps[], nsnaps) and the lifetime of each *snaps[i].
 *   Every guest write, zero and trim holds it for reading from before
 *   its copy until the request has finished below us, and so does
 *   every snapshot read, extents and release.  snapshot_begin and
 *   snapshot_end hold it for writing, so they wait for requests in
 *   flight and no request straddles a snapshot point.  Only the control
 *   thread changes snaps[], so the control thread may read it without
 *   the gate.  The control thread also changes snaps[] only under
 *   state_lock, and frees a snapshot only after taking it out, so a
 *   thread holding state_lock alone may use snaps[] (the cbw-buffer
 *   writer does, in snapshot_target_lost: it cannot take the gate,
 *   which snapshot_end holds while it waits for that thread).
 *
 * ranges (range lock over disk bytes, cluster aligned).  Invariants:
 *   - a need bit goes from 1 to 0 only under an EXCLUSIVE hold of the
 *     cluster (copying it or releasing it);
 *   - the disk is read for a snapshot only under a SHARED hold of the
 *     cluster, after seeing need == 1 under that hold.
 *   So a guest write that finds every need bit 0 may go to the disk
 *   with no range lock; one that finds a need bit 1 copies the cluster
 *   under an EXCLUSIVE hold first, which waits for readers.
 *   Concurrent writers to one cluster serialise on the hold and the
 *   second finds need == 0, so each cluster is copied once per point.
 *
 * state_lock (mutex).  Protects every snapshot's bitmaps, slot map,
 *   counters and broken reason, and the store (store.c).  Held only
 *   for bit operations, never across I/O.
 *
 * Breaking (cbw-on-error=break-snapshot): a failed copy breaks exactly
 * the snapshots that needed it; once broken a snapshot stops copying
 * and its reads fail.  A read checks broken again after its I/O, so a
 * read that overlapped the break never returns data a write may have
 * changed.
 */

#ifndef FLEECE_CBW_SNAPSHOT_INT_H
#define FLEECE_CBW_SNAPSHOT_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "bitset.h"
#include "cbw.h"
#include "fleece-api.h"
#include "rangelock.h"
#include "store.h"

#define SNAP_MAX_NAMED 8
#define SNAP_MAX (SNAP_MAX_NAMED + 1)

struct snapshot {
  uint64_t id;
  char name[FLEECE_NAME_BUF];   /* "" for the default snapshot */
  uint64_t size;                /* disk size at the snapshot point */
  uint64_t nclusters;
  int64_t started;
  char checkpoint[FLEECE_NAME_BUF];
  char since[FLEECE_NAME_BUF];
  /* The checkpoints at the snapshot point (dirty-bitmap's frozen view,
   * NULL without dirty-bitmap): never changes, freed with *s.
   */
  struct fleece_frozen *frozen;
  uint64_t since_hold;          /* dirty-bitmap's hold on since= */

  /* Protected by state_lock. */
  struct bitset need;
  struct bitset copied;
  struct bitset moved;          /* copied to an overflow slot; allocated
                                 * at the first such copy (moved_any) */
  struct slotmap slots;         /* cluster -> overflow slot */
  char *broken;                 /* why the snapshot broke, or NULL */
  char *last_error;             /* the latest failed copy or target read */
  uint64_t clusters_copied;
  uint64_t target_bytes;
  uint64_t released_bytes;
  uint64_t copy_errors;
};

extern pthread_rwlock_t snap_gate;
extern struct snapshot *snaps[SNAP_MAX];  /* see snap_gate; NULL: free */
extern unsigned nsnaps;
extern struct rangelock snap_ranges;
extern pthread_mutex_t state_lock;

static inline uint64_t
cs (void)
{
  return cbw_config.cluster_size;
}

/* Bytes of clusters [c, c+n) that lie inside s's disk. */
static inline uint64_t
cluster_bytes (const struct snapshot *s, uint64_t c, uint64_t n)
{
  uint64_t start = c * cs ();
  uint64_t end = (c + n) * cs ();

  if (end > s->size)
    end = s->size;
  return end > start ? end - start : 0;
}

/* Is cluster c of s in an overflow slot?  Caller holds state_lock. */
static inline bool
is_moved (const struct snapshot *s, uint64_t c)
{
  return s->moved.nbits != 0 && bitset_test (&s->moved, c);
}

/* Where s keeps its copy of cluster c (copied must be set).  Caller
 * holds state_lock.
 */
extern uint64_t slot_of (const struct snapshot *s, uint64_t c);
/* Does a snapshot other than s map cluster c to slot?  Caller holds
 * state_lock.
 */
extern bool slot_shared (const struct snapshot *s, uint64_t c,
                         uint64_t slot);
/* Drop s's copy of c: clear its bits, free the slot if no other
 * snapshot uses it.  Returns the slot if it became free (and the
 * caller should give its space back), else UINT64_MAX.  Caller holds
 * state_lock.
 */
extern uint64_t drop_copy (struct snapshot *s, uint64_t c);

/* Drop what s holds of clusters [c0, c1): need bits and copies, whose
 * slots are freed (and their target space given back) unless another
 * snapshot uses them; counts them as released.  *released (may be
 * NULL) gets the bytes.  Caller holds [c0, c1) EXCLUSIVE, or the gate
 * for writing.
 */
extern int snapshot_drop_range (struct snapshot *s, uint64_t c0,
                                uint64_t c1, uint64_t *released);

/* Mark s broken with the reason why (malloc'd, taken; NULL: out of
 * memory).  Caller holds state_lock.
 */
extern void break_locked (struct snapshot *s, char *why);
/* The disk is smaller than s: s can no longer be exact. */
extern void break_shrunk (struct snapshot *s, int64_t size);
/* Remember the latest error for status; caller holds state_lock. */
extern void set_last_error (struct snapshot *s, const char *what,
                            uint64_t offset, int err);
/* The errno a guest write fails with when its copy failed. */
extern int guest_errno (int err);

#endif /* FLEECE_CBW_SNAPSHOT_INT_H */
