/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * Populating clusters: copy-on-read, fill-before-partial-write, and
 * making clusters durable (flush the disk, then set D).  The maps and
 * their rules are in stream.h; the crash argument in the man page.
 *
 * Population writes (base data copied into the disk) and the flushes
 * that precede D go through st.wnext, a writable context the filter
 * opens on the plugin in .after_fork, because a guest connection may
 * be read-only.  The guest's own data goes through the guest's next.
 *
 * Lock for the shared flush: flush_lock protects flush_begun,
 * flush_done, flushing and results[].  Invariant: flushes are run one
 * at a time, numbered 1, 2, ...; flush_done is the number of the last
 * one finished and results[n % RESULTS] holds the outcome of flush n
 * (while it is among the last RESULTS).  A caller needs a flush that
 * began after its own writes finished: number flush_begun + 1 as seen
 * when it arrives.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <nbdkit-filter.h>

#include "fine-bits.h"
#include "stream.h"

nbdkit_next *st_wnext;          /* set in .after_fork, see job.c */

#define RESULTS 64

static pthread_mutex_t flush_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t flush_cond = PTHREAD_COND_INITIALIZER;
static uint64_t flush_begun, flush_done;
static bool flushing;
static struct { uint64_t seq; int err; } results[RESULTS];

static bool fine_failed;        /* G could not be written: logged once */

/* Longest run of clusters one copy-on-read fetches at once. */
#define MAX_RUN_BYTES (4 * 1024 * 1024)

void
pop_init (void)
{
}

int
pop_flush (nbdkit_next *next, int *err)
{
  uint64_t target, n;
  int r = 0, e;

  /* A plugin without multi-conn consistency may flush only what came
   * through the flushed connection: flush the guest's first.
   */
  if (!st.multi_conn && next != NULL && next != st_wnext &&
      next->flush (next, 0, err) == -1) {
    nbdkit_error ("stream: flushing the disk failed: clusters cannot be "
                  "marked populated");
    return -1;
  }
  pthread_mutex_lock (&flush_lock);
  target = flush_begun + 1;
  while (flush_done < target) {
    if (!flushing) {
      flushing = true;
      n = ++flush_begun;
      pthread_mutex_unlock (&flush_lock);
      e = 0;
      if (st_wnext->flush (st_wnext, 0, &e) == -1 && e == 0)
        e = EIO;
      pthread_mutex_lock (&flush_lock);
      results[n % RESULTS].seq = n;
      results[n % RESULTS].err = e;
      flush_done = n;
      flushing = false;
      pthread_cond_broadcast (&flush_cond);
    }
    else
      pthread_cond_wait (&flush_cond, &flush_lock);
  }
  if (results[target % RESULTS].seq != target)
    e = EIO;                    /* too old to know: assume the worst */
  else
    e = results[target % RESULTS].err;
  pthread_mutex_unlock (&flush_lock);
  if (e) {
    nbdkit_error ("stream: flushing the disk failed (%s): clusters cannot "
                  "be marked populated", strerror (e));
    *err = e;
    r = -1;
  }
  return r;
}

void
pop_set_filled (uint64_t first, uint64_t n)
{
  bitset_set_range_atomic (&st.filled, first, n);
  __atomic_add_fetch (&st.filled_count, n, __ATOMIC_SEQ_CST);
  if (st.fine == NULL)
    return;
  if (fine_bits_set_write (st.fine, first, n) == 0)
    pending_add (first, n);
  else if (!__atomic_exchange_n (&fine_failed, true, __ATOMIC_SEQ_CST))
    nbdkit_error ("stream-state=%s: cannot write the page-cache map (%m): "
                  "first writes to clusters now wait until they are "
                  "durable, as with stream-sync=write",
                  stream_config.state_path);
}

/* stream-sync=flush: whether every cluster of [c0, c1] has D or G, so
 * a write to it needs nothing before its reply.
 */
static bool
all_written (uint64_t c0, uint64_t c1)
{
  uint64_t c;

  for (c = c0; c <= c1; c++)
    if (!durable_bits_test (st.durable, c, 1) &&
        !fine_bits_test (st.fine, c, 1))
      return false;
  return true;
}

/* After a guest write to [c0, c1], every cluster filled: with
 * stream-sync=flush and no FUA, the reply may go once G is written;
 * otherwise once D is durable.
 */
static int
after_write (nbdkit_next *next, uint64_t c0, uint64_t c1, uint32_t flags,
             int *err)
{
  if (st.fine && !(flags & NBDKIT_FLAG_FUA) && all_written (c0, c1))
    return 0;
  return pop_make_durable (next, c0, c1 - c0 + 1, err);
}

static uint64_t
range_bytes (uint64_t first, uint64_t n)
{
  uint64_t end = cluster_start (first + n);

  if (end > st.disk_size)
    end = st.disk_size;
  return end - cluster_start (first);
}

static bool
is_zero (const void *buf, uint64_t len)
{
  const unsigned char *p = buf;

  if (len == 0)
    return true;
  return p[0] == 0 && memcmp (p, p + 1, len - 1) == 0;
}

int
pop_fill (nbdkit_next *unused, uint64_t first, uint64_t n, void *buf,
          int *err)
{
  uint64_t start = cluster_start (first), len = range_bytes (first, n);
  void *bounce = buf;
  int r;

  if (bounce == NULL) {
    bounce = malloc (len);
    if (bounce == NULL) {
      *err = ENOMEM;
      nbdkit_error ("stream: malloc: %m");
      return -1;
    }
  }
  if (base_pread (bounce, len, start, err) == -1) {
    nbdkit_error ("stream: cannot read [%" PRIu64 ", %" PRIu64 ") from "
                  "stream-base=%s, and it is not yet populated locally: "
                  "the request fails with EIO (never zeroes); it works "
                  "again once the base is back", start, start + len,
                  stream_config.base_uri);
    *err = EIO;
    r = -1;
  }
  else if (st.can_zero > 0 && is_zero (bounce, len))
    r = st_wnext->zero (st_wnext, len, start, NBDKIT_FLAG_MAY_TRIM, err);
  else
    r = st_wnext->pwrite (st_wnext, bounce, len, start, 0, err);
  if (bounce != buf)
    free (bounce);
  return r;
}

int
pop_make_durable (nbdkit_next *next, uint64_t first, uint64_t n, int *err)
{
  if (pop_flush (next, err) == -1)
    return -1;
  if (durable_bits_set_wait (st.durable, first, n) == -1) {
    *err = errno ? errno : EIO;
    nbdkit_error ("stream-state=%s: cannot write the populated-cluster "
                  "map (%m): writes to unpopulated clusters fail until "
                  "restart", stream_config.state_path);
    return -1;
  }
  return 0;
}

uint64_t
pop_bytes_done (void)
{
  uint64_t n = __atomic_load_n (&st.filled_count, __ATOMIC_SEQ_CST);
  uint64_t b = n << st.cluster_bits;

  if (stream_is_complete ())
    return st.disk_size;
  return b > st.disk_size ? st.disk_size : b;
}

/* Copy-on-read.  Populated clusters are read from the disk; a run of
 * unpopulated ones is taken EXCLUSIVE, checked again (another request
 * may have filled them while this one waited), read from the base in
 * one request, written to the disk, marked F, and served from the
 * bytes read.  So concurrent readers of one cluster fetch it once.
 */
int
pop_pread (nbdkit_next *next, void *buf, uint32_t count, uint64_t offset,
           uint32_t flags, int *err)
{
  uint64_t end = offset + count, c, c1, pos = offset;
  char *out = buf;

  if (stream_is_complete () || count == 0)
    return next->pread (next, buf, count, offset, flags, err);

  c = cluster_of (offset);
  c1 = cluster_of (end - 1);
  while (c <= c1) {
    uint64_t k, run_end;

    if (is_filled (c)) {
      for (k = c + 1; k <= c1 && is_filled (k); k++)
        ;
      run_end = cluster_start (k) < end ? cluster_start (k) : end;
      if (next->pread (next, out + (pos - offset), run_end - pos, pos,
                       flags, err) == -1)
        return -1;
      pos = run_end;
      c = k;
      continue;
    }

    /* A run of unpopulated clusters. */
    {
      struct rangelock_entry e;
      uint64_t max = MAX_RUN_BYTES >> st.cluster_bits, lock_end, s;
      char *bounce = NULL;
      int r = 0;

      if (max == 0)
        max = 1;
      for (k = c + 1; k <= c1 && k - c < max && !is_filled (k); k++)
        ;
      lock_end = cluster_start (k) < st.disk_size
        ? cluster_start (k) : st.disk_size;
      rangelock_lock (&st.locks, &e, cluster_start (c),
                      lock_end - cluster_start (c), RANGELOCK_EXCLUSIVE);
      /* Serve [c, k) in sub-runs of equal F. */
      s = c;
      while (s < k && r == 0) {
        bool f = is_filled (s);
        uint64_t t, a, b;

        for (t = s + 1; t < k && is_filled (t) == f; t++)
          ;
        a = cluster_start (s) > pos ? cluster_start (s) : pos;
        b = cluster_start (t) < end ? cluster_start (t) : end;
        if (f)
          r = next->pread (next, out + (a - offset), b - a, a, flags, err);
        else {
          bounce = malloc (range_bytes (s, t - s));
          if (bounce == NULL) {
            *err = ENOMEM;
            r = -1;
            break;
          }
          r = pop_fill (next, s, t - s, bounce, err);
          if (r == 0) {
            pop_set_filled (s, t - s);
            memcpy (out + (a - offset), bounce + (a - cluster_start (s)),
                    b - a);
          }
          free (bounce);
          bounce = NULL;
        }
        s = t;
      }
      rangelock_unlock (&st.locks, &e);
      if (r == -1)
        return -1;
      pos = cluster_start (k) < end ? cluster_start (k) : end;
      c = k;
    }
  }
  return 0;
}

/* Whether cluster c lies wholly inside [offset, end). */
static bool
covered (uint64_t c, uint64_t offset, uint64_t end)
{
  return cluster_start (c) >= offset &&
    cluster_start (c) + cluster_len (c) <= end;
}

/* Write, zero or trim.  Clusters whose D bit is set (with
 * stream-sync=flush: D or G): straight through.  Otherwise the range
 * is taken EXCLUSIVE if any of its clusters is not yet filled; a
 * partly covered unfilled cluster at either end is first filled from
 * the base; then the guest's request goes to the disk, every cluster
 * of the range is F, and the request is acknowledged only after the
 * disk was flushed and D is durable for all of them (invariant 10);
 * with stream-sync=flush, once G is written for all of them (set
 * with F), unless FUA asks for durability now.
 */
int
pop_modify (nbdkit_next *next, enum fleece_write_op op, const void *buf,
            uint32_t count, uint64_t offset, uint32_t flags, int *err)
{
  uint64_t end = offset + count, c0, c1, c;
  struct rangelock_entry e;
  bool locked = false;
  int r;

  if (stream_is_complete () || count == 0)
    return fleece_next_write (next, op, buf, count, offset, flags, err);
  c0 = cluster_of (offset);
  c1 = cluster_of (end - 1);
  if (durable_bits_test (st.durable, c0, c1 - c0 + 1))
    return fleece_next_write (next, op, buf, count, offset, flags, err);
  if (st.fine && all_written (c0, c1)) {
    if (fleece_next_write (next, op, buf, count, offset, flags, err) == -1)
      return -1;
    return after_write (next, c0, c1, flags, err);
  }

  for (c = c0; c <= c1; c++)
    if (!is_filled (c)) {
      locked = true;
      break;
    }
  if (locked) {
    uint64_t lend = cluster_start (c1) + cluster_len (c1);
    uint64_t ends[2] = { c0, c1 };
    int i;

    rangelock_lock (&st.locks, &e, cluster_start (c0),
                    lend - cluster_start (c0), RANGELOCK_EXCLUSIVE);
    for (i = 0; i < 2; i++) {
      c = ends[i];
      if (i == 1 && c1 == c0)
        break;
      if (is_filled (c) || covered (c, offset, end))
        continue;
      if (op == FLEECE_OP_ZERO && (flags & NBDKIT_FLAG_FAST_ZERO)) {
        *err = ENOTSUP;
        rangelock_unlock (&st.locks, &e);
        return -1;
      }
      if (pop_fill (next, c, 1, NULL, err) == -1) {
        rangelock_unlock (&st.locks, &e);
        return -1;
      }
      pop_set_filled (c, 1);
    }
  }
  r = fleece_next_write (next, op, buf, count, offset, flags, err);
  if (locked) {
    if (r == 0) {
      for (c = c0; c <= c1; c++) {
        uint64_t k;

        if (is_filled (c))
          continue;
        for (k = c + 1; k <= c1 && !is_filled (k); k++)
          ;
        pop_set_filled (c, k - c);
        c = k - 1;
      }
    }
    rangelock_unlock (&st.locks, &e);
  }
  if (r == -1)
    return -1;
  return after_write (next, c0, c1, flags, err);
}
