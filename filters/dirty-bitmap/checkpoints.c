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

/* Take the gate for a control command, never waiting for ever. */
static int
gate_for_command (char **errmsg)
{
  if (fleece_gate_wrlock (&gate, FLEECE_GATE_WAIT_SECONDS) != 0)
    return fleece_errorf (errmsg, "writes in flight did not finish within "
                          "%d s (is the disk hung?); nothing was changed",
                          FLEECE_GATE_WAIT_SECONDS);
  return 0;
}

int
ckpt_create (const char *name, char **errmsg)
{
  int r;

  if (gate_for_command (errmsg) == -1)
    return -1;
  r = create_locked (name, errmsg);
  pthread_rwlock_unlock (&gate);
  return r;
}

/* How long checkpoint-delete waits for delta connections to close. */
#define VIEW_CLOSE_WAIT_MS 2000

int
ckpt_delete (const char *name, char **errmsg)
{
  struct checkpoint *c;
  unsigned i;
  int r = 0;

  if (gate_for_command (errmsg) == -1)
    return -1;
  c = find (name);
  if (c == NULL) {
    r = fleece_errorf (errmsg, "no checkpoint named %s", name);
    goto out;
  }
  if (c->holds[FLEECE_HOLD_SINCE]) {
    r = fleece_errorf (errmsg, "checkpoint %s is in use: the active snapshot "
                       "was begun with since=%s and serves changes since "
                       "it; delete it after snapshot-end", name, name);
    goto out;
  }
  /* A client that has just disconnected may not be closed by nbdkit
   * yet (nbdcopy; checkpoint-delete in a script): give its connection
   * up to VIEW_CLOSE_WAIT_MS to go, with the gate released meanwhile.
   */
  for (i = 0; c && c->holds[FLEECE_HOLD_VIEW] && i < VIEW_CLOSE_WAIT_MS / 50;
       i++) {
    pthread_rwlock_unlock (&gate);
    nanosleep (&(struct timespec) { .tv_nsec = 50000000 }, NULL);
    if (gate_for_command (errmsg) == -1)
      return -1;
    c = find (name);
  }
  if (c == NULL) {
    r = fleece_errorf (errmsg, "no checkpoint named %s", name);
    goto out;
  }
  if (c->holds[FLEECE_HOLD_VIEW]) {
    r = fleece_errorf (errmsg, "checkpoint %s is in use: %u open "
                       "connection(s) read the delta view since it; "
                       "delete it after they close", name,
                       c->holds[FLEECE_HOLD_VIEW]);
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

void
ckpt_lock (void)
{
  pthread_rwlock_wrlock (&gate);
}

void
ckpt_unlock (void)
{
  pthread_rwlock_unlock (&gate);
}

/* The token is the checkpoint's sequence number, which no other
 * checkpoint ever has, so a release never lands on a later checkpoint
 * of the same name.
 */
uint64_t
ckpt_hold (const char *name, enum fleece_hold why)
{
  struct checkpoint *c;
  uint64_t token = 0;

  pthread_rwlock_wrlock (&gate);
  c = find (name);
  if (c) {
    c->holds[why]++;
    token = c->seq;
  }
  pthread_rwlock_unlock (&gate);
  return token;
}

void
ckpt_unhold (uint64_t token, enum fleece_hold why)
{
  struct checkpoint *c;

  if (token == 0)
    return;
  pthread_rwlock_wrlock (&gate);
  for (c = ckpt_oldest; c; c = c->newer)
    if (c->seq == token && c->holds[why] > 0)
      c->holds[why]--;
  pthread_rwlock_unlock (&gate);
}

/*----------------------------------------------------------------------
 * The disk's size changed (a connection saw a new size).  Growing: the
 * new space, and the granule the old end cut short, count as changed
 * since every checkpoint, so they are set in the recording one (every
 * "since" union includes it).  Shrinking: the bitmaps lose their tail
 * and the granule the new end cuts short is set too.  Either way the
 * next backup reads exactly the space whose contents it cannot know.
 */
void
ckpt_saw_size (uint64_t size)
{
  const uint64_t g = db_config.granularity;
  uint64_t n = (size + g - 1) / g, old, first;
  struct checkpoint *c;

  pthread_rwlock_rdlock (&gate);
  old = db_disk_size;
  pthread_rwlock_unlock (&gate);
  if (size == old)
    return;

  pthread_rwlock_wrlock (&gate);
  old = db_disk_size;
  if (size != old) {
    for (c = ckpt_oldest; c; c = c->newer) {
      if (bitmap_resize (&c->bits, n) == -1) {
        c->consistent = false;
        nbdkit_error ("dirty-bitmap: out of memory for the bitmap of "
                      "checkpoint %s after the disk grew; it is marked "
                      "inconsistent", c->name);
      }
    }
    first = (size < old ? size : old) / g;
    if (ckpt_newest && first < n)
      bitmap_set_range (&ckpt_newest->bits, first, n - first);
    nbdkit_debug ("dirty-bitmap: the disk changed size from %" PRIu64
                  " to %" PRIu64 " bytes; granules from %" PRIu64
                  " on count as changed", old, size, first);
    db_disk_size = size;
    db_ngranules = n;
  }
  pthread_rwlock_unlock (&gate);
}
