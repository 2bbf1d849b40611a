/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * stream-sync=flush: the pending set P and the guest's flush (the maps
 * and the crash argument are in stream.h and the man page).
 *
 * A cluster enters P after its G bit was written (pop_set_filled), so
 * after its contents reached the disk's page cache.  The guest's flush
 * (pending_commit) takes P, flushes the disk, and only then makes D
 * durable for what it took: D never runs ahead of the disk.  A flush
 * that fails puts what it took back into P.
 *
 * P is a bitset with a summary S, one bit per BLOCK_BITS clusters, so
 * that a flush visits only the blocks written since the last one.
 * Writers set P bits, then the S bit, with atomic ORs and no lock; the
 * flush takes S words, then the P words of each block it names, with
 * atomic exchanges.  A writer that sets its S bit after the flush took
 * S is seen by the next flush, which is all it needs: its reply, and
 * so the guest's next flush, come after the S bit is set.
 *
 * Lock: commit_lock serialises the flushes (taken is theirs, and a
 * flush must not return while an earlier one it overlapped still holds
 * clusters: one at a time makes every flush cover everything taken
 * before it returns).  It is taken before pop_flush's flush_lock and
 * durable-bits' lock, never after.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <nbdkit-filter.h>

#include "stream.h"

#define BLOCK_BITS 4096                 /* clusters per summary bit */
#define BLOCK_WORDS (BLOCK_BITS / 64)

static struct bitset pending;           /* P: atomic ORs and exchanges */
static struct bitset summary;           /* S: likewise */
static pthread_mutex_t commit_lock = PTHREAD_MUTEX_INITIALIZER;
static struct bitset taken;             /* under commit_lock */
static uint64_t *taken_blocks;          /* under commit_lock */

int
pending_init (void)
{
  uint64_t nblocks = (st.nclusters + BLOCK_BITS - 1) / BLOCK_BITS;

  if (bitset_init (&pending, st.nclusters) == -1 ||
      bitset_init (&taken, st.nclusters) == -1 ||
      bitset_init (&summary, nblocks) == -1 ||
      (taken_blocks = malloc ((nblocks ? nblocks : 1) * sizeof (uint64_t)))
      == NULL) {
    nbdkit_error ("stream: cannot allocate the pending-cluster map: %m");
    return -1;
  }
  return 0;
}

void
pending_free (void)
{
  bitset_free (&pending);
  bitset_free (&taken);
  bitset_free (&summary);
  free (taken_blocks);
  taken_blocks = NULL;
}

void
pending_add (uint64_t first, uint64_t n)
{
  uint64_t b0 = first / BLOCK_BITS;

  if (n == 0)
    return;
  bitset_set_range_atomic (&pending, first, n);
  bitset_set_range_atomic (&summary, b0,
                           (first + n - 1) / BLOCK_BITS - b0 + 1);
}

static uint64_t
words_in (const struct bitset *bm)
{
  return (bm->nbits + 63) / 64;
}

/* One past the last word of block b (P and taken have the same size). */
static uint64_t
block_end (uint64_t b)
{
  uint64_t end = (b + 1) * BLOCK_WORDS;

  return end < words_in (&pending) ? end : words_in (&pending);
}

/* Move P into taken; returns the number of blocks in taken_blocks. */
static uint64_t
take (void)
{
  uint64_t i, nb = 0;

  for (i = 0; i < words_in (&summary); i++) {
    uint64_t w = __atomic_exchange_n (&summary.words[i], 0,
                                      __ATOMIC_SEQ_CST);

    while (w) {
      uint64_t b = i * 64 + __builtin_ctzll (w), k;

      w &= w - 1;
      taken_blocks[nb++] = b;
      for (k = b * BLOCK_WORDS; k < block_end (b); k++)
        taken.words[k] |= __atomic_exchange_n (&pending.words[k], 0,
                                               __ATOMIC_SEQ_CST);
    }
  }
  return nb;
}

/* Put taken back into P (the flush failed), or just clear it. */
static void
give_back (uint64_t nb, bool restore)
{
  uint64_t j, k;

  for (j = 0; j < nb; j++) {
    uint64_t b = taken_blocks[j];

    for (k = b * BLOCK_WORDS; k < block_end (b); k++) {
      if (restore && taken.words[k])
        __atomic_fetch_or (&pending.words[k], taken.words[k],
                           __ATOMIC_SEQ_CST);
      taken.words[k] = 0;
    }
    if (restore)
      bitset_set_range_atomic (&summary, b, 1);
  }
}

/* For each run of set bits in the taken blocks: ask for D (wait
 * false), or wait until D is durable (wait true).  0 or -1.
 */
static int
each_run (uint64_t nb, bool wait)
{
  uint64_t j;

  for (j = 0; j < nb; j++) {
    uint64_t c = taken_blocks[j] * BLOCK_BITS;
    uint64_t end = c + BLOCK_BITS < st.nclusters
      ? c + BLOCK_BITS : st.nclusters;

    while ((c = bitset_next_set (&taken, c)) < end) {
      uint64_t k = bitset_next_clear (&taken, c);

      if (k > end)
        k = end;
      if (!wait)
        durable_bits_ask (st.durable, c, k - c);
      else if (durable_bits_set_wait (st.durable, c, k - c) == -1)
        return -1;
      c = k;
    }
  }
  return 0;
}

int
pending_commit (nbdkit_next *next, int *err)
{
  uint64_t nb;
  int r = 0;

  pthread_mutex_lock (&commit_lock);
  nb = take ();
  if (pop_flush (next, err) == -1)
    r = -1;
  else if (nb > 0) {
    each_run (nb, false);
    if (each_run (nb, true) == -1) {
      *err = errno ? errno : EIO;
      nbdkit_error ("stream-state=%s: cannot write the populated-cluster "
                    "map (%m): the flush fails", stream_config.state_path);
      r = -1;
    }
  }
  give_back (nb, r == -1);
  pthread_mutex_unlock (&commit_lock);
  return r;
}

uint64_t
pending_count (void)
{
  uint64_t i, n = 0;

  if (pending.words == NULL)
    return 0;
  for (i = 0; i < words_in (&pending); i++) {
    uint64_t w = __atomic_load_n (&pending.words[i], __ATOMIC_RELAXED);

    /* The job may have made some durable already. */
    for (; w; w &= w - 1)
      n += !durable_bits_test (st.durable, i * 64 + __builtin_ctzll (w), 1);
  }
  return n;
}
