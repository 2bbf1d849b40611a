/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * Copy-before-write on the guest's path: before a write, zero or trim
 * changes a cluster that some active snapshot still needs, the
 * cluster's current contents are copied to the target once, for every
 * snapshot that needs them.  Locking rules: snapshot-int.h.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nbdkit-filter.h>

#include "quiesce.h"
#include "snapshot-int.h"
#include "snapshot.h"
#include "target.h"

extern int cbw_debug_copy;

/* Largest piece copied in one go. */
#define COPY_CHUNK (4 * 1024 * 1024)

/* Each nbdkit worker thread keeps one page-aligned copy buffer, grown
 * to the largest copy it made, freed when the thread exits: no
 * malloc/free per copy.  (The profile, docs/performance.md, showed
 * glibc serving the per-copy malloc from the heap after the first few,
 * so this saves little; it keeps the path free of allocator locks and
 * of the mmap/munmap a large first copy costs.)  Thread-local, so no
 * lock.
 */
static pthread_key_t copybuf_key;
static pthread_once_t copybuf_once = PTHREAD_ONCE_INIT;

struct copybuf {
  void *p;
  size_t cap;
};

static void
copybuf_free (void *v)
{
  struct copybuf *b = v;

  free (b->p);
  free (b);
}

static void
copybuf_init (void)
{
  if (pthread_key_create (&copybuf_key, copybuf_free) != 0)
    abort ();
}

/* A buffer of at least len bytes for this thread, or NULL (errno). */
static void *
copybuf_get (size_t len)
{
  struct copybuf *b;
  void *p;
  int e;

  pthread_once (&copybuf_once, copybuf_init);
  b = pthread_getspecific (copybuf_key);
  if (b == NULL) {
    b = calloc (1, sizeof *b);
    if (b == NULL || pthread_setspecific (copybuf_key, b) != 0) {
      free (b);
      errno = ENOMEM;
      return NULL;
    }
  }
  if (b->cap < len) {
    e = posix_memalign (&p, 4096, len);
    if (e != 0) {
      errno = e;
      return NULL;
    }
    free (b->p);
    b->p = p;
    b->cap = len;
  }
  return b->p;
}

/* Which snapshots still need cluster c: a bit per index in snaps[].
 * Caller holds state_lock.
 */
static unsigned
needers (uint64_t c)
{
  unsigned i, mask = 0;

  for (i = 0; i < SNAP_MAX; i++) {
    const struct snapshot *s = snaps[i];

    if (s && s->broken == NULL && c < s->nclusters &&
        bitset_test (&s->need, c))
      mask |= 1u << i;
  }
  return mask;
}

/* The first cluster in [c, end) that some snapshot needs, or end.
 * Caller holds state_lock.
 */
static uint64_t
next_needed (uint64_t c, uint64_t end)
{
  uint64_t first = end, n;
  unsigned i;

  for (i = 0; i < SNAP_MAX; i++) {
    const struct snapshot *s = snaps[i];

    if (s == NULL || s->broken || c >= s->nclusters)
      continue;
    n = bitset_next_set (&s->need, c);
    if (n < first)
      first = n;
  }
  return first;
}

static void
deadline_from_now (struct timespec *deadline)
{
  clock_gettime (CLOCK_MONOTONIC, deadline);
  deadline->tv_sec += cbw_config.timeout;
}

/* Bytes of the copy of [c, c+n): the largest needing snapshot's view
 * (a snapshot of a smaller disk reads only its part of the last
 * cluster).
 */
static uint32_t
copy_bytes (unsigned mask, uint64_t c, uint64_t n)
{
  uint64_t len = 0, l;
  unsigned i;

  for (i = 0; i < SNAP_MAX; i++) {
    if (mask & (1u << i)) {
      l = cluster_bytes (snaps[i], c, n);
      if (l > len)
        len = l;
    }
  }
  return len;
}

/* Record the copy of [c, c+n) at slot for every snapshot in mask.
 * Caller holds state_lock.
 */
static int
record_copy (unsigned mask, uint64_t c, uint64_t n, uint64_t slot)
{
  unsigned i;

  for (i = 0; i < SNAP_MAX; i++) {
    struct snapshot *s = snaps[i];

    if (!(mask & (1u << i)))
      continue;
    if (slot != c) {
      if ((s->moved.nbits == 0 &&
           bitset_init (&s->moved, s->nclusters) == -1) ||
          slotmap_put (&s->slots, c, slot) == -1)
        return -1;
      bitset_set (&s->moved, c);
    }
    bitset_clear_range (&s->need, c, n);
    bitset_set_range (&s->copied, c, n);
    s->clusters_copied += n;
    s->target_bytes += cluster_bytes (s, c, n);
  }
  return 0;
}

/* Copy clusters [c, c+n), which the snapshots in mask need, to slot.
 * Caller holds them EXCLUSIVE.  Returns 0 when copied, 1 when nothing
 * was copied because the disk shrank (the snapshots are broken), -1 on
 * failure.
 */
static int
copy_clusters (nbdkit_next *next, unsigned mask, uint64_t c, uint64_t n,
               uint64_t slot, int *err)
{
  struct timespec deadline;
  const struct timespec *dl = NULL;
  uint64_t offset = c * cs ();
  uint32_t len = copy_bytes (mask, c, n);
  int64_t size;
  void *buf;
  bool lent;
  int r = -1;
  unsigned i;

  if (cbw_config.timeout) {
    deadline_from_now (&deadline);
    dl = &deadline;
  }
  size = next->get_size (next);
  if (size >= 0 && offset + len > (uint64_t) size) {
    /* Never read past the end this context knows (nbdkit would abort):
     * the disk shrank under these snapshots.
     */
    for (i = 0; i < SNAP_MAX; i++)
      if (mask & (1u << i))
        break_shrunk (snaps[i], size);
    return 1;
  }
  /* Read straight into the target's memory when it has some to lend
   * (cbw-buffer): one memory copy less on the guest's path.
   */
  buf = target_get_buffer (len);
  lent = buf != NULL;
  if (!lent)
    buf = copybuf_get (len);
  if (buf == NULL) {
    *err = errno;
    return -1;
  }
  if (next->pread (next, buf, len, offset, 0, err) == -1) {
    if (lent)
      target_put_buffer (buf);
    goto out;
  }
  if (target_write (buf, len, slot * cs (), dl, err) == -1)
    goto out;

  pthread_mutex_lock (&state_lock);
  if (store_lost_take (slot, slot + n, err)) {
    /* cbw-buffer's writer already failed to write it (target-buffer.c). */
    pthread_mutex_unlock (&state_lock);
    goto out;
  }
  r = record_copy (mask, c, n, slot);
  pthread_mutex_unlock (&state_lock);
  if (r == -1) {
    *err = ENOMEM;
    goto out;
  }
  if (cbw_debug_copy)
    nbdkit_debug ("cbw: copied %" PRIu32 " bytes at %" PRIu64 " to slot %"
                  PRIu64 " for %u snapshot(s)", len, offset, slot,
                  (unsigned) __builtin_popcount (mask));
 out:
  return r;
}

/* A copy for the snapshots in mask failed with err. */
static int
copy_failed (unsigned mask, uint64_t c, int *err)
{
  unsigned i;
  char *why;

  nbdkit_debug ("cbw: copy at %" PRIu64 " failed: %s",
                c * cs (), strerror (*err));
  pthread_mutex_lock (&state_lock);
  for (i = 0; i < SNAP_MAX; i++) {
    struct snapshot *s = snaps[i];

    if (!(mask & (1u << i)))
      continue;
    set_last_error (s, "copy-before-write", c * cs (), *err);
    s->copy_errors++;
    if (cbw_config.on_error == CBW_BREAK_SNAPSHOT) {
      if (asprintf (&why, "copy-before-write of offset %" PRIu64
                    " failed: %s", c * cs (), strerror (*err)) == -1)
        why = NULL;
      break_locked (s, why);
    }
  }
  pthread_mutex_unlock (&state_lock);
  if (cbw_config.on_error == CBW_BREAK_SNAPSHOT)
    return 0;
  nbdkit_error ("cbw: copy-before-write of offset %" PRIu64 " failed (%s); "
                "failing the guest's write (cbw-on-error=break-guest-write)",
                c * cs (), strerror (*err));
  *err = guest_errno (*err);
  return -1;
}

/* The target reached cbw-target-limit under break-snapshot: the
 * newest snapshot in mask breaks, and the copies only it held are
 * freed, so that the older snapshots can go on.  Returns mask without
 * it; the freed slots are appended to *freed (*nfreed of them).
 * Caller holds state_lock.
 */
static unsigned
break_newest (unsigned mask, uint64_t **freed, size_t *nfreed)
{
  struct snapshot *s = NULL;
  unsigned i, k = 0;
  uint64_t c, slot, *f;
  char *why;

  for (i = 0; i < SNAP_MAX; i++)
    if ((mask & (1u << i)) && (s == NULL || snaps[i]->id > s->id)) {
      s = snaps[i];
      k = i;
    }
  if (asprintf (&why, "the fleecing target reached cbw-target-limit=%"
                PRIu64 "; this was the newest snapshot that needed a copy, "
                "so it broke and gave back its space", cbw_config.target_limit)
      == -1)
    why = NULL;
  break_locked (s, why);
  s->copy_errors++;
  f = realloc (*freed, (*nfreed + bitset_count (&s->copied) + 1) * sizeof *f);
  if (f)
    *freed = f;
  for (c = bitset_next_set (&s->copied, 0); c < s->nclusters;
       c = bitset_next_set (&s->copied, c + 1)) {
    slot = drop_copy (s, c);
    if (slot != UINT64_MAX && f)
      f[(*nfreed)++] = slot;
  }
  s->target_bytes = 0;
  return mask & ~(1u << k);
}

/* Copy every cluster of [c0, c1] that some snapshot still needs.
 * Caller holds them EXCLUSIVE.
 */
static int
copy_range (nbdkit_next *next, uint64_t c0, uint64_t c1, int *err)
{
  const uint64_t chunk = COPY_CHUNK > cs () ? COPY_CHUNK / cs () : 1;
  uint64_t c = c0, n, slot, *freed = NULL;
  size_t nfreed = 0, i;
  unsigned mask;
  int r;

  for (;;) {
    pthread_mutex_lock (&state_lock);
    c = next_needed (c, c1 + 1);
    if (c > c1) {
      pthread_mutex_unlock (&state_lock);
      free (freed);
      return 0;
    }
    /* The run of clusters needed by exactly the same snapshots. */
    mask = needers (c);
    for (n = 1; n < chunk && c + n <= c1 && needers (c + n) == mask; n++)
      ;
    r = store_reserve (c, &n, &slot, err);
    while (r == -1 && *err == ENOSPC && store_at_limit () &&
           cbw_config.on_error == CBW_BREAK_SNAPSHOT && mask) {
      mask = break_newest (mask, &freed, &nfreed);
      if (mask)
        r = store_reserve (c, &n, &slot, err);
    }
    pthread_mutex_unlock (&state_lock);
    if (nfreed) {
      for (i = 0; i < nfreed; i++)
        target_release (freed[i] * cs (), cs ());
      nfreed = 0;
    }
    if (mask == 0) {            /* every snapshot that needed it broke */
      c += n;
      continue;
    }

    if (r == 0)
      r = copy_clusters (next, mask, c, n, slot, err);
    else
      r = -2;                   /* no room: nothing reserved */
    if (r == -1 || r == 1) {
      pthread_mutex_lock (&state_lock);
      store_unreserve (c, n, slot);
      pthread_mutex_unlock (&state_lock);
    }
    if (r < 0 && copy_failed (mask, c, err) == -1) {
      free (freed);
      return -1;
    }
    c += n;
  }
}

int
snapshot_before_write (nbdkit_next *next, uint32_t count, uint64_t offset,
                       bool fast_zero, int *err)
{
  struct rangelock_entry e;
  uint64_t c0, c1, end = 0;
  bool any;
  unsigned i;
  int r;

  for (;;) {
    pthread_rwlock_rdlock (&snap_gate);
    if (!quiesce_holding ())
      break;
    pthread_rwlock_unlock (&snap_gate);
    quiesce_wait ();
  }
  if (nsnaps == 0 || count == 0)
    return 0;
  for (i = 0; i < SNAP_MAX; i++)
    if (snaps[i] && snaps[i]->size > end)
      end = snaps[i]->size;
  if (offset >= end)
    return 0;
  if (offset + count < end)
    end = offset + count;
  c0 = offset / cs ();
  c1 = (end - 1) / cs ();
  pthread_mutex_lock (&state_lock);
  any = next_needed (c0, c1 + 1) <= c1;
  pthread_mutex_unlock (&state_lock);
  if (!any)
    return 0;
  if (fast_zero) {
    pthread_rwlock_unlock (&snap_gate);
    *err = ENOTSUP;
    return -1;
  }

  rangelock_lock (&snap_ranges, &e, c0 * cs (), (c1 - c0 + 1) * cs (),
                  RANGELOCK_EXCLUSIVE);
  r = copy_range (next, c0, c1, err);
  rangelock_unlock (&snap_ranges, &e);
  if (r == -1)
    pthread_rwlock_unlock (&snap_gate);
  return r;
}

void
snapshot_after_write (void)
{
  pthread_rwlock_unlock (&snap_gate);
}

/* Does s hold a copy in slots [lo, hi)?  Caller holds state_lock. */
static bool
holds_slots (const struct snapshot *s, uint64_t lo, uint64_t hi)
{
  uint64_t c;

  /* Identity slots: slot c holds cluster c unless c was moved. */
  for (c = lo < s->nclusters ? bitset_next_set (&s->copied, lo)
         : s->nclusters;
       c < hi && c < s->nclusters;
       c = bitset_next_set (&s->copied, c + 1))
    if (!is_moved (s, c))
      return true;
  return s->moved.nbits != 0 && slotmap_any_in (&s->slots, lo, hi);
}

void
snapshot_target_lost (uint64_t offset, uint64_t count, int err)
{
  const uint64_t lo = offset / cs ();
  const uint64_t hi = (offset + count + cs () - 1) / cs ();
  unsigned i;
  char *why;
  bool held = false, any = false;

  pthread_mutex_lock (&state_lock);
  for (i = 0; i < SNAP_MAX; i++) {
    struct snapshot *s = snaps[i];

    if (s == NULL)
      continue;
    any = true;
    if (!holds_slots (s, lo, hi))
      continue;
    held = true;
    if (s->broken)
      continue;
    set_last_error (s, "writing buffered copies to the target", offset, err);
    s->copy_errors++;
    if (asprintf (&why, "writing buffered copies (cbw-buffer) to the "
                  "fleecing target at %" PRIu64 " failed after the guest "
                  "writes completed: %s", offset, strerror (err)) == -1)
      why = NULL;
    break_locked (s, why);
  }
  /* Not recorded yet: the copy that queued it is still on its way and
   * fails when it records (or the slot was released: nothing to do,
   * and the next reservation of the slot forgets it).
   */
  if (!held && any && store_lost_add (lo, hi, err) == -1)
    nbdkit_error ("cbw-buffer: out of memory recording a lost write");
  pthread_mutex_unlock (&state_lock);
}
