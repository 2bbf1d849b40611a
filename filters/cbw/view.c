/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * Reading a snapshot: its data, its block status, releasing regions of
 * it, and its delta views.  Each call takes the gate for reading and
 * finds its snapshot by id; the snapshot may have ended.  Locking
 * rules: snapshot-int.h.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nbdkit-filter.h>

#include "errors.h"
#include "snapshot-int.h"
#include "snapshot.h"
#include "target.h"

/*----------------------------------------------------------------------
 * Slots of copied clusters.
 */

uint64_t
slot_of (const struct snapshot *s, uint64_t c)
{
  uint64_t slot;

  if (is_moved (s, c) && slotmap_get (&s->slots, c, &slot))
    return slot;
  return c;
}

bool
slot_shared (const struct snapshot *s, uint64_t c, uint64_t slot)
{
  unsigned i;

  for (i = 0; i < SNAP_MAX; i++) {
    const struct snapshot *t = snaps[i];

    if (t && t != s && c < t->nclusters && bitset_test (&t->copied, c) &&
        slot_of (t, c) == slot)
      return true;
  }
  return false;
}

uint64_t
drop_copy (struct snapshot *s, uint64_t c)
{
  uint64_t slot = slot_of (s, c);

  bitset_clear (&s->copied, c);
  if (is_moved (s, c)) {
    bitset_clear (&s->moved, c);
    slotmap_del (&s->slots, c);
  }
  if (slot_shared (s, c, slot))
    return UINT64_MAX;
  store_unreserve (c, 1, slot);
  return slot;
}

/*----------------------------------------------------------------------
 * Finding the snapshot.
 */

static struct snapshot *
reader_enter (uint64_t id, int *err)
{
  unsigned i;

  pthread_rwlock_rdlock (&snap_gate);
  for (i = 0; i < SNAP_MAX; i++)
    if (snaps[i] && snaps[i]->id == id)
      return snaps[i];
  pthread_rwlock_unlock (&snap_gate);
  nbdkit_error ("snapshot %" PRIu64 " has ended; open the snapshot "
                "export again after the next snapshot-begin", id);
  *err = EIO;
  return NULL;
}

static void
reader_leave (void)
{
  pthread_rwlock_unlock (&snap_gate);
}

enum where { FROM_DISK, FROM_TARGET, NOWHERE };

/* Where cluster c's snapshot data is, the end of the run of clusters
 * (<= limit) that share it, and for the target the slot of c (the run
 * then lies in consecutive slots).  Caller holds state_lock.
 */
static enum where
locate (const struct snapshot *s, uint64_t c, uint64_t limit,
        uint64_t *run_end, uint64_t *slot)
{
  enum where w;
  uint64_t e;

  if (bitset_test (&s->need, c)) {
    w = FROM_DISK;
    e = bitset_next_clear (&s->need, c);
  }
  else if (bitset_test (&s->copied, c)) {
    w = FROM_TARGET;
    *slot = slot_of (s, c);
    if (*slot != c)
      e = c + 1;
    else {
      uint64_t m = s->moved.nbits ? bitset_next_set (&s->moved, c)
        : UINT64_MAX;

      e = bitset_next_clear (&s->copied, c);
      if (m < e)
        e = m;
    }
  }
  else {
    uint64_t a = bitset_next_set (&s->need, c);
    uint64_t b = bitset_next_set (&s->copied, c);

    w = NOWHERE;
    e = a < b ? a : b;
  }
  *run_end = e < limit ? e : limit;
  return w;
}

/* NBD has no EACCES (nbdkit would send it as EINVAL, "bad request"),
 * so a cluster the snapshot cannot serve fails with EPERM.  The log
 * says why.
 */
static int
refuse (const struct snapshot *s, const char *what, uint64_t offset,
        int *err)
{
  if (s->broken)
    nbdkit_error ("snapshot %" PRIu64 " is broken (%s): %s: %s",
                  s->id, s->broken, what, strerror (EPERM));
  else
    nbdkit_error ("snapshot %" PRIu64 ": %s at offset %" PRIu64 ": the "
                  "snapshot does not hold this cluster (released, or not "
                  "preserved with since=): %s",
                  s->id, what, offset, strerror (EPERM));
  *err = EPERM;
  return -1;
}

static bool
is_broken (const struct snapshot *s)
{
  bool b;

  pthread_mutex_lock (&state_lock);
  b = s->broken != NULL;
  pthread_mutex_unlock (&state_lock);
  return b;
}

/*----------------------------------------------------------------------
 * Reads.
 */

/* Read [offset, offset+count) with its clusters held SHARED. */
static int
read_locked (struct snapshot *s, nbdkit_next *next, char *buf,
             uint32_t count, uint64_t offset, int *err)
{
  const uint64_t end = offset + count;
  const uint64_t c1 = (end - 1) / cs () + 1;
  uint64_t c = offset / cs (), run_end, from, to, slot = 0;
  int64_t disk_size;
  enum where w;
  int r;

  while (c < c1) {
    pthread_mutex_lock (&state_lock);
    w = s->broken ? NOWHERE : locate (s, c, c1, &run_end, &slot);
    pthread_mutex_unlock (&state_lock);
    from = c * cs () > offset ? c * cs () : offset;
    to = run_end * cs () < end ? run_end * cs () : end;

    switch (w) {
    case FROM_DISK:
      disk_size = next->get_size (next);
      if (disk_size >= 0 && to > (uint64_t) disk_size) {
        break_shrunk (s, disk_size);
        return refuse (s, "read", from, err);
      }
      r = next->pread (next, buf + (from - offset), to - from, from, 0, err);
      break;
    case FROM_TARGET:
      r = target_read (buf + (from - offset), to - from,
                       slot * cs () + (from - c * cs ()), err);
      if (r == -1) {
        nbdkit_error ("snapshot: reading the fleecing target at %" PRIu64
                      ": %s", from, strerror (*err));
        pthread_mutex_lock (&state_lock);
        set_last_error (s, "reading the target", from, *err);
        pthread_mutex_unlock (&state_lock);
        *err = guest_errno (*err);
      }
      break;
    default:
      return refuse (s, "read", from, err);
    }
    if (r == -1)
      return -1;
    c = run_end;
  }
  return 0;
}

int
snapshot_pread (uint64_t id, nbdkit_next *next, void *buf, uint32_t count,
                uint64_t offset, int *err)
{
  struct snapshot *s = reader_enter (id, err);
  struct rangelock_entry e;
  uint64_t c0;
  int r;

  if (s == NULL)
    return -1;
  if (count == 0 || offset + count > s->size) {
    reader_leave ();
    if (count == 0)
      return 0;
    nbdkit_error ("snapshot read past the end of the disk");
    *err = EINVAL;
    return -1;
  }
  c0 = offset / cs ();
  rangelock_lock (&snap_ranges, &e, c0 * cs (),
                  (offset + count - 1) / cs () * cs () + cs () - c0 * cs (),
                  RANGELOCK_SHARED);
  r = read_locked (s, next, buf, count, offset, err);
  rangelock_unlock (&snap_ranges, &e);
  /* A break during our I/O may have let writes through unpreserved. */
  if (r == 0 && is_broken (s))
    r = refuse (s, "read", offset, err);
  reader_leave ();
  return r;
}

/*----------------------------------------------------------------------
 * Block status.
 */

/* Add the disk's extents of [from, to) to extents.  The layer below
 * may describe less than it was asked for (NBD allows a short reply,
 * and nbdkit's blocksize filter gives one), so ask again from where it
 * stopped until the range is covered; with REQ_ONE one answer does.
 */
static int
disk_extents (nbdkit_next *next, uint64_t from, uint64_t to, uint32_t flags,
              struct nbdkit_extents *extents, int *err)
{
  while (from < to) {
    struct nbdkit_extents *mine = nbdkit_extents_new (from, to);
    uint64_t reached = from;
    size_t i;
    int r = 0;

    if (mine == NULL) {
      *err = errno;
      return -1;
    }
    if (next->extents (next, to - from, from, flags, mine, err) == -1) {
      nbdkit_extents_free (mine);
      return -1;
    }
    for (i = 0; r == 0 && i < nbdkit_extents_count (mine); i++) {
      struct nbdkit_extent ex = nbdkit_get_extent (mine, i);

      if (ex.offset >= to)
        break;
      if (ex.offset + ex.length > to)
        ex.length = to - ex.offset;
      r = nbdkit_add_extent (extents, ex.offset, ex.length, ex.type);
      reached = ex.offset + ex.length;
    }
    nbdkit_extents_free (mine);
    if (r == -1) {
      *err = errno;
      return -1;
    }
    if (reached <= from) {
      nbdkit_error ("snapshot: the disk returned no block status at "
                    "offset %" PRIu64, from);
      *err = EIO;
      return -1;
    }
    if (flags & NBDKIT_FLAG_REQ_ONE)
      break;
    from = reached;
  }
  return 0;
}

int
snapshot_extents (uint64_t id, nbdkit_next *next, uint32_t count,
                  uint64_t offset, uint32_t flags,
                  struct nbdkit_extents *extents, int *err)
{
  struct snapshot *s = reader_enter (id, err);
  struct rangelock_entry e;
  uint64_t end, c, c1, run_end, from, to, slot;
  enum where w;
  int r = 0;

  if (s == NULL)
    return -1;
  end = offset + count < s->size ? offset + count : s->size;
  if (offset >= end) {
    reader_leave ();
    return 0;
  }
  c = offset / cs ();
  c1 = (end - 1) / cs () + 1;
  rangelock_lock (&snap_ranges, &e, c * cs (), (c1 - c) * cs (),
                  RANGELOCK_SHARED);
  while (r == 0 && c < c1) {
    pthread_mutex_lock (&state_lock);
    w = locate (s, c, c1, &run_end, &slot);
    pthread_mutex_unlock (&state_lock);
    from = c * cs () > offset ? c * cs () : offset;
    to = run_end * cs () < end ? run_end * cs () : end;
    /* Clusters on the disk are described by the disk.  Copied ones
     * are data.  Ones the snapshot does not hold are reported as data
     * too, so that a reader asks for them and gets a loud EPERM
     * rather than silently copying zeroes.
     */
    if (w == FROM_DISK) {
      int64_t disk_size = next->get_size (next);

      if (disk_size >= 0 && to > (uint64_t) disk_size) {
        break_shrunk (s, disk_size);
        r = refuse (s, "block status", from, err);
      }
      else
        r = disk_extents (next, from, to, flags, extents, err);
    }
    else if (nbdkit_add_extent (extents, from, to - from, 0) == -1) {
      *err = errno;
      r = -1;
    }
    if (flags & NBDKIT_FLAG_REQ_ONE)
      break;
    c = run_end;
  }
  rangelock_unlock (&snap_ranges, &e);
  reader_leave ();
  return r;
}

/*----------------------------------------------------------------------
 * Release.
 */

/* Bytes of the clusters set in bm among [c0, c0+n). */
static uint64_t
held_bytes (const struct snapshot *s, const struct bitset *bm,
            uint64_t c0, uint64_t n)
{
  uint64_t bytes = bitset_count_range (bm, c0, n) * cs ();
  uint64_t last = s->nclusters - 1;

  if (c0 + n > last && bitset_test (bm, last))
    bytes -= s->nclusters * cs () - s->size;
  return bytes;
}

/* Give back the target space of the slots in freed[0..n). */
static void
release_slots (const uint64_t *freed, size_t n)
{
  size_t i = 0, j;

  while (i < n) {
    for (j = i + 1; j < n && freed[j] == freed[j - 1] + 1; j++)
      ;
    target_release (freed[i] * cs (), (freed[j - 1] - freed[i] + 1) * cs ());
    i = j;
  }
}

int
snapshot_drop_range (struct snapshot *s, uint64_t c0, uint64_t c1,
                     uint64_t *released)
{
  uint64_t from_disk, from_target, c, slot;
  uint64_t *freed = NULL;
  size_t nfreed = 0;

  pthread_mutex_lock (&state_lock);
  from_disk = held_bytes (s, &s->need, c0, c1 - c0);
  from_target = held_bytes (s, &s->copied, c0, c1 - c0);
  s->released_bytes += from_disk + from_target;
  s->target_bytes -= from_target;
  bitset_clear_range (&s->need, c0, c1 - c0);
  if (from_target)
    freed = malloc (bitset_count_range (&s->copied, c0, c1 - c0) *
                    sizeof *freed);
  for (c = bitset_next_set (&s->copied, c0); c < c1;
       c = bitset_next_set (&s->copied, c + 1)) {
    slot = drop_copy (s, c);
    if (slot != UINT64_MAX && freed)
      freed[nfreed++] = slot;
  }
  pthread_mutex_unlock (&state_lock);
  /* Slots dropped from a run of identity slots are in order. */
  release_slots (freed, nfreed);
  free (freed);
  if (released)
    *released = from_disk + from_target;
  return 0;
}

int
snapshot_release (uint64_t id, uint32_t count, uint64_t offset, int *err)
{
  struct snapshot *s = reader_enter (id, err);
  struct rangelock_entry e;
  uint64_t c0, c1, end;

  if (s == NULL)
    return -1;
  /* Only whole clusters; the last cluster may be cut short by the end
   * of the disk.
   */
  end = offset + count;
  c0 = (offset + cs () - 1) / cs ();
  c1 = end >= s->size ? s->nclusters : end / cs ();
  if (c0 >= c1) {
    reader_leave ();
    return 0;
  }
  rangelock_lock (&snap_ranges, &e, c0 * cs (), (c1 - c0) * cs (),
                  RANGELOCK_EXCLUSIVE);
  snapshot_drop_range (s, c0, c1, NULL);
  rangelock_unlock (&snap_ranges, &e);
  reader_leave ();
  return 0;
}

/*----------------------------------------------------------------------
 * Delta views.
 */

int
snapshot_changed_since (uint64_t id, const char *name, uint32_t unit,
                        struct bitset *out, char **errmsg)
{
  const struct fleece_db_api *db = fleece_dirty_bitmap ();
  struct snapshot *s;
  int err, r;

  if (db == NULL)
    return fleece_errorf (errmsg, "delta views need the dirty-bitmap filter "
                          "(--filter=dirty-bitmap below cbw)");
  s = reader_enter (id, &err);
  if (s == NULL)
    return fleece_errorf (errmsg, "snapshot %" PRIu64 " has ended", id);
  r = db->changed_since (s->frozen, name, unit, out, errmsg);
  reader_leave ();
  return r;
}

char **
snapshot_delta_names (uint64_t id)
{
  const struct fleece_db_api *db = fleece_dirty_bitmap ();
  struct snapshot *s;
  char **names = NULL;
  int err;

  if (db == NULL)
    return calloc (1, sizeof *names);
  s = reader_enter (id, &err);
  if (s == NULL)
    return NULL;
  if (s->frozen)
    names = db->names (s->frozen);
  reader_leave ();
  return names;
}
