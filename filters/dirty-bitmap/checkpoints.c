/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * The chain of checkpoints.
 *
 * Checkpoint N's bitmap holds the granules written between N's start
 * and the start of the next checkpoint.  "Changed since N" is the
 * union of N's bitmap and every newer one's.  Only the newest
 * checkpoint records.
 *
 * Locks:
 *
 * gate (rwlock, writers preferred).  Protects the chain (membership,
 * order, which checkpoint records) and the bitmaps' lifetime.  Every
 * guest write, zero and trim holds it for reading from marking until
 * the request has finished below us, so a checkpoint that starts
 * (holding it for writing) sees every earlier write marked in the
 * checkpoint before it and every later write marked in itself.
 * Holders of the write side may read and change everything.
 *
 * Marking is lock-free under the read side: bitmap_set_range_atomic on
 * the newest checkpoint's bitmap, which only marking changes while the
 * read side is held.  Anything that reads bitmaps (unions, counts,
 * saving) takes the write side, so it never races with marking.
 *
 * The persistence code (persist.c) runs with the write side held or
 * during single-threaded start-up and shutdown.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nbdkit-filter.h>

#include "bitmap.h"
#include "errors.h"
#include "gate.h"
#include "checkpoints.h"
#include "dirty-bitmap.h"
#include "json.h"
#include "persist.h"

extern int db_debug_verbose;

struct checkpoint *ckpt_oldest, *ckpt_newest;
uint64_t ckpt_next_seq = 1;
uint64_t db_disk_size, db_ngranules;

static pthread_rwlock_t gate;

void
ckpt_init (void)
{
  fleece_gate_init (&gate);
}

static void
ckpt_free (struct checkpoint *c)
{
  bitmap_free (&c->bits);
  free (c);
}

void
ckpt_free_all (void)
{
  struct checkpoint *c, *n;

  for (c = ckpt_oldest; c; c = n) {
    n = c->newer;
    ckpt_free (c);
  }
  ckpt_oldest = ckpt_newest = NULL;
}

void
ckpt_set_size (uint64_t size)
{
  db_disk_size = size;
  db_ngranules = (size + db_config.granularity - 1) / db_config.granularity;
}

/*----------------------------------------------------------------------
 * Marking.
 */

void
ckpt_before_write (uint32_t count, uint64_t offset)
{
  struct checkpoint *c;
  uint64_t g0, g1;

  pthread_rwlock_rdlock (&gate);
  c = ckpt_newest;
  if (c == NULL || count == 0 || offset >= db_disk_size)
    return;
  g0 = offset / db_config.granularity;
  g1 = (offset + count - 1) / db_config.granularity;
  bitmap_set_range_atomic (&c->bits, g0, g1 - g0 + 1);
}

void
ckpt_after_write (void)
{
  pthread_rwlock_unlock (&gate);
}

/*----------------------------------------------------------------------
 * The chain.  Callers hold the write side of gate, or run at start-up.
 */

static struct checkpoint *
find (const char *name)
{
  struct checkpoint *c;

  for (c = ckpt_oldest; c; c = c->newer)
    if (strcmp (c->name, name) == 0)
      return c;
  return NULL;
}

struct checkpoint *
ckpt_append (const char *name, uint64_t seq, int64_t created,
             bool consistent)
{
  struct checkpoint *c = calloc (1, sizeof *c);

  if (c == NULL)
    return NULL;
  if (bitmap_init (&c->bits, db_ngranules) == -1) {
    free (c);
    return NULL;
  }
  snprintf (c->name, sizeof c->name, "%s", name);
  c->seq = seq;
  c->created = created;
  c->consistent = consistent;
  c->older = ckpt_newest;
  if (ckpt_newest)
    ckpt_newest->newer = c;
  else
    ckpt_oldest = c;
  ckpt_newest = c;
  if (seq >= ckpt_next_seq)
    ckpt_next_seq = seq + 1;
  return c;
}

/* Start a checkpoint; caller holds the write side. */
static int
create_locked (const char *name, char **errmsg)
{
  struct checkpoint *c;

  if (find (name))
    return fleece_errorf (errmsg, "checkpoint %s already exists", name);
  if (db_ngranules == 0 && db_disk_size == 0)
    return fleece_errorf (errmsg, "the disk size is not known yet");
  c = ckpt_append (name, ckpt_next_seq, time (NULL), true);
  if (c == NULL)
    return fleece_errorf (errmsg, "out of memory for checkpoint %s", name);
  if (persist_save (true, errmsg) == -1) {
    /* Keep memory and file in step: undo. */
    ckpt_newest = c->older;
    if (ckpt_newest)
      ckpt_newest->newer = NULL;
    else
      ckpt_oldest = NULL;
    ckpt_free (c);
    return -1;
  }
  if (db_debug_verbose)
    nbdkit_debug ("dirty-bitmap: checkpoint %s (seq %" PRIu64 ") started",
                  name, c->seq);
  return 0;
}

int
ckpt_create (const char *name, char **errmsg)
{
  int r;

  pthread_rwlock_wrlock (&gate);
  r = create_locked (name, errmsg);
  pthread_rwlock_unlock (&gate);
  return r;
}

int
ckpt_delete (const char *name, char **errmsg)
{
  struct checkpoint *c;
  int r = 0;

  pthread_rwlock_wrlock (&gate);
  c = find (name);
  if (c == NULL) {
    r = fleece_errorf (errmsg, "no checkpoint named %s", name);
    goto out;
  }
  /* Merge into the older neighbour, so "since" any older checkpoint
   * still covers these changes.  An inconsistent checkpoint taints the
   * one it merges into.
   */
  if (c->older) {
    bitmap_merge (&c->older->bits, &c->bits);
    if (!c->consistent && c->older->consistent) {
      c->older->consistent = false;
      if (snprintf (c->older->reason, sizeof c->older->reason,
                    "merged with inconsistent checkpoint %s (%s)",
                    c->name, c->reason) < 0)
        c->older->reason[0] = '\0';
    }
    c->older->newer = c->newer;
  }
  else
    ckpt_oldest = c->newer;
  if (c->newer)
    c->newer->older = c->older;
  else
    ckpt_newest = c->older;     /* the older one records from now on */
  ckpt_free (c);
  if (db_debug_verbose)
    nbdkit_debug ("dirty-bitmap: checkpoint %s deleted", name);
  /* The file follows memory; a failure here is reported but the
   * checkpoint is gone either way (keeping it would lose nothing, but
   * memory is the truth while nbdkit runs).
   */
  r = persist_save (true, errmsg);
 out:
  pthread_rwlock_unlock (&gate);
  return r;
}

void
ckpt_status (struct jbuf *reply)
{
  struct checkpoint *c;

  pthread_rwlock_wrlock (&gate);
  jbuf_key (reply, "checkpoints");
  jbuf_raw (reply, "[");
  for (c = ckpt_oldest; c; c = c->newer) {
    uint64_t dirty = bitmap_count (&c->bits) * db_config.granularity;

    if (c->bits.nbits && bitmap_test (&c->bits, c->bits.nbits - 1))
      dirty -= db_ngranules * db_config.granularity - db_disk_size;
    jbuf_raw (reply, c == ckpt_oldest ? "{" : ",{");
    jbuf_key (reply, "name");
    jbuf_string (reply, c->name);
    jbuf_key (reply, "created");
    jbuf_time (reply, c->created);
    jbuf_key (reply, "recording");
    jbuf_bool (reply, c == ckpt_newest);
    jbuf_key (reply, "dirty_bytes");
    jbuf_u64 (reply, dirty);
    jbuf_key (reply, "persistent");
    jbuf_bool (reply, db_config.bitmap_file != NULL);
    jbuf_key (reply, "consistent");
    jbuf_bool (reply, c->consistent);
    if (!c->consistent) {
      jbuf_key (reply, "reason");
      jbuf_string (reply, c->reason[0] ? c->reason : "not recorded");
    }
    jbuf_raw (reply, "}");
  }
  jbuf_raw (reply, "]");
  pthread_rwlock_unlock (&gate);
  jbuf_key (reply, "bitmap_granularity");
  jbuf_u64 (reply, db_config.granularity);
}

/*----------------------------------------------------------------------
 * Interface for the other filters.
 */

uint64_t
ckpt_api_next_seq (void)
{
  uint64_t seq;

  pthread_rwlock_rdlock (&gate);
  seq = ckpt_next_seq;
  pthread_rwlock_unlock (&gate);
  return seq;
}

int
ckpt_api_lookup (const char *name, uint64_t *seq, bool *consistent,
                 char **errmsg)
{
  struct checkpoint *c;
  int r = 0;

  pthread_rwlock_rdlock (&gate);
  c = find (name);
  if (c == NULL)
    r = fleece_errorf (errmsg, "no checkpoint named %s", name);
  else {
    *seq = c->seq;
    *consistent = c->consistent;
  }
  pthread_rwlock_unlock (&gate);
  return r;
}

int
ckpt_api_changed_since (const char *name, uint64_t limit, uint32_t unit,
                        struct bitmap *out, char **errmsg)
{
  const uint64_t g = db_config.granularity;
  struct checkpoint *c, *first;
  struct bitmap u;
  uint64_t i, end;
  int r = 0;

  pthread_rwlock_wrlock (&gate);
  first = find (name);
  if (first == NULL) {
    r = fleece_errorf (errmsg, "no checkpoint named %s", name);
    goto out;
  }
  if (first->seq >= limit) {
    r = fleece_errorf (errmsg, "checkpoint %s began after the snapshot", name);
    goto out;
  }
  for (c = first; c && c->seq < limit; c = c->newer) {
    if (!c->consistent) {
      r = fleece_errorf (errmsg, "checkpoint %s is not consistent (nbdkit "
                         "stopped uncleanly or its bitmap file was damaged), so "
                         "changes since %s are not known; take a full backup",
                         c->name, name);
      goto out;
    }
  }
  /* The union, then every unit a run of dirty granules overlaps. */
  if (bitmap_copy (&u, &first->bits) == -1) {
    r = fleece_errorf (errmsg, "out of memory");
    goto out;
  }
  for (c = first->newer; c && c->seq < limit; c = c->newer)
    bitmap_merge (&u, &c->bits);
  for (i = bitmap_next_set (&u, 0); i < u.nbits;
       i = bitmap_next_set (&u, end)) {
    uint64_t u0 = i * g / unit;

    end = bitmap_next_clear (&u, i);
    bitmap_set_range (out, u0, (end * g + unit - 1) / unit - u0);
  }
  bitmap_free (&u);
 out:
  pthread_rwlock_unlock (&gate);
  return r;
}

char **
ckpt_api_names (uint64_t limit)
{
  struct checkpoint *c;
  char **names;
  size_t n = 0;

  pthread_rwlock_rdlock (&gate);
  for (c = ckpt_oldest; c; c = c->newer)
    n++;
  names = calloc (n + 1, sizeof *names);
  n = 0;
  for (c = ckpt_oldest; names && c; c = c->newer) {
    if (c->seq >= limit || !c->consistent)
      continue;
    names[n] = strdup (c->name);
    if (names[n] == NULL)
      break;
    n++;
  }
  pthread_rwlock_unlock (&gate);
  return names;
}

/* Begin a checkpoint at a snapshot point: cbw holds its gate for
 * writing, so no write is in flight through the stack.
 */
int
ckpt_api_begin (const char *name, char **errmsg)
{
  return ckpt_create (name, errmsg);
}
