/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * Range lock with FIFO fairness.  Every request, held or waiting, sits
 * in one doubly linked list in arrival order.  A request is granted
 * once no earlier entry in the list overlaps it in a conflicting mode
 * (shared/shared never conflicts, anything involving exclusive does).
 * The set of earlier entries only shrinks, and only through unlock, so
 * waiters re-check when unlock broadcasts the condition variable.
 */

#include <config.h>

#include <assert.h>
#include <stdbool.h>
#include <stdint.h>
#include <pthread.h>

#include "rangelock.h"

void
rangelock_init (struct rangelock *rl)
{
  pthread_mutex_init (&rl->lock, NULL);
  pthread_cond_init (&rl->cond, NULL);
  rl->head = rl->tail = NULL;
}

void
rangelock_destroy (struct rangelock *rl)
{
  assert (rl->head == NULL && rl->tail == NULL);
  pthread_cond_destroy (&rl->cond);
  pthread_mutex_destroy (&rl->lock);
}

/* Fill in e for [offset, offset+len), clipping the end at UINT64_MAX. */
static void
entry_init (struct rangelock_entry *e, uint64_t offset, uint64_t len,
            enum rangelock_mode mode)
{
  e->start = offset;
  e->end = len > UINT64_MAX - offset ? UINT64_MAX : offset + len;
  e->mode = mode;
  e->granted = false;
  e->prev = e->next = NULL;
}

/* Empty ranges overlap nothing, so they never conflict. */
static bool
conflicts (const struct rangelock_entry *a, const struct rangelock_entry *b)
{
  if (a->mode == RANGELOCK_SHARED && b->mode == RANGELOCK_SHARED)
    return false;
  if (a->start >= a->end || b->start >= b->end)
    return false;
  return a->start < b->end && b->start < a->end;
}

/* True if no entry before stop conflicts with e (stop == NULL means
 * the whole list, for an entry not yet inserted).  Call with rl->lock.
 */
static bool
grantable (const struct rangelock *rl, const struct rangelock_entry *e,
           const struct rangelock_entry *stop)
{
  const struct rangelock_entry *p;

  for (p = rl->head; p != stop; p = p->next)
    if (conflicts (p, e))
      return false;
  return true;
}

/* Append e at the tail (latest arrival).  Call with rl->lock. */
static void
append (struct rangelock *rl, struct rangelock_entry *e)
{
  e->prev = rl->tail;
  e->next = NULL;
  if (rl->tail)
    rl->tail->next = e;
  else
    rl->head = e;
  rl->tail = e;
}

void
rangelock_lock (struct rangelock *rl, struct rangelock_entry *e,
                uint64_t offset, uint64_t len, enum rangelock_mode mode)
{
  entry_init (e, offset, len, mode);
  pthread_mutex_lock (&rl->lock);
  append (rl, e);
  while (!grantable (rl, e, e))
    pthread_cond_wait (&rl->cond, &rl->lock);
  e->granted = true;
  pthread_mutex_unlock (&rl->lock);
}

bool
rangelock_trylock (struct rangelock *rl, struct rangelock_entry *e,
                   uint64_t offset, uint64_t len, enum rangelock_mode mode)
{
  bool ok;

  entry_init (e, offset, len, mode);
  pthread_mutex_lock (&rl->lock);
  /* Everything already in the list is earlier than e would be. */
  ok = grantable (rl, e, NULL);
  if (ok) {
    append (rl, e);
    e->granted = true;
  }
  pthread_mutex_unlock (&rl->lock);
  return ok;
}

void
rangelock_unlock (struct rangelock *rl, struct rangelock_entry *e)
{
  pthread_mutex_lock (&rl->lock);
  assert (e->granted);
  if (e->prev)
    e->prev->next = e->next;
  else
    rl->head = e->next;
  if (e->next)
    e->next->prev = e->prev;
  else
    rl->tail = e->prev;
  e->prev = e->next = NULL;
  e->granted = false;
  /* Later waiters may now have no conflicting predecessor. */
  pthread_cond_broadcast (&rl->cond);
  pthread_mutex_unlock (&rl->lock);
}

unsigned
rangelock_count (struct rangelock *rl)
{
  const struct rangelock_entry *p;
  unsigned n = 0;

  pthread_mutex_lock (&rl->lock);
  for (p = rl->head; p != NULL; p = p->next)
    n++;
  pthread_mutex_unlock (&rl->lock);
  return n;
}
