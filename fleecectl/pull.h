/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * fleecectl pull (see pull.c for what it does), shared by its files:
 *
 *   pull.c       the command: options, the source, running the workers
 *   pull-copy.c  a worker: block status of a chunk, then read and write
 *   pull-dest.c  the destination: open, write, zero, make durable
 *
 * Threads: one worker per source connection, each with its own libnbd
 * handle and buffer.  struct pull is read-only while workers run,
 * except the fields under pull.lock (see there).  An NBD destination
 * is one libnbd handle shared by the workers (libnbd handles are
 * thread-safe), since servers such as qemu-nbd accept one client by
 * default.
 */

#ifndef FLEECECTL_PULL_H
#define FLEECECTL_PULL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <libnbd.h>

#define MAX_CONNECTIONS 16
#define DEFAULT_CONNECTIONS 4
#define DEFAULT_GRANULE (64 * 1024)
/* Largest read or write request (a multiple of the granule, and at
 * least one granule).
 */
#define MAX_REQUEST (4 * 1024 * 1024)
/* The unit of work a worker takes at a time (block status is asked
 * for one chunk).
 */
#define CHUNK (32 * 1024 * 1024)

struct pull {
  /* Set up before the workers start, read-only afterwards. */
  const char *src_uri;
  bool delta;                   /* a delta view: write data extents only */
  uint64_t size;                /* of the source */
  uint64_t gran;                /* granule, a power of two */
  uint64_t maxreq;              /* largest request, multiple of gran */
  uint64_t chunk;               /* work unit, multiple of gran */
  bool extents;                 /* the source serves base:allocation */
  bool dest_zero;               /* DEST reads as zeroes where unwritten */
  int dest_fd;                  /* a file DEST, or -1 */
  bool dest_punch;              /* try FALLOC_FL_PUNCH_HOLE on dest_fd */
  struct nbd_handle *dst;       /* an NBD DEST (shared), or NULL */
  bool dst_can_zero;

  /* lock protects everything below.  Invariant: next only grows, in
   * steps of chunk; done is the sum of the lengths of finished chunks,
   * so done <= next; once failed is set, errmsg holds the first error
   * and never changes.
   */
  pthread_mutex_t lock;
  pthread_cond_t finished;      /* signalled when running drops to 0 */
  uint64_t next;                /* offset of the next chunk to hand out */
  uint64_t done;
  uint64_t written;             /* bytes of data written to DEST */
  uint64_t zeroed;              /* bytes zeroed (holes punched) in DEST */
  unsigned running;             /* workers not yet finished */
  bool failed;
  char errmsg[1024];
};

struct worker {
  struct pull *pl;
  struct nbd_handle *src;
  char *buf;                    /* maxreq bytes */
  pthread_t thread;
  /* Extents of the current block status reply (worker-private). */
  uint64_t *ext_len;
  uint32_t *ext_flags;
  size_t next_ext, cap_ext;
};

/* pull.c: the fields under pl->lock. */
/* Record the first error; later ones are dropped. */
extern void pull_fail (struct pull *pl, const char *fmt, ...)
  __attribute__ ((format (printf, 2, 3)));
extern bool pull_failed (struct pull *pl);
/* *field += n, field one of the counters under the lock. */
extern void pull_count (struct pull *pl, uint64_t *field, uint64_t n);

/* pull-copy.c */
/* A connection to the source (asking for base:allocation), or NULL
 * with a message in err.
 */
extern struct nbd_handle *pull_open_source (const char *uri,
                                            char *err, size_t errlen);
/* The thread of a worker (struct worker *): takes chunks until none
 * is left or the pull failed.
 */
extern void *pull_worker (void *w);

/* pull-dest.c */
/* Open DEST for a source of pl->size bytes; sets dest_fd or dst,
 * dest_zero, dest_punch, dst_can_zero.  -1 after a message.
 */
extern int pull_open_dest (struct pull *pl, const char *dest,
                           bool dest_zeroed);
/* Write len bytes of buf at off to DEST; -1 after pull_fail. */
extern int pull_dest_write (struct pull *pl, const char *buf, uint64_t len,
                            uint64_t off);
/* Make DEST read as zeroes at [off, off+len); -1 after pull_fail. */
extern int pull_dest_zero (struct pull *pl, uint64_t len, uint64_t off);
/* Flush (NBD) or fsync (file) DEST; -1 after pull_fail. */
extern int pull_dest_sync (struct pull *pl, const char *dest);
/* Close DEST; -1 with errno if closing a file failed. */
extern int pull_dest_close (struct pull *pl);

#endif /* FLEECECTL_PULL_H */
