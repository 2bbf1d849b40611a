/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * The stream filter (live restore): the local disk below is populated
 * from stream-base, cluster by cluster, by copy-on-read, by guest
 * writes and by a background job, and the populated clusters are
 * remembered in stream-state so that a restart resumes.
 *
 * Files: glue.c (nbdkit registration, start-up, control commands),
 * config.c (parameters), stream.c (guest I/O callbacks), populate.c
 * (filling clusters, making them durable), job.c (background job),
 * state.c (the state file), base.c (libnbd connections to the base).
 *
 * Two maps of clusters (design and crash argument: the man page,
 * "CRASH SAFETY"):
 *
 *  F, st.filled: the local disk holds valid contents for the cluster
 *  (the base's, or the guest's written over them).  In memory only;
 *  at start-up it is a copy of D.  Bits go from 0 to 1 only, with the
 *  bitmap_*_atomic functions, so anyone may test them without a lock;
 *  a bit is set only by a thread that holds the cluster EXCLUSIVE in
 *  st.locks and saw it clear under that lock (so st.filled_count
 *  counts each cluster once).
 *
 *  D, st.durable: the populated bits of the state file.  A bit is set
 *  only when F is set and the local disk was flushed after the
 *  cluster's contents were written (durable_bits_set_wait after
 *  pop_flush).  So D ⊆ F, and after a crash the clusters with D set
 *  hold valid contents and the others are filled from the base again.
 *
 *  G, st.fine (stream-sync=flush only): the page-cache map of the
 *  state file.  A bit is set (written into the file's page cache, no
 *  sync) only after F was set, so after the cluster's contents were
 *  written to the disk's page cache.  The file records the kernel's
 *  boot id beside G; G is trusted at start-up only in the same boot,
 *  when the page cache of both files survived (nbdkit killed, not the
 *  machine): then F = D | G.  Otherwise F = D and G starts empty.
 *
 *  P, the pending set (pending.c, stream-sync=flush only): clusters
 *  whose G bit was written and whose D bit may not be durable yet;
 *  the guest's flush takes P, flushes the disk and makes D durable
 *  for them.
 *
 * Invariant 10, stream-sync=write: a guest write, zero or trim to a
 * cluster is acknowledged only once the cluster's D bit is durable,
 * and the base is only ever copied into clusters whose F bit is clear
 * (checked under the cluster's exclusive range lock).  At start-up
 * F = D.  So no acknowledged guest write is ever overwritten from the
 * base.
 *
 * stream-sync=flush: acknowledged once D or G is set for every
 * cluster of the request; a guest flush (or FUA) returns once D is
 * durable for every cluster whose G was set before it began.  After a
 * crash of the process F = D | G again holds every acknowledged
 * write; after a power loss F = D holds every write the guest
 * flushed, and a cluster first written after the guest's last flush
 * is refilled from the base whole: that write is lost as an unflushed
 * write is lost by a disk with a volatile cache, never mixed.
 */

#ifndef FLEECE_STREAM_H
#define FLEECE_STREAM_H

#include <stdbool.h>
#include <stdint.h>
#include <pthread.h>

#include <nbdkit-filter.h>

#include "bitset.h"
#include "durable-bits.h"
#include "glue.h"
#include "json.h"
#include "rangelock.h"

/* Parameters (config.c).  Written during start-up only. */
struct stream_config {
  char *base_uri;               /* stream-base, or NULL */
  char *state_path;             /* stream-state (required) */
  uint32_t cluster_size;        /* stream-cluster-size */
  bool cluster_size_set;
  uint64_t speed;               /* stream-speed, bytes/s, 0 unlimited */
  bool sync_flush;              /* stream-sync=flush (default write) */
};
extern struct stream_config stream_config;

#define STREAM_CONFIG_HELP \
  "stream-base=URI           NBD URI of the base the disk is filled from.\n" \
  "stream-state=PATH         Populated-cluster map (required).\n" \
  "stream-cluster-size=SIZE  Population granularity, 4K-16M (default 64K).\n" \
  "stream-speed=RATE         Background bytes/s, e.g. 100M (0: unlimited).\n" \
  "stream-sync=write|flush   A first write to a cluster is durable before\n" \
  "                          its reply (write, default) or at the next\n" \
  "                          flush, like a disk's write cache (flush)."

extern int stream_config_key (const char *key, const char *value);
extern int stream_config_check (void);
extern void stream_config_free (void);
/* Parse a rate (bytes per second, nbdkit size syntax); -1 and *why. */
extern int stream_parse_rate (const char *value, uint64_t *out,
                              const char **why);

/* The shared state, set up in .after_fork (single-threaded) and then
 * read-only except where noted.
 */
struct stream_state {
  uint64_t disk_size;
  uint32_t cluster_size;
  unsigned cluster_bits;
  uint64_t nclusters;

  /* True once every cluster is durable and the state file says so:
   * from then on every request passes straight through.  Atomic.
   */
  bool complete;

  struct bitset filled;         /* F, see above: atomic bit functions */
  uint64_t filled_count;        /* clusters with F set: atomic */
  struct durable_bits *durable; /* D; NULL once complete */
  struct fine_bits *fine;       /* G; NULL unless stream-sync=flush */
  struct rangelock locks;       /* per-cluster range lock, bytes */

  int multi_conn;               /* the plugin's can_multi_conn */
  int can_zero;                 /* the plugin's can_zero */
};
extern struct stream_state st;

static inline uint64_t
cluster_of (uint64_t offset)
{
  return offset >> st.cluster_bits;
}

static inline uint64_t
cluster_start (uint64_t c)
{
  return c << st.cluster_bits;
}

/* Bytes of cluster c inside the disk (the last one may be short). */
static inline uint32_t
cluster_len (uint64_t c)
{
  uint64_t s = cluster_start (c);

  return st.disk_size - s < st.cluster_size
    ? (uint32_t) (st.disk_size - s) : st.cluster_size;
}

static inline bool
stream_is_complete (void)
{
  return __atomic_load_n (&st.complete, __ATOMIC_ACQUIRE);
}

static inline bool
is_filled (uint64_t c)
{
  return bitset_test_atomic (&st.filled, c);
}

/* state.c: the state file.  Layout and crash argument in state.c. */
extern int state_lock (const char *path);
extern int state_after_fork_pid (void);
/* What state_open found in an incomplete file. */
struct state_maps {
  unsigned char *durable;       /* D, serialised (malloc'd) */
  unsigned char *fine;          /* G, serialised (malloc'd): all zero
                                 * unless trusted */
  bool fine_trusted;            /* G was written in this boot */
  int fd;                       /* for durable_bits_attach */
};
/* Open or create the state file for the disk.  Sets st.cluster_size
 * (from the file if the parameter was not given), *complete, and on an
 * incomplete file *maps.  With stream-sync=flush the file is ready for
 * G at state_fine_offset () (this boot recorded, G cleared unless
 * trusted).
 */
#define STATE_BITS_OFFSET 4096
extern int state_open (uint64_t disk_size, bool have_base, bool *complete,
                       struct state_maps *maps);
extern uint64_t state_fine_offset (void);
/* Record completion durably.  0, or -1 after nbdkit_error. */
extern int state_mark_complete (void);
extern void state_close (void);

/* base.c: connections to stream-base. */
extern int base_init (const char *uri, uint64_t disk_size);
/* Connect once now (start-up): 1 connected, 0 unreachable (logged,
 * not an error), -1 the base is unusable (too small): refuse.
 */
extern int base_probe (void);
extern int base_pread (void *buf, uint64_t count, uint64_t offset,
                       int *err);
/* Zero runs of the base inside [offset, offset+count): calls fn for
 * each maximal run that the base reports as reading zeroes.  Returns
 * 0 (also when the base has no block status: then no runs), -1 with
 * *err.
 */
typedef void base_zero_run_fn (uint64_t offset, uint64_t len, void *opaque);
extern int base_zero_runs (uint64_t count, uint64_t offset,
                           base_zero_run_fn *fn, void *opaque, int *err);
extern bool base_connected (void);
/* Close every connection and never open one again. */
extern void base_shutdown (void);

/* populate.c */
extern void pop_init (void);
/* Flush the local disk after the caller's writes, sharing one flush
 * between concurrent callers.  0 or -1 with *err.
 */
extern int pop_flush (nbdkit_next *next, int *err);
/* Set F on [first, first+n) (caller holds them EXCLUSIVE and saw each
 * clear) and count them; with stream-sync=flush also write G and add
 * them to P (a failure to write G is logged: those clusters then take
 * the stream-sync=write path).
 */
extern void pop_set_filled (uint64_t first, uint64_t n);
/* Fill the clusters [first, first+n) (F clear, held EXCLUSIVE) from
 * the base: read, write locally.  Does not set F.  buf (may be NULL)
 * receives the base's bytes if its size is at least n clusters.
 */
extern int pop_fill (nbdkit_next *next, uint64_t first, uint64_t n,
                     void *buf, int *err);
/* Make [first, first+n) durable: flush, then D.  Every cluster in
 * the range must have F set.
 */
extern int pop_make_durable (nbdkit_next *next, uint64_t first, uint64_t n,
                             int *err);
/* Guest I/O with population; see stream.c. */
extern int pop_pread (nbdkit_next *next, void *buf, uint32_t count,
                      uint64_t offset, uint32_t flags, int *err);
extern int pop_modify (nbdkit_next *next, enum fleece_write_op op,
                       const void *buf, uint32_t count, uint64_t offset,
                       uint32_t flags, int *err);
extern uint64_t pop_bytes_done (void);

/* pending.c: P and the guest's flush with stream-sync=flush. */
extern int pending_init (void);
extern void pending_free (void);
/* Add [first, first+n), whose G bits are written, to P. */
extern void pending_add (uint64_t first, uint64_t n);
/* The guest's flush: the disk flushed, then D durable for every
 * cluster in P when it was called.  0 or -1 with *err.
 */
extern int pending_commit (nbdkit_next *next, int *err);
/* Clusters in P whose D is not yet durable (for status). */
extern uint64_t pending_count (void);

/* job.c: the background job. */
extern int job_start (nbdkit_backend *backend);
extern void job_stop (void);
extern void job_status (struct jbuf *reply);
extern int job_pause (char **errmsg);
extern int job_resume (char **errmsg);
extern int job_set_speed (uint64_t speed, char **errmsg);

#endif /* FLEECE_STREAM_H */
