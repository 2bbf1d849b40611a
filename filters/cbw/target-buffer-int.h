/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * cbw-buffer's state, shared by target-buffer.c (the target layer:
 * write, read, release, status) and target-buffer-writers.c (the queue
 * and the threads that write it to the target below).  The design is
 * described at the top of target-buffer.c.
 *
 * Lock: bt->lock protects every field below `lock` in struct
 * buffer_target (the queue, its byte count, the counters, the writer's
 * state).  It is never held across I/O, and never taken with
 * state_lock held (the writer calls snapshot_target_lost without it).
 * Invariants: used == the sum of the queued entries' counts <= size;
 * an entry being written has writing set and stays queued, unchanged,
 * until its writer takes it out.
 */

#ifndef FLEECE_CBW_TARGET_BUFFER_INT_H
#define FLEECE_CBW_TARGET_BUFFER_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "buffer-pool.h"
#include "target-ops.h"

/* Threads writing the queue below. */
#define BUFFER_WRITERS 8

struct entry {
  struct entry *next;
  bool writing;                 /* a writer is writing it below */
  uint64_t offset;
  uint32_t count;
  char *data;                   /* count bytes at data (+ cut bytes) */
  char *alloc;                  /* a chunk of the pool, or malloc'd */
};

struct buffer_target {
  struct target t;              /* first; t.below is the real target */
  uint64_t size;                /* cbw-buffer= */
  /* Chunks of one cluster for the copies that fit in one, or NULL
   * (every copy malloc'd).  Set by open, read-only until close; it
   * has its own lock.
   */
  struct buffer_pool *pool;

  pthread_mutex_t lock;
  pthread_cond_t room;          /* used went down, or the writer stopped */
  pthread_cond_t work;          /* something queued or written, or stop */
  struct entry *head, *tail;    /* the queue, oldest first */
  uint64_t used;                /* bytes queued */
  uint64_t flushed_bytes;       /* bytes written below (lifetime) */
  uint64_t waits;               /* writes that waited for room */
  uint64_t lost_bytes;          /* background writes that failed */
  unsigned running;              /* writer threads that exist */
  bool stop;                    /* the writers should exit */
  pthread_t writer[BUFFER_WRITERS];
  unsigned nwriters;            /* started by begin */
};

/* target-buffer-writers.c.  Callers of unlink and discard hold
 * bt->lock.
 */
extern void buffer_entry_free (struct buffer_target *bt, struct entry *e);
extern void buffer_unlink_entry (struct buffer_target *bt, struct entry *e);
extern void buffer_discard_queued (struct buffer_target *bt);
/* Start the writers (bt->lock not held): 0, or an errno value with
 * those started already stopped again.
 */
extern int buffer_writers_start (struct buffer_target *bt);
/* Stop the writers: queued entries are dropped (the target is being
 * emptied), those being written finish.  bt->lock not held.
 */
extern void buffer_writers_stop (struct buffer_target *bt);

#endif /* FLEECE_CBW_TARGET_BUFFER_INT_H */
