/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * cbw-buffer's queue and its writer threads (the design is at the top
 * of target-buffer.c, the lock and invariants in target-buffer-int.h).
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nbdkit-filter.h>

#include "buffer-pool.h"
#include "cbw.h"
#include "monotime.h"
#include "snapshot.h"
#include "target-ops.h"
#include "target-buffer-int.h"

void
buffer_entry_free (struct buffer_target *bt, struct entry *e)
{
  if (buffer_pool_owns (bt->pool, e->alloc))
    buffer_pool_put (bt->pool, e->alloc);
  else
    free (e->alloc);
  free (e);
}

/* Take e out of the queue.  Caller holds lock. */
void
buffer_unlink_entry (struct buffer_target *bt, struct entry *e)
{
  struct entry **p = &bt->head, *prev = NULL;

  while (*p != e) {
    prev = *p;
    p = &(*p)->next;
  }
  *p = e->next;
  if (bt->tail == e)
    bt->tail = prev;
  bt->used -= e->count;
}

/* Drop every queued entry but those being written.  Caller holds lock. */
void
buffer_discard_queued (struct buffer_target *bt)
{
  struct entry *e, *next;

  for (e = bt->head; e; e = next) {
    next = e->next;
    if (!e->writing) {
      buffer_unlink_entry (bt, e);
      buffer_entry_free (bt, e);
    }
  }
  pthread_cond_broadcast (&bt->room);
}

/* The oldest entry nobody writes, if it may be written now (it
 * overlaps no entry being written); else NULL.  *any: there is an
 * entry nobody writes.  Caller holds lock.
 */
static struct entry *
next_to_write (struct buffer_target *bt, bool *any)
{
  struct entry *e, *w;

  for (e = bt->head; e && e->writing; e = e->next)
    ;
  *any = e != NULL;
  if (e == NULL)
    return NULL;
  for (w = bt->head; w != e; w = w->next)
    if (w->offset < e->offset + e->count && e->offset < w->offset + w->count)
      return NULL;
  return e;
}

static void *
writer_main (void *arg)
{
  struct buffer_target *bt = arg;
  struct target *below = bt->t.below;
  struct timespec ts;
  struct entry *e;
  bool any;
  int err = 0, r;

  pthread_mutex_lock (&bt->lock);
  for (;;) {
    while ((e = next_to_write (bt, &any)) == NULL && !(bt->stop && !any))
      pthread_cond_wait (&bt->work, &bt->lock);
    if (e == NULL)
      break;                    /* stop, and nothing left to take */
    e->writing = true;
    pthread_mutex_unlock (&bt->lock);

    r = below->ops->write (below, e->data, e->count, e->offset,
                           target_timeout_deadline (&ts), &err);
    if (r == -1) {
      nbdkit_error ("cbw-buffer: writing %" PRIu32 " buffered bytes to the "
                    "fleecing target at %" PRIu64 " failed: %s; the "
                    "snapshots holding them break", e->count, e->offset,
                    strerror (err));
      snapshot_target_lost (e->offset, e->count, err);
    }

    pthread_mutex_lock (&bt->lock);
    buffer_unlink_entry (bt, e);
    if (r == -1)
      bt->lost_bytes += e->count;
    else
      bt->flushed_bytes += e->count;
    buffer_entry_free (bt, e);
    pthread_cond_broadcast (&bt->room);
    pthread_cond_broadcast (&bt->work);   /* a waiting overlap may go */
  }
  bt->running--;
  pthread_cond_broadcast (&bt->room);
  pthread_mutex_unlock (&bt->lock);
  return NULL;
}

void
buffer_writers_stop (struct buffer_target *bt)
{
  unsigned i, n;

  pthread_mutex_lock (&bt->lock);
  n = bt->nwriters;
  bt->nwriters = 0;
  buffer_discard_queued (bt);
  bt->stop = true;
  pthread_cond_broadcast (&bt->work);
  pthread_mutex_unlock (&bt->lock);
  for (i = 0; i < n; i++)
    pthread_join (bt->writer[i], NULL);
}

int
buffer_writers_start (struct buffer_target *bt)
{
  int e = 0;

  pthread_mutex_lock (&bt->lock);
  bt->stop = false;
  while (e == 0 && bt->nwriters < BUFFER_WRITERS) {
    e = pthread_create (&bt->writer[bt->nwriters], NULL, writer_main, bt);
    if (e == 0) {
      bt->nwriters++;
      bt->running++;
    }
  }
  pthread_mutex_unlock (&bt->lock);
  if (e != 0)
    buffer_writers_stop (bt);
  return e;
}
