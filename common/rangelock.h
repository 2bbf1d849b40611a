/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * Range lock: requests on disjoint byte ranges run in parallel,
 * overlapping requests are serialised.  A request is SHARED (any
 * number of overlapping shared holders) or EXCLUSIVE (no overlapping
 * holder at all).
 *
 * Fairness: requests are granted in arrival order among those that
 * conflict.  A request is granted as soon as no *earlier* request
 * (held or still waiting) conflicts with it, so a stream of shared
 * requests cannot starve an exclusive one, and since a request never
 * waits for a later one there is no deadlock inside the lock itself.
 *
 * Callers own the entry (usually on their stack) so lock and unlock
 * never allocate.  A thread must not request a range that conflicts
 * with a range it already holds (that would deadlock).
 *
 * Lock: struct rangelock.lock protects the list of entries; an entry
 * is in the list from rangelock_lock until rangelock_unlock.
 */

#ifndef FLEECE_RANGELOCK_H
#define FLEECE_RANGELOCK_H

#include <stdbool.h>
#include <stdint.h>
#include <pthread.h>

enum rangelock_mode {
  RANGELOCK_SHARED,
  RANGELOCK_EXCLUSIVE,
};

struct rangelock_entry {
  uint64_t start, end;          /* [start, end) */
  enum rangelock_mode mode;
  bool granted;
  struct rangelock_entry *prev, *next;  /* arrival order */
};

struct rangelock {
  pthread_mutex_t lock;
  pthread_cond_t cond;          /* broadcast whenever an entry leaves */
  struct rangelock_entry *head, *tail;
};

extern void rangelock_init (struct rangelock *rl);
/* The lock must be empty (nothing held or waiting). */
extern void rangelock_destroy (struct rangelock *rl);

/* Take [offset, offset+len).  len == 0 locks nothing but still
 * succeeds.  Blocks until granted.
 */
extern void rangelock_lock (struct rangelock *rl,
                            struct rangelock_entry *e,
                            uint64_t offset, uint64_t len,
                            enum rangelock_mode mode);
/* Like rangelock_lock but never waits: returns true if granted, false
 * (and e is not in the lock) if some earlier request conflicts.
 */
extern bool rangelock_trylock (struct rangelock *rl,
                               struct rangelock_entry *e,
                               uint64_t offset, uint64_t len,
                               enum rangelock_mode mode);
extern void rangelock_unlock (struct rangelock *rl,
                              struct rangelock_entry *e);

/* Number of entries held or waiting (for tests and status). */
extern unsigned rangelock_count (struct rangelock *rl);

#endif /* FLEECE_RANGELOCK_H */
