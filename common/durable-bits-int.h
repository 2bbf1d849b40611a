/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * Durable bits, shared between durable-bits.c (commits, waiting) and
 * durable-bits-switch.c (moving to a new file).  The contract, the
 * crash argument and the locks are in durable-bits.h.
 *
 * Invariants (d->lock held to read or change them, except durable's
 * words, see the header):
 *  - durable ⊆ wanted: a bit is durable only after a commit wrote a
 *    page holding it and fdatasync returned;
 *  - a page of wanted that holds a bit not yet written since it was
 *    asked for has its dirty flag set, or is in the batch the commit
 *    thread is writing (committing);
 *  - fd == -1 only between switch_begin and switch_end (or before the
 *    first attach): nothing is committed and durable is all clear, so
 *    every waiter waits for the new file;
 *  - bits past nbits are never set in wanted or durable.
 */

#ifndef FLEECE_DURABLE_BITS_INT_H
#define FLEECE_DURABLE_BITS_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "durable-bits.h"
#include "words.h"


struct durable_bits {
  pthread_mutex_t lock;
  pthread_cond_t work;                  /* the commit thread waits */
  pthread_cond_t done;                  /* waiters and switches wait */
  pthread_t thread;
  bool thread_started, stop;

  int fd;                               /* -1: no file (switching) */
  uint64_t offset;
  uint64_t nbits, nwords, npages;
  uint64_t *wanted;
  uint64_t *durable;                    /* atomic words */
  unsigned char *dirty;                 /* one flag per page */
  bool any_dirty, committing;
  int error;                            /* sticky errno of this era */

  /* Between switch_begin and switch_end: the old era, and the new
   * era's initial bits (durable once its file is in place).
   */
  bool switching;
  int old_fd;
  uint64_t old_offset, old_nbits;
  uint64_t *old_wanted, *old_durable, *pending_initial;

  struct durable_bits_stats stats;
};

/* Helpers (durable-bits.c).  The ones taking d run with d->lock
 * held, or before the commit thread runs.
 */
extern void durable_store (struct durable_bits *d, const uint64_t *src);
extern void durable_mark_dirty_where_not_durable (struct durable_bits *d,
                                                  const uint64_t *base);
extern void durable_free_maps (uint64_t **a, uint64_t **b);
extern int durable_new_maps (uint64_t nbits, const unsigned char *initial,
                             uint64_t **wanted, uint64_t **durable,
                             unsigned char **dirty);

#endif /* FLEECE_DURABLE_BITS_INT_H */
