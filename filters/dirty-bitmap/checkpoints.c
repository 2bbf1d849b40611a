/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * The chain of checkpoints: its state and locks, marking, and the
 * chain operations the other files build on (checkpoints-int.h).  A
 * checkpoint's life (create, confirm, merge back, delete) is in
 * checkpoints-life.c; status and holds are in checkpoints-status.c.
 *
 * Checkpoint N's bitmap holds the granules written between N's start
 * and the start of the next checkpoint.  "Changed since N" is the
 * union of N's bitmap and every newer one's.  Only the newest
 * checkpoint records.
 *
 * Locks:
 *
 * ckpt_gate (rwlock, writers preferred).  Protects the chain
 * (membership, order, which checkpoint records) and the bitmaps'
 * lifetime.  Every guest write, zero and trim holds it for reading
 * from marking until the request has finished below us, so a
 * checkpoint that starts (holding it for writing) sees every earlier
 * write marked in the checkpoint before it and every later write
 * marked in itself.  Holders of the write side may read and change
 * everything.
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
 * ckpt_chain_lock (mutex).  Also held by whoever changes the chain or
 * a checkpoint's name, time, consistency or bitmap size (always with
 * the write side of the gate too), so that status can read them
 * holding only ckpt_chain_lock: it never waits for guest writes and
 * never stalls them.  It counts the recording bitmap's bits with
 * atomic loads, racing only with marking (each word before or after a
 * write's bits, which is all a count taken while writes go on can
 * mean).
 *
 * ckpt_save_lock (mutex).  Serialises saves of the bitmap file, so
 * files reach the disk in the order of their images.  A save takes the
 * image under the write side of the gate (persist_snapshot: CPU only),
 * releases the gate, and only then writes and syncs the file
 * (persist_write).  That is safe because:
 *  - the image is the chain at one instant of the gate, and no other
 *    save can overtake it (ckpt_save_lock is held until the file is in
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
 * Lock order: ckpt_save_lock, then ckpt_gate, then ckpt_chain_lock.
 * The durable-bits lock is a leaf (taken by writers under the gate's
 * read side).  A control command that changes the chain holds
 * ckpt_save_lock and the write side (ckpt_command_lock).
 *
 * The persistence code (persist.c) runs with ckpt_save_lock and the
 * write side held (persist_snapshot), with ckpt_save_lock held
 * (persist_write), or during single-threaded start-up and shutdown.
 */

#include <config.h>

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nbdkit-filter.h>

#include "bitset.h"
#include "errors.h"
#include "gate.h"
#include "checkpoints.h"
#include "checkpoints-int.h"
#include "dirty-bitmap.h"
#include "persist.h"

struct checkpoint *ckpt_oldest, *ckpt_newest;
uint64_t ckpt_next_seq = 1;
uint64_t db_disk_size, db_ngranules;

pthread_rwlock_t ckpt_gate;
pthread_mutex_t ckpt_chain_lock = PTHREAD_MUTEX_INITIALIZER;
pthread_mutex_t ckpt_save_lock = PTHREAD_MUTEX_INITIALIZER;

void
ckpt_init (void)
{
  fleece_gate_init (&ckpt_gate);
}

int
ckpt_save_and_unlock (char **errmsg)
{
  struct persist_image img;
  int r;

  r = persist_snapshot (true, &img, errmsg);
  pthread_rwlock_unlock (&ckpt_gate);
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

  pthread_rwlock_rdlock (&ckpt_gate);
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
  pthread_rwlock_unlock (&ckpt_gate);
}

/*----------------------------------------------------------------------
 * The chain.  Callers hold the write side of the gate, or run at
 * start-up.
 */

struct checkpoint *
ckpt_find (const char *name)
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
  pthread_mutex_lock (&ckpt_chain_lock);
  c->older = ckpt_newest;
  if (ckpt_newest)
    ckpt_newest->newer = c;
  else
    ckpt_oldest = c;
  ckpt_newest = c;
  pthread_mutex_unlock (&ckpt_chain_lock);
  if (seq >= ckpt_next_seq)
    ckpt_next_seq = seq + 1;
  return c;
}

int
ckpt_gate_for_command (char **errmsg)
{
  if (fleece_gate_wrlock (&ckpt_gate, FLEECE_GATE_WAIT_SECONDS) != 0)
    return fleece_errorf (errmsg, "writes in flight did not finish within "
                          "%d s (is the disk hung?); nothing was changed",
                          FLEECE_GATE_WAIT_SECONDS);
  return 0;
}

int
ckpt_command_lock (char **errmsg)
{
  pthread_mutex_lock (&ckpt_save_lock);
  if (ckpt_gate_for_command (errmsg) == -1) {
    pthread_mutex_unlock (&ckpt_save_lock);
    return -1;
  }
  return 0;
}

void
ckpt_command_unlock (void)
{
  pthread_rwlock_unlock (&ckpt_gate);
  pthread_mutex_unlock (&ckpt_save_lock);
}

void
ckpt_unlink_merge (struct checkpoint *c)
{
  pthread_mutex_lock (&ckpt_chain_lock);
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
  pthread_mutex_unlock (&ckpt_chain_lock);
  ckpt_free (c);
}

/* The gate's write side, for frozen.c. */
void
ckpt_lock (void)
{
  pthread_rwlock_wrlock (&ckpt_gate);
}

void
ckpt_unlock (void)
{
  pthread_rwlock_unlock (&ckpt_gate);
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

  pthread_rwlock_rdlock (&ckpt_gate);
  old = db_disk_size;
  pthread_rwlock_unlock (&ckpt_gate);
  if (size == old)
    return;

  pthread_mutex_lock (&ckpt_save_lock);
  pthread_rwlock_wrlock (&ckpt_gate);
  pthread_mutex_lock (&ckpt_chain_lock);
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
    pthread_mutex_unlock (&ckpt_chain_lock);
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
    pthread_mutex_unlock (&ckpt_chain_lock);
  pthread_rwlock_unlock (&ckpt_gate);
  pthread_mutex_unlock (&ckpt_save_lock);
}
