/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * cbw-buffer=SIZE: a layer over the target (see target.h) that lets a
 * copy's old contents wait in memory, so that a guest write need not
 * wait for a slow target.  A write is queued (its bytes copied into
 * the buffer) and returns; writer threads write the queue to the
 * target below.  When the queue holds SIZE bytes, a write waits for
 * room until its deadline: guest writes then wait for the target as
 * they do without a buffer.
 *
 * Writers: BUFFER_WRITERS threads write entries below in parallel (a
 * slow NBD target answers many writes at once).  Each takes the oldest
 * entry nobody is writing; if it overlaps an entry being written (a
 * slot released and written again), it waits for that one, so bytes
 * of one slot reach the target in the order they were queued.  Since
 * entries are taken in queue order, every older entry is then already
 * written or being written, so checking those being written suffices.
 *
 * Entries: every queued write is one entry (a write larger than SIZE
 * is queued in pieces of at most SIZE).  An entry's bytes never change
 * once queued (release may only cut bytes off its ends).  It stays in
 * the queue, and reads see it, until a writer has written it below;
 * so at any time a byte of the target is either in a queued entry (the
 * newest one holding it wins) or already below.  An entry's bytes live
 * in a chunk of the buffer pool (buffer-pool.h) when they fit in one
 * cluster and a chunk is free, else in memory of their own; the chunk
 * goes back to the pool when the entry is freed.
 *
 * Reads copy what queued entries hold of the range under the lock,
 * oldest to newest, and read only the gaps from below.  That is exact
 * because nothing writes the bytes of a slot being read: the snapshot
 * engine reads a slot only while the cluster it holds is copied, and a
 * slot is written again only after it was released (store.h), which
 * needs the same cluster's range lock EXCLUSIVE (snapshot-int.h).  So
 * a gap at the moment of our look is below already, and stays so.
 *
 * Release drops queued entries inside the range (and cuts entries that
 * stick out of it at one end), then passes the release down.  An entry
 * a writer is writing is left alone: its write may land after the
 * release, leaving bytes in released space, which is allowed (target-
 * ops.h: released contents are unspecified) and costs space only until
 * the slot is written again.  A later write to a reused slot is queued
 * after it and written after it.
 *
 * A failed background write cannot fail the guest write that queued
 * it: that write has completed.  The snapshot engine is told
 * (snapshot_target_lost), which breaks every snapshot holding a copy in
 * the lost range, whatever cbw-on-error says.  The entry is dropped.
 *
 * Lock and invariants: target-buffer-int.h.
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
#include "json.h"
#include "monotime.h"
#include "snapshot.h"
#include "target-ops.h"
#include "target-buffer-int.h"

static const struct target_ops buffer_ops;

static void
buffer_close (struct target *t)
{
  struct buffer_target *bt = (struct buffer_target *) t;

  buffer_writers_stop (bt);
  t->below->ops->close (t->below);
  pthread_mutex_destroy (&bt->lock);
  pthread_cond_destroy (&bt->room);
  pthread_cond_destroy (&bt->work);
  buffer_pool_free (bt->pool);
  free (bt);
}

static void
buffer_after_fork (struct target *t)
{
  buffer_pool_warm (((struct buffer_target *) t)->pool);
  if (t->below->ops->after_fork)
    t->below->ops->after_fork (t->below);
}

static int
buffer_begin (struct target *t, uint64_t size,
              const struct timespec *deadline, char **errmsg)
{
  struct buffer_target *bt = (struct buffer_target *) t;
  int e;

  if (t->below->ops->begin (t->below, size, deadline, errmsg) == -1)
    return -1;
  e = buffer_writers_start (bt);
  if (e != 0) {
    t->below->ops->end (t->below, deadline);
    if (asprintf (errmsg, "cbw-buffer: cannot start the writer thread: %s",
                  strerror (e)) == -1)
      *errmsg = NULL;
    return -1;
  }
  return 0;
}

static void
buffer_end (struct target *t, const struct timespec *deadline)
{
  buffer_writers_stop ((struct buffer_target *) t);
  t->below->ops->end (t->below, deadline);
}

static uint64_t
buffer_capacity (struct target *t)
{
  return t->below->ops->capacity (t->below);
}

/* A chunk to fill for a copy that fits in one (see target-ops.h). */
static void *
buffer_get_buffer (struct target *t, uint32_t count)
{
  struct buffer_target *bt = (struct buffer_target *) t;

  if (count > cbw_config.cluster_size)
    return NULL;
  return buffer_pool_get (bt->pool);
}

static void
buffer_put_buffer (struct target *t, void *buf)
{
  buffer_pool_put (((struct buffer_target *) t)->pool, buf);
}

static int
buffer_write (struct target *t, const void *buf, uint32_t count,
              uint64_t offset, const struct timespec *deadline, int *err)
{
  struct buffer_target *bt = (struct buffer_target *) t;
  bool waited = false;
  /* A chunk from buffer_get_buffer, filled by the caller: it becomes
   * the entry's memory as it is (it fits in one cluster, so in one
   * entry).
   */
  char *lent = buffer_pool_owns (bt->pool, buf) ? (char *) buf : NULL;

  while (count > 0) {
    uint32_t n = count < bt->size ? count : bt->size;
    struct entry *e = malloc (sizeof *e);
    int r = 0;

    if (lent) {
      if (e == NULL) {
        buffer_pool_put (bt->pool, lent);
        *err = ENOMEM;
        return -1;
      }
      e->alloc = lent;
      lent = NULL;
      goto queue;
    }

    /* A chunk of the pool when the copy fits in one; else (or when
     * every chunk is queued) page-aligned memory, so that a large copy
     * can still go to a file target with O_DIRECT (target-file.c).
     */
    if (e && (n > cbw_config.cluster_size ||
              (e->alloc = buffer_pool_get (bt->pool)) == NULL) &&
        posix_memalign ((void **) &e->alloc, 4096, n) != 0)
      e->alloc = NULL;
    if (e == NULL || e->alloc == NULL) {
      if (e)
        free (e);
      *err = ENOMEM;
      return -1;
    }
    memcpy (e->alloc, buf, n);
  queue:
    e->data = e->alloc;
    e->offset = offset;
    e->writing = false;
    e->count = n;
    e->next = NULL;

    pthread_mutex_lock (&bt->lock);
    while (r == 0 && bt->running && bt->used + n > bt->size) {
      if (!waited) {
        waited = true;
        bt->waits++;
      }
      if (deadline)
        r = pthread_cond_timedwait (&bt->room, &bt->lock, deadline);
      else
        r = pthread_cond_wait (&bt->room, &bt->lock);
    }
    if (r != 0 || !bt->running) {
      pthread_mutex_unlock (&bt->lock);
      buffer_entry_free (bt, e);
      *err = r == ETIMEDOUT ? ETIMEDOUT : EIO;
      return -1;
    }
    if (bt->tail)
      bt->tail->next = e;
    else
      bt->head = e;
    bt->tail = e;
    bt->used += n;
    pthread_cond_signal (&bt->work);
    pthread_mutex_unlock (&bt->lock);

    buf = (const char *) buf + n;
    offset += n;
    count -= n;
  }
  return 0;
}

/* A byte interval [from, to) of the read that queued entries held. */
struct span { uint64_t from, to; };

static int
span_cmp (const void *a, const void *b)
{
  const struct span *x = a, *y = b;

  return x->from < y->from ? -1 : x->from > y->from;
}

static int
buffer_read (struct target *t, void *buf, uint32_t count, uint64_t offset,
             const struct timespec *deadline, int *err)
{
  struct buffer_target *bt = (struct buffer_target *) t;
  const uint64_t end = offset + count;
  struct span *spans = NULL, *sp;
  size_t nspans = 0, cap = 0, i;
  struct entry *e;
  uint64_t pos;

  pthread_mutex_lock (&bt->lock);
  for (e = bt->head; e; e = e->next) {
    uint64_t from = e->offset > offset ? e->offset : offset;
    uint64_t to = e->offset + e->count < end ? e->offset + e->count : end;

    if (from >= to)
      continue;
    if (nspans == cap) {
      cap = cap ? cap * 2 : 8;
      sp = realloc (spans, cap * sizeof *sp);
      if (sp == NULL) {
        pthread_mutex_unlock (&bt->lock);
        free (spans);
        *err = ENOMEM;
        return -1;
      }
      spans = sp;
    }
    memcpy ((char *) buf + (from - offset), e->data + (from - e->offset),
            to - from);
    spans[nspans++] = (struct span) { from, to };
  }
  pthread_mutex_unlock (&bt->lock);

  /* Read the gaps from below. */
  if (nspans > 1)
    qsort (spans, nspans, sizeof *spans, span_cmp);
  pos = offset;
  for (i = 0; i <= nspans && pos < end; i++) {
    uint64_t gap_end = i < nspans ? spans[i].from : end;

    if (gap_end > pos &&
        t->below->ops->read (t->below, (char *) buf + (pos - offset),
                             gap_end - pos, pos, deadline, err) == -1) {
      free (spans);
      return -1;
    }
    if (i < nspans && spans[i].to > pos)
      pos = spans[i].to;
    else if (i == nspans)
      pos = end;
  }
  free (spans);
  return 0;
}

static int
buffer_release (struct target *t, uint64_t offset, uint64_t count,
                const struct timespec *deadline, int *err)
{
  struct buffer_target *bt = (struct buffer_target *) t;
  const uint64_t end = offset + count;
  struct entry **p, *e;
  uint64_t e_end, cut;

  pthread_mutex_lock (&bt->lock);
  p = &bt->head;
  bt->tail = NULL;
  while ((e = *p) != NULL) {
    e_end = e->offset + e->count;
    if (e->writing || e_end <= offset || e->offset >= end)
      ;                         /* untouched */
    else if (e->offset >= offset && e_end <= end) {
      *p = e->next;             /* inside: drop it */
      bt->used -= e->count;
      buffer_entry_free (bt, e);
      continue;
    }
    else if (e->offset < offset && e_end <= end) {
      cut = e_end - offset;     /* its tail is released */
      e->count -= cut;
      bt->used -= cut;
    }
    else if (e->offset >= offset && e_end > end) {
      cut = end - e->offset;    /* its head is released */
      e->data += cut;
      e->offset += cut;
      e->count -= cut;
      bt->used -= cut;
    }
    /* An entry spanning the whole range keeps its bytes until written. */
    bt->tail = e;
    p = &e->next;
  }
  pthread_cond_broadcast (&bt->room);
  pthread_mutex_unlock (&bt->lock);

  return t->below->ops->release (t->below, offset, count, deadline, err);
}

static void
buffer_status (struct target *t, struct jbuf *reply)
{
  struct buffer_target *bt = (struct buffer_target *) t;

  pthread_mutex_lock (&bt->lock);
  jbuf_kv_u64 (reply, "size", bt->size);
  jbuf_kv_u64 (reply, "used", bt->used);
  jbuf_kv_u64 (reply, "flushed_bytes", bt->flushed_bytes);
  jbuf_kv_u64 (reply, "waits", bt->waits);
  jbuf_kv_u64 (reply, "lost_bytes", bt->lost_bytes);
  pthread_mutex_unlock (&bt->lock);
  jbuf_kv_u64 (reply, "resident_bytes", buffer_pool_resident (bt->pool));
}

struct target *
target_buffer_open (struct target *below, uint64_t size)
{
  struct buffer_target *bt = calloc (1, sizeof *bt);

  if (bt == NULL) {
    nbdkit_error ("calloc: %m");
    below->ops->close (below);
    return NULL;
  }
  bt->t.ops = &buffer_ops;
  bt->t.below = below;
  bt->size = size;
  bt->pool = buffer_pool_new (size, cbw_config.cluster_size);
  pthread_mutex_init (&bt->lock, NULL);
  pthread_cond_init (&bt->work, NULL);
  /* Deadlines are CLOCK_MONOTONIC (target-ops.h). */
  fleece_cond_init_mono (&bt->room);
  return &bt->t;
}

static const struct target_ops buffer_ops = {
  .name = "buffer",
  .after_fork = buffer_after_fork,
  .close = buffer_close,
  .begin = buffer_begin,
  .end = buffer_end,
  .capacity = buffer_capacity,
  .write = buffer_write,
  .read = buffer_read,
  .release = buffer_release,
  .get_buffer = buffer_get_buffer,
  .put_buffer = buffer_put_buffer,
  .status = buffer_status,
};
