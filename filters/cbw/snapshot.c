/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * The snapshot engine of the cbw filter.
 *
 * State of a cluster of the active snapshot, from two bits:
 *
 *   need copied
 *    1    0     the snapshot's data is still only on the disk
 *    0    1     the snapshot's data is in the target
 *    0    0     the snapshot does not hold it (released, or outside the
 *               since= map): reads fail with EPERM
 *
 * Locks, in the order they are taken:
 *
 * gate (rwlock, writers preferred).  Protects which snapshot is
 *   active: the pointer cur and the lifetime of *cur.  Every guest
 *   write, zero and trim holds it for reading from before its copy
 *   until the request has finished below us, and so does every
 *   snapshot read, extents and release.  snapshot_begin and
 *   snapshot_end hold it for writing, so they wait for requests in
 *   flight and no request straddles a snapshot point.  Only the
 *   control thread changes cur, so the control thread may read cur
 *   without the gate.
 *
 * ranges (range lock over disk bytes, cluster aligned).  Invariants:
 *   - a cluster's need bit goes from 1 to 0 only under an EXCLUSIVE
 *     hold of that cluster (copying it or releasing it);
 *   - the disk is read for the snapshot only under a SHARED hold of
 *     the cluster, after seeing need == 1 under that hold.
 *   So a guest write that finds need == 0 may go to the disk with no
 *   range lock: no snapshot reader can be reading that cluster from
 *   the disk, and none will.  A guest write that finds need == 1
 *   copies the cluster under an EXCLUSIVE hold first, which waits for
 *   readers.  Concurrent writers to one cluster serialise on the hold
 *   and the second finds need == 0, so each cluster is copied once.
 *
 * state_lock (mutex).  Protects the bitmaps, counters and broken
 *   reason of *cur.  Held only for short bit operations, never across
 *   I/O.
 *
 * Breaking (cbw-on-error=break-snapshot): once broken is set, guest
 * writes stop copying and reads fail.  A read checks broken again
 * after its I/O, so a read that overlapped the break never returns
 * data a write may have changed.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nbdkit-filter.h>

#include "backend.h"
#include "bitmap.h"
#include "errors.h"
#include "gate.h"
#include "cbw.h"
#include "json.h"
#include "rangelock.h"
#include "size.h"
#include "snapshot.h"
#include "target.h"

extern int cbw_debug_copy;

/* Largest piece copied in one go. */
#define COPY_CHUNK (4 * 1024 * 1024)

struct snapshot {
  uint64_t id;
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
  struct bitmap need;
  struct bitmap copied;
  char *broken;                 /* why the snapshot broke, or NULL */
  char *last_error;             /* the latest failed copy or target read */
  uint64_t clusters_copied;
  uint64_t target_bytes;
  uint64_t released_bytes;
  uint64_t copy_errors;
};

static pthread_rwlock_t gate;
static struct snapshot *cur;    /* see gate */
static struct rangelock ranges;
static pthread_mutex_t state_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t last_id;        /* control thread only */

/* The disk's size as the latest context opened on it saw it: cbw's
 * .get_size runs in every context's handshake, before that context
 * can write.  snapshot_begin takes its size from here, so the control
 * thread never opens a backend connection of its own (a plugin that
 * serves one connection at a time would block it for ever).
 * Protected by size_lock.
 */
static pthread_mutex_t size_lock = PTHREAD_MUTEX_INITIALIZER;
static int64_t seen_size = -1;

void
snapshot_init (void)
{
  fleece_gate_init (&gate);
  rangelock_init (&ranges);
}

static void
snapshot_free (struct snapshot *s)
{
  const struct fleece_db_api *db = fleece_dirty_bitmap ();

  if (s) {
    if (db && s->frozen)
      db->frozen_free (s->frozen);
    bitmap_free (&s->need);
    bitmap_free (&s->copied);
    free (s->broken);
    free (s->last_error);
    free (s);
  }
}

void
snapshot_cleanup (void)
{
  snapshot_free (cur);
  cur = NULL;
}

static inline uint64_t
cs (void)
{
  return cbw_config.cluster_size;
}

/* Bytes of clusters [c, c+n) that lie inside the disk. */
static uint64_t
cluster_bytes (const struct snapshot *s, uint64_t c, uint64_t n)
{
  uint64_t start = c * cs ();
  uint64_t end = (c + n) * cs ();

  if (end > s->size)
    end = s->size;
  return end > start ? end - start : 0;
}

/*----------------------------------------------------------------------
 * Guest writes.
 */

/* Remember the latest error for status; caller holds state_lock. */
static void
set_last_error (struct snapshot *s, const char *what, uint64_t offset,
                int err)
{
  char *msg;

  if (asprintf (&msg, "%s at offset %" PRIu64 ": %s",
                what, offset, strerror (err)) == -1)
    return;
  free (s->last_error);
  s->last_error = msg;
}

/* The errno a guest write fails with when its copy failed: the ones
 * NBD can carry, or that say what happened; anything else (a target
 * that went away: ENOTCONN, EPIPE, ...) is EIO.
 */
static int
guest_errno (int err)
{
  switch (err) {
  case EIO: case ENOSPC: case EDQUOT: case EFBIG: case ETIMEDOUT:
  case ENOMEM:
    return err;
  default:
    return EIO;
  }
}

/* Mark s broken with the reason why (malloc'd, taken; NULL: out of
 * memory).  Caller holds state_lock.
 */
static void
break_locked (struct snapshot *s, char *why)
{
  if (s->broken == NULL) {
    s->broken = why ? why : strdup ("the snapshot broke");
    why = NULL;
    nbdkit_error ("cbw: snapshot %" PRIu64 " is broken: %s",
                  s->id, s->broken);
  }
  free (why);
}

static void
mark_broken (struct snapshot *s, uint64_t offset, int err)
{
  char *why;

  if (asprintf (&why, "copy-before-write of offset %" PRIu64 " failed: %s",
                offset, strerror (err)) == -1)
    why = NULL;
  pthread_mutex_lock (&state_lock);
  s->copy_errors++;
  break_locked (s, why);
  pthread_mutex_unlock (&state_lock);
}

/* The disk is smaller than s: the snapshot's data past the new end is
 * gone from the disk (unless copied), so s can no longer be exact.
 * This is no guest write's fault, so it breaks s whatever cbw-on-error
 * says.
 */
static void
break_shrunk (struct snapshot *s, int64_t size)
{
  char *why;

  if (asprintf (&why, "the disk shrank from %" PRIu64 " to %" PRIi64
                " bytes while the snapshot was active", s->size,
                size) == -1)
    why = NULL;
  pthread_mutex_lock (&state_lock);
  break_locked (s, why);
  pthread_mutex_unlock (&state_lock);
}

void
snapshot_saw_size (int64_t size)
{
  pthread_mutex_lock (&size_lock);
  seen_size = size;
  pthread_mutex_unlock (&size_lock);
  pthread_rwlock_rdlock (&gate);
  if (cur && (uint64_t) size < cur->size)
    break_shrunk (cur, size);
  pthread_rwlock_unlock (&gate);
}

static void
deadline_from_now (struct timespec *deadline)
{
  clock_gettime (CLOCK_MONOTONIC, deadline);
  deadline->tv_sec += cbw_config.timeout;
}

/* Copy clusters [c, c+n) from the disk to the target.  Caller holds
 * them EXCLUSIVE and has seen need == 1 for all of them.
 */
static int
copy_clusters (nbdkit_next *next, struct snapshot *s, uint64_t c,
               uint64_t n, int *err)
{
  struct timespec deadline;
  const struct timespec *dl = NULL;
  uint64_t offset = c * cs ();
  uint32_t len = cluster_bytes (s, c, n);
  int64_t size;
  void *buf;
  int r = -1;

  if (cbw_config.timeout) {
    deadline_from_now (&deadline);
    dl = &deadline;
  }
  size = next->get_size (next);
  if (size >= 0 && offset + len > (uint64_t) size) {
    /* Never read past the end this context knows (nbdkit would abort). */
    break_shrunk (s, size);
    return 0;
  }
  buf = malloc (len);
  if (buf == NULL) {
    *err = errno;
    return -1;
  }
  if (next->pread (next, buf, len, offset, 0, err) == -1)
    goto out;
  if (target_write (buf, len, offset, dl, err) == -1)
    goto out;

  pthread_mutex_lock (&state_lock);
  bitmap_clear_range (&s->need, c, n);
  bitmap_set_range (&s->copied, c, n);
  s->clusters_copied += n;
  s->target_bytes += len;
  pthread_mutex_unlock (&state_lock);
  if (cbw_debug_copy)
    nbdkit_debug ("cbw: copied %" PRIu32 " bytes at %" PRIu64, len, offset);
  r = 0;
 out:
  free (buf);
  return r;
}

/* Copy every cluster of [c0, c1] that still needs it.  Caller holds
 * them EXCLUSIVE.
 */
static int
copy_range (nbdkit_next *next, struct snapshot *s, uint64_t c0, uint64_t c1,
            int *err)
{
  const uint64_t chunk = COPY_CHUNK > cs () ? COPY_CHUNK / cs () : 1;
  uint64_t c = c0, end, n;

  while (c <= c1) {
    pthread_mutex_lock (&state_lock);
    if (s->broken) {
      pthread_mutex_unlock (&state_lock);
      return 0;
    }
    c = bitmap_next_set (&s->need, c);
    end = c <= c1 ? bitmap_next_clear (&s->need, c) : c;
    pthread_mutex_unlock (&state_lock);
    if (c > c1)
      return 0;
    if (end > c1 + 1)
      end = c1 + 1;
    n = end - c < chunk ? end - c : chunk;

    if (copy_clusters (next, s, c, n, err) == -1) {
      nbdkit_debug ("cbw: copy at %" PRIu64 " failed: %s",
                    c * cs (), strerror (*err));
      pthread_mutex_lock (&state_lock);
      set_last_error (s, "copy-before-write", c * cs (), *err);
      pthread_mutex_unlock (&state_lock);
      if (cbw_config.on_error == CBW_BREAK_GUEST_WRITE) {
        pthread_mutex_lock (&state_lock);
        s->copy_errors++;
        pthread_mutex_unlock (&state_lock);
        nbdkit_error ("cbw: copy-before-write of offset %" PRIu64
                      " failed (%s); failing the guest's write "
                      "(cbw-on-error=break-guest-write)",
                      c * cs (), strerror (*err));
        *err = guest_errno (*err);
        return -1;
      }
      mark_broken (s, c * cs (), *err);
      return 0;
    }
    c += n;
  }
  return 0;
}

int
snapshot_before_write (nbdkit_next *next, uint32_t count, uint64_t offset,
                       bool fast_zero, int *err)
{
  struct snapshot *s;
  struct rangelock_entry e;
  uint64_t c0, c1, end;
  bool any;
  int r;

  pthread_rwlock_rdlock (&gate);
  s = cur;
  if (s == NULL || count == 0 || offset >= s->size)
    return 0;

  end = offset + count < s->size ? offset + count : s->size;
  c0 = offset / cs ();
  c1 = (end - 1) / cs ();
  pthread_mutex_lock (&state_lock);
  any = s->broken == NULL && bitmap_any_in_range (&s->need, c0, c1 - c0 + 1);
  pthread_mutex_unlock (&state_lock);
  if (!any)
    return 0;
  if (fast_zero) {
    pthread_rwlock_unlock (&gate);
    *err = ENOTSUP;
    return -1;
  }

  rangelock_lock (&ranges, &e, c0 * cs (), (c1 - c0 + 1) * cs (),
                  RANGELOCK_EXCLUSIVE);
  r = copy_range (next, s, c0, c1, err);
  rangelock_unlock (&ranges, &e);
  if (r == -1)
    pthread_rwlock_unlock (&gate);
  return r;
}

void
snapshot_after_write (void)
{
  pthread_rwlock_unlock (&gate);
}

/*----------------------------------------------------------------------
 * Snapshot readers.  Each takes the gate for reading and checks that
 * the snapshot it opened is still the active one.
 */

static struct snapshot *
reader_enter (uint64_t id, int *err)
{
  pthread_rwlock_rdlock (&gate);
  if (cur == NULL || cur->id != id) {
    pthread_rwlock_unlock (&gate);
    nbdkit_error ("snapshot %" PRIu64 " has ended; open the snapshot "
                  "export again after the next snapshot-begin", id);
    *err = EIO;
    return NULL;
  }
  return cur;
}

static void
reader_leave (void)
{
  pthread_rwlock_unlock (&gate);
}

enum where { FROM_DISK, FROM_TARGET, NOWHERE };

/* Where cluster c's snapshot data is, and the end of the run of
 * clusters (<= limit) that share it.  Caller holds state_lock.
 */
static enum where
locate (const struct snapshot *s, uint64_t c, uint64_t limit,
        uint64_t *run_end)
{
  enum where w;
  uint64_t e;

  if (bitmap_test (&s->need, c)) {
    w = FROM_DISK;
    e = bitmap_next_clear (&s->need, c);
  }
  else if (bitmap_test (&s->copied, c)) {
    w = FROM_TARGET;
    e = bitmap_next_clear (&s->copied, c);
  }
  else {
    uint64_t a = bitmap_next_set (&s->need, c);
    uint64_t b = bitmap_next_set (&s->copied, c);

    w = NOWHERE;
    e = a < b ? a : b;
  }
  *run_end = e < limit ? e : limit;
  return w;
}

/* A read the snapshot cannot serve fails with EPERM: nbdkit sends it
 * as NBD_EPERM ("Operation not permitted" in the client), whereas
 * EACCES would reach the client as EINVAL, a bad request.  The log
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

/* Read [offset, offset+count) with its clusters held SHARED. */
static int
read_locked (struct snapshot *s, nbdkit_next *next, char *buf,
             uint32_t count, uint64_t offset, int *err)
{
  const uint64_t end = offset + count;
  const uint64_t c1 = (end - 1) / cs () + 1;
  uint64_t c = offset / cs (), run_end, from, to;
  int64_t disk_size;
  enum where w;
  int r;

  while (c < c1) {
    pthread_mutex_lock (&state_lock);
    w = s->broken ? NOWHERE : locate (s, c, c1, &run_end);
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
      r = target_read (buf + (from - offset), to - from, from, err);
      if (r == -1) {
        nbdkit_error ("snapshot: reading the fleecing target at %" PRIu64
                      ": %s", from, strerror (*err));
        pthread_mutex_lock (&state_lock);
        set_last_error (s, "reading the target", from,
                        *err);
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
  rangelock_lock (&ranges, &e, c0 * cs (),
                  (offset + count - 1) / cs () * cs () + cs () - c0 * cs (),
                  RANGELOCK_SHARED);
  r = read_locked (s, next, buf, count, offset, err);
  rangelock_unlock (&ranges, &e);
  /* A break during our I/O may have let writes through unpreserved. */
  if (r == 0 && is_broken (s))
    r = refuse (s, "read", offset, err);
  reader_leave ();
  return r;
}

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
  uint64_t end, c, c1, run_end, from, to;
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
  rangelock_lock (&ranges, &e, c * cs (), (c1 - c) * cs (),
                  RANGELOCK_SHARED);
  while (r == 0 && c < c1) {
    pthread_mutex_lock (&state_lock);
    w = locate (s, c, c1, &run_end);
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
  rangelock_unlock (&ranges, &e);
  reader_leave ();
  return r;
}

/* Bytes of the clusters set in bm among [c0, c0+n). */
static uint64_t
held_bytes (const struct snapshot *s, const struct bitmap *bm,
            uint64_t c0, uint64_t n)
{
  uint64_t bytes = bitmap_count_range (bm, c0, n) * cs ();
  uint64_t last = s->nclusters - 1;

  if (c0 + n > last && bitmap_test (bm, last))
    bytes -= s->nclusters * cs () - s->size;
  return bytes;
}

int
snapshot_release (uint64_t id, uint32_t count, uint64_t offset, int *err)
{
  struct snapshot *s = reader_enter (id, err);
  struct rangelock_entry e;
  uint64_t c0, c1, end, from_disk, from_target;

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
  rangelock_lock (&ranges, &e, c0 * cs (), (c1 - c0) * cs (),
                  RANGELOCK_EXCLUSIVE);
  pthread_mutex_lock (&state_lock);
  from_disk = held_bytes (s, &s->need, c0, c1 - c0);
  from_target = held_bytes (s, &s->copied, c0, c1 - c0);
  s->released_bytes += from_disk + from_target;
  s->target_bytes -= from_target;
  bitmap_clear_range (&s->need, c0, c1 - c0);
  bitmap_clear_range (&s->copied, c0, c1 - c0);
  pthread_mutex_unlock (&state_lock);
  if (from_target)
    target_release (c0 * cs (), (c1 - c0) * cs ());
  rangelock_unlock (&ranges, &e);
  reader_leave ();
  return 0;
}

/*----------------------------------------------------------------------
 * Begin, end, status.
 */

int
snapshot_begin (const char *checkpoint, const char *since,
                struct jbuf *reply, char **errmsg)
{
  const struct fleece_db_api *db = fleece_dirty_bitmap ();
  struct snapshot *s;
  int64_t size;
  uint64_t needed;

  if (cur)
    return fleece_errorf (errmsg, "a snapshot is already active (id %" PRIu64
                          "); end it with snapshot-end first", cur->id);
  if ((checkpoint || since) && db == NULL)
    return fleece_errorf (errmsg, "%s= needs the dirty-bitmap filter below "
                          "cbw (--filter=dirty-bitmap)",
                          checkpoint ? "checkpoint" : "since");

  pthread_mutex_lock (&size_lock);
  size = seen_size;
  pthread_mutex_unlock (&size_lock);
  if (size == -1)
    return fleece_errorf (errmsg, "the size of the disk is not known yet");

  s = calloc (1, sizeof *s);
  if (s == NULL)
    return fleece_errorf (errmsg, "out of memory");
  s->size = size;
  s->nclusters = (size + cs () - 1) / cs ();
  snprintf (s->checkpoint, sizeof s->checkpoint, "%s",
            checkpoint ? checkpoint : "");
  snprintf (s->since, sizeof s->since, "%s", since ? since : "");
  if (bitmap_init (&s->need, s->nclusters) == -1 ||
      bitmap_init (&s->copied, s->nclusters) == -1) {
    snapshot_free (s);
    return fleece_errorf (errmsg, "out of memory for the cluster maps of a %"
                          PRIi64 "-byte disk", size);
  }
  if (!since)
    bitmap_set_all (&s->need);
  if (target_begin (size, errmsg) == -1) {
    snapshot_free (s);
    return -1;
  }

  /* The snapshot point: no guest write is in flight while we hold the
   * gate, and every later one sees cur.  The dirty-bitmap filter sits
   * directly below us (stack-rules.c), so its checkpoints are frozen
   * and change at exactly this point too.
   */
  if (fleece_gate_wrlock (&gate, FLEECE_GATE_WAIT_SECONDS) != 0) {
    snapshot_free (s);
    target_end ();
    return fleece_errorf (errmsg, "guest writes in flight did not finish "
                          "within %d s (is the disk or the target hung?); "
                          "no snapshot was taken", FLEECE_GATE_WAIT_SECONDS);
  }
  if (db) {
    s->frozen = db->freeze (since, errmsg);
    if (s->frozen == NULL ||
        (since &&
         db->changed_since (s->frozen, since, cs (), &s->need,
                            errmsg) == -1) ||
        (checkpoint && db->begin_checkpoint (checkpoint, errmsg) == -1)) {
      pthread_rwlock_unlock (&gate);
      snapshot_free (s);
      target_end ();
      return -1;
    }
    if (since)
      s->since_hold = db->hold (since, FLEECE_HOLD_SINCE);
  }
  s->id = ++last_id;
  s->started = time (NULL);
  /* Count before publishing: from then on writers clear bits. */
  needed = bitmap_count (&s->need);
  cur = s;
  pthread_rwlock_unlock (&gate);

  nbdkit_debug ("cbw: snapshot %" PRIu64 " begun, %" PRIi64 " bytes, %"
                PRIu64 " of %" PRIu64 " clusters preserved", s->id, size,
                needed, s->nclusters);
  jbuf_key (reply, "id");
  jbuf_u64 (reply, s->id);
  jbuf_key (reply, "started");
  jbuf_time (reply, s->started);
  jbuf_key (reply, "clusters_preserved");
  jbuf_u64 (reply, needed);
  return 0;
}

int
snapshot_end (struct jbuf *reply, char **errmsg)
{
  struct snapshot *s;

  const struct fleece_db_api *db = fleece_dirty_bitmap ();

  if (cur == NULL)
    return fleece_errorf (errmsg, "no snapshot is active");

  if (fleece_gate_wrlock (&gate, FLEECE_GATE_WAIT_SECONDS) != 0)
    return fleece_errorf (errmsg, "requests in flight did not finish within "
                          "%d s (is the disk or the target hung?); the "
                          "snapshot is still active", FLEECE_GATE_WAIT_SECONDS);
  s = cur;
  cur = NULL;
  pthread_rwlock_unlock (&gate);
  if (db)
    db->unhold (s->since_hold, FLEECE_HOLD_SINCE);

  nbdkit_debug ("cbw: snapshot %" PRIu64 " ended after copying %" PRIu64
                " clusters", s->id, s->clusters_copied);
  jbuf_key (reply, "id");
  jbuf_u64 (reply, s->id);
  jbuf_key (reply, "clusters_copied");
  jbuf_u64 (reply, s->clusters_copied);
  snapshot_free (s);
  target_end ();
  return 0;
}

void
snapshot_status (struct jbuf *reply)
{
  struct snapshot *s;

  pthread_rwlock_rdlock (&gate);
  s = cur;
  jbuf_key (reply, "snapshot");
  jbuf_raw (reply, "{");
  jbuf_key (reply, "active");
  jbuf_bool (reply, s != NULL);
  jbuf_key (reply, "started");
  jbuf_time (reply, s ? s->started : 0);
  pthread_mutex_lock (&state_lock);
  jbuf_key (reply, "clusters_copied");
  jbuf_u64 (reply, s ? s->clusters_copied : 0);
  jbuf_key (reply, "target_bytes");
  jbuf_u64 (reply, s ? s->target_bytes : 0);
  jbuf_key (reply, "released_bytes");
  jbuf_u64 (reply, s ? s->released_bytes : 0);
  jbuf_key (reply, "broken");
  jbuf_string (reply, s ? s->broken : NULL);
  jbuf_key (reply, "copy_errors");
  jbuf_u64 (reply, s ? s->copy_errors : 0);
  jbuf_key (reply, "last_error");
  jbuf_string (reply, s ? s->last_error : NULL);
  pthread_mutex_unlock (&state_lock);
  if (s) {
    jbuf_key (reply, "id");
    jbuf_u64 (reply, s->id);
    jbuf_key (reply, "size");
    jbuf_u64 (reply, s->size);
    jbuf_key (reply, "checkpoint");
    jbuf_string (reply, s->checkpoint[0] ? s->checkpoint : NULL);
    jbuf_key (reply, "since");
    jbuf_string (reply, s->since[0] ? s->since : NULL);
  }
  pthread_rwlock_unlock (&gate);
  jbuf_key (reply, "cluster_size");
  jbuf_u64 (reply, cbw_config.cluster_size);
  jbuf_key (reply, "target_kind");
  jbuf_string (reply, cbw_target_kind_name (cbw_config.target_kind));
  jbuf_key (reply, "on_error");
  jbuf_string (reply, cbw_on_error_name (cbw_config.on_error));
  jbuf_raw (reply, "}");
}

void
snapshot_info (struct fleece_snapshot_info *info)
{
  memset (info, 0, sizeof *info);
  pthread_rwlock_rdlock (&gate);
  if (cur) {
    info->id = cur->id;
    info->size = cur->size;
    info->started = cur->started;
    memcpy (info->checkpoint, cur->checkpoint, sizeof info->checkpoint);
    memcpy (info->since, cur->since, sizeof info->since);
  }
  pthread_rwlock_unlock (&gate);
}

int
snapshot_changed_since (uint64_t id, const char *name, uint32_t unit,
                        struct bitmap *out, char **errmsg)
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
  char **names = NULL;

  if (db == NULL)
    return calloc (1, sizeof *names);
  pthread_rwlock_rdlock (&gate);
  if (cur && cur->id == id && cur->frozen)
    names = db->names (cur->frozen);
  pthread_rwlock_unlock (&gate);
  return names;
}
