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
 * Marking is lock-free under the read side: bitset_set_range_atomic on
 * the newest checkpoint's bitmap, which only marking changes while the
 * read side is held.  Anything that needs bitmaps exactly (unions,
 * frozen copies, the image of a save) takes the write side, so it
 * never races with marking.
 *
 * With bitmap-sync=write-ahead, a writer then waits (still under the
 * read side) until its granules' bits are durable in the bitmap file
 * (persist_wait, common/durable-bits.c); it passes at once when they
 * already are.  So while the write side is held, every bit set in the
 * newest checkpoint is also durable.
 *
 * chain_lock (mutex).  Also held by whoever changes the chain or a
 * checkpoint's name, time, consistency or bitmap size (always with the
 * write side of gate too), so that status can read them holding only
 * chain_lock: it never waits for guest writes and never stalls them.
 * It counts the recording bitmap's bits with atomic loads, racing only
 * with marking (each word before or after a write's bits, which is all
 * a count taken while writes go on can mean).
 *
 * save_lock (mutex).  Serialises saves of the bitmap file, so files
 * reach the disk in the order of their images.  A save takes the image
 * under the write side of gate (persist_snapshot: CPU only), releases
 * the gate, and only then writes and syncs the file (persist_write).
 * That is safe because:
 *  - the image is the chain at one instant of the gate, and no other
 *    save can overtake it (save_lock is held until the file is in
 *    place);
 *  - in clean-stop mode the file says "in use" anyway: its bits are
 *    not trusted after a crash, only its chain is, and the chain in the
 *    file is always one the commands left (the new one once renamed,
 *    the old one before);
 *  - in write-ahead mode persist_snapshot begins a switch of the
 *    durable bits to the new file: a write that arrives after the gate
 *    is released marks the new chain's recording checkpoint and waits
 *    until the new file is renamed into place (its bit then goes into
 *    the new file's live region), or, if writing the file failed, its
 *    bit goes into the old file's live region, whose checkpoint's
 *    "since" union covers it; either way no write reaches the disk
 *    before its bit is durable in the file that is in place.
 * A save that runs under the gate (a size change, rare) holds it
 * across the I/O; nothing waits on a switch then.
 *
 * Lock order: save_lock, then gate, then chain_lock.  The durable-bits
 * lock is a leaf (taken by writers under gate's read side).
 *
 * The persistence code (persist.c) runs with save_lock and the write
 * side held (persist_snapshot), with save_lock held (persist_write),
 * or during single-threaded start-up and shutdown.
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

#include "bitset.h"
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
static pthread_mutex_t chain_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t save_lock = PTHREAD_MUTEX_INITIALIZER;

void
ckpt_init (void)
{
  fleece_gate_init (&gate);
}

/* Save outside the gate (see the lock rules above): the caller holds
 * save_lock and the write side, which this releases.
 */
static int
save_and_unlock (char **errmsg)
{
  struct persist_image img;
  int r;

  r = persist_snapshot (true, &img, errmsg);
  pthread_rwlock_unlock (&gate);
  if (r == 0)
    r = persist_write (&img, errmsg);
  return r;
}

static void
ckpt_free (struct checkpoint *c)
{
  bitset_free (&c->bits);
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

int
ckpt_before_write (uint32_t count, uint64_t offset)
{
  struct checkpoint *c;
  uint64_t g0, g1;

  pthread_rwlock_rdlock (&gate);
  c = ckpt_newest;
  if (c == NULL || count == 0 || offset >= db_disk_size)
    return 0;
  g0 = offset / db_config.granularity;
  g1 = (offset + count - 1) / db_config.granularity;
  bitset_set_range_atomic (&c->bits, g0, g1 - g0 + 1);
  if (persist_wait (g0, g1 - g0 + 1) == -1) {
    nbdkit_error ("dirty-bitmap: bitmap-file=%s cannot be written, so "
                  "this write's change would not survive a crash: it is "
                  "refused (fix the file system, or restart with "
                  "bitmap-sync=clean-stop)", db_config.bitmap_file);
    return -1;
  }
  return 0;
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
  if (bitset_init (&c->bits, db_ngranules) == -1) {
    free (c);
    return NULL;
  }
  snprintf (c->name, sizeof c->name, "%s", name);
  c->seq = seq;
  c->created = created;
  c->consistent = consistent;
  pthread_mutex_lock (&chain_lock);
  c->older = ckpt_newest;
  if (ckpt_newest)
    ckpt_newest->newer = c;
  else
    ckpt_oldest = c;
  ckpt_newest = c;
  pthread_mutex_unlock (&chain_lock);
  if (seq >= ckpt_next_seq)
    ckpt_next_seq = seq + 1;
  return c;
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

/* Unlink c from the chain, merging its bits (and its inconsistency)
 * into the older neighbour.  Caller holds the write side.
 */
static void
unlink_merge (struct checkpoint *c)
{
  pthread_mutex_lock (&chain_lock);
  if (c->older) {
    bitset_merge (&c->older->bits, &c->bits);
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
  pthread_mutex_unlock (&chain_lock);
  ckpt_free (c);
}

static int create (const char *name, bool provisional, char **errmsg);

int
ckpt_create (const char *name, char **errmsg)
{
  return create (name, false, errmsg);
}

int
ckpt_create_provisional (const char *name, char **errmsg)
{
  return create (name, true, errmsg);
}

static int
create (const char *name, bool provisional, char **errmsg)
{
  struct checkpoint *c;
  uint64_t seq;
  int r;

  pthread_mutex_lock (&save_lock);
  if (gate_for_command (errmsg) == -1) {
    pthread_mutex_unlock (&save_lock);
    return -1;
  }
  if (find (name)) {
    pthread_rwlock_unlock (&gate);
    pthread_mutex_unlock (&save_lock);
    return fleece_errorf (errmsg, "checkpoint %s already exists", name);
  }
  if (db_ngranules == 0 && db_disk_size == 0) {
    pthread_rwlock_unlock (&gate);
    pthread_mutex_unlock (&save_lock);
    return fleece_errorf (errmsg, "the disk size is not known yet");
  }
  c = ckpt_append (name, ckpt_next_seq, time (NULL), true);
  if (c == NULL) {
    pthread_rwlock_unlock (&gate);
    pthread_mutex_unlock (&save_lock);
    return fleece_errorf (errmsg, "out of memory for checkpoint %s", name);
  }
  seq = c->seq;
  c->provisional = provisional;
  /* The checkpoint starts here; the file follows outside the gate. */
  r = save_and_unlock (errmsg);
  if (r == -1) {
    /* Keep memory and file in step: undo.  Writes since the point
     * marked c; its bits go back to the one before, which records
     * again (and in write-ahead mode they went to its file region).
     * save_lock keeps every other change of the chain out, so c is
     * still the newest.
     */
    pthread_rwlock_wrlock (&gate);
    if (ckpt_newest && ckpt_newest->seq == seq)
      unlink_merge (ckpt_newest);
    pthread_rwlock_unlock (&gate);
  }
  else if (db_debug_verbose)
    nbdkit_debug ("dirty-bitmap: checkpoint %s (seq %" PRIu64 ") started",
                  name, seq);
  pthread_mutex_unlock (&save_lock);
  return r;
}

int
ckpt_confirm (const char *name, char **errmsg)
{
  struct checkpoint *c;
  int r;

  pthread_mutex_lock (&save_lock);
  if (gate_for_command (errmsg) == -1) {
    pthread_mutex_unlock (&save_lock);
    return -1;
  }
  c = find (name);
  if (c == NULL || !c->provisional) {
    pthread_rwlock_unlock (&gate);
    pthread_mutex_unlock (&save_lock);
    return 0;
  }
  c->provisional = false;
  r = save_and_unlock (errmsg);
  pthread_mutex_unlock (&save_lock);
  return r;
}

void
ckpt_merge_provisional (void)
{
  struct checkpoint *c, *older;
  char *errmsg = NULL;
  bool any = false;

  pthread_mutex_lock (&save_lock);
  pthread_rwlock_wrlock (&gate);
  for (c = ckpt_newest; c; c = older) {
    older = c->older;
    if (c->provisional) {
      nbdkit_error ("dirty-bitmap: checkpoint %s was begun by a backup job "
                    "that did not complete before nbdkit stopped; it is "
                    "merged back, so incremental backups since the "
                    "checkpoint before it still cover every change",
                    c->name);
      unlink_merge (c);
      any = true;
    }
  }
  if (!any) {
    pthread_rwlock_unlock (&gate);
    pthread_mutex_unlock (&save_lock);
    return;
  }
  if (save_and_unlock (&errmsg) == -1) {
    nbdkit_error ("%s", errmsg ? errmsg : "bitmap-file: cannot save");
    free (errmsg);
  }
  pthread_mutex_unlock (&save_lock);
}

/* How long checkpoint-delete waits for delta connections to close. */
#define VIEW_CLOSE_WAIT_MS 2000

int
ckpt_delete (const char *name, char **errmsg)
{
  struct checkpoint *c;
  unsigned i;
  int r = 0;

  pthread_mutex_lock (&save_lock);
  if (gate_for_command (errmsg) == -1) {
    pthread_mutex_unlock (&save_lock);
    return -1;
  }
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
    if (gate_for_command (errmsg) == -1) {
      pthread_mutex_unlock (&save_lock);
      return -1;
    }
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
  unlink_merge (c);
  if (db_debug_verbose)
    nbdkit_debug ("dirty-bitmap: checkpoint %s deleted", name);
  /* The file follows memory, outside the gate; a failure here is
   * reported but the checkpoint is gone either way (keeping it would
   * lose nothing, but memory is the truth while nbdkit runs).
   */
  r = save_and_unlock (errmsg);
  pthread_mutex_unlock (&save_lock);
  return r;
 out:
  pthread_rwlock_unlock (&gate);
  pthread_mutex_unlock (&save_lock);
  return r;
}

/* The number of set bits, read with atomic loads (see chain_lock). */
static uint64_t
count_atomic (const struct bitset *bm)
{
  uint64_t i, n = 0, nw = (bm->nbits + 63) / 64;

  for (i = 0; i < nw; i++)
    n += __builtin_popcountll (__atomic_load_n (&bm->words[i],
                                                __ATOMIC_RELAXED));
  return n;
}

static bool
last_bit_atomic (const struct bitset *bm)
{
  uint64_t b = bm->nbits - 1;

  return (__atomic_load_n (&bm->words[b / 64], __ATOMIC_RELAXED)
          >> (b % 64)) & 1;
}

void
ckpt_status (struct jbuf *reply)
{
  struct checkpoint *c;

  /* chain_lock only: writers go on (see the lock rules). */
  pthread_mutex_lock (&chain_lock);
  jbuf_kv_raw (reply, "checkpoints", "[");
  for (c = ckpt_oldest; c; c = c->newer) {
    uint64_t dirty = count_atomic (&c->bits) * db_config.granularity;

    if (c->bits.nbits && last_bit_atomic (&c->bits))
      dirty -= db_ngranules * db_config.granularity - db_disk_size;
    jbuf_raw (reply, c == ckpt_oldest ? "{" : ",{");
    jbuf_kv_string (reply, "name", c->name);
    jbuf_kv_time (reply, "created", c->created);
    jbuf_kv_bool (reply, "recording", c == ckpt_newest);
    jbuf_kv_u64 (reply, "dirty_bytes", dirty);
    jbuf_kv_bool (reply, "persistent", db_config.bitmap_file != NULL);
    jbuf_kv_bool (reply, "consistent", c->consistent);
    if (!c->consistent) {
      jbuf_kv_string (reply, "reason",
                      c->reason[0] ? c->reason : "not recorded");
    }
    jbuf_raw (reply, "}");
  }
  jbuf_raw (reply, "]");
  pthread_mutex_unlock (&chain_lock);
  jbuf_kv_u64 (reply, "bitmap_granularity", db_config.granularity);
  persist_status (reply);
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

  pthread_mutex_lock (&save_lock);
  pthread_rwlock_wrlock (&gate);
  pthread_mutex_lock (&chain_lock);
  old = db_disk_size;
  if (size != old) {
    char *errmsg = NULL;

    for (c = ckpt_oldest; c; c = c->newer) {
      if (bitset_resize (&c->bits, n) == -1) {
        c->consistent = false;
        nbdkit_error ("dirty-bitmap: out of memory for the bitmap of "
                      "checkpoint %s after the disk grew; it is marked "
                      "inconsistent", c->name);
      }
    }
    first = (size < old ? size : old) / g;
    if (ckpt_newest && first < n)
      bitset_set_range (&ckpt_newest->bits, first, n - first);
    nbdkit_debug ("dirty-bitmap: the disk changed size from %" PRIu64
                  " to %" PRIu64 " bytes; granules from %" PRIu64
                  " on count as changed", old, size, first);
    db_disk_size = size;
    db_ngranules = n;
    pthread_mutex_unlock (&chain_lock);
    /* Write-ahead: the file must describe the new size (and its
     * newest checkpoint the new space) before a write reaches it.
     * Saved under the gate: rare, and nothing may write meanwhile.
     */
    if (db_config.write_ahead && persist_save (true, &errmsg) == -1) {
      nbdkit_error ("%s", errmsg ? errmsg : "bitmap-file: cannot save");
      free (errmsg);
    }
  }
  else
    pthread_mutex_unlock (&chain_lock);
  pthread_rwlock_unlock (&gate);
  pthread_mutex_unlock (&save_lock);
}
