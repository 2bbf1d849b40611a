/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * A checkpoint's life: checkpoint-create (and the provisional create
 * and confirm of a backup job), the merge back of provisional ones at
 * start-up, and checkpoint-delete.  Each changes the chain under
 * ckpt_save_lock and the write side of the gate, then saves the bitmap
 * file outside the gate (the lock rules are at the top of
 * checkpoints.c).
 */

#include <config.h>

#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

#include <nbdkit-filter.h>

#include "errors.h"
#include "checkpoints.h"
#include "checkpoints-int.h"
#include "dirty-bitmap.h"

extern int db_debug_verbose;

static int
create (const char *name, bool provisional, char **errmsg)
{
  struct checkpoint *c;
  uint64_t seq;
  int r;

  if (ckpt_command_lock (errmsg) == -1)
    return -1;
  if (ckpt_find (name)) {
    r = fleece_errorf (errmsg, "checkpoint %s already exists", name);
    goto refused;
  }
  if (db_ngranules == 0 && db_disk_size == 0) {
    r = fleece_errorf (errmsg, "the disk size is not known yet");
    goto refused;
  }
  c = ckpt_append (name, ckpt_next_seq, time (NULL), true);
  if (c == NULL) {
    r = fleece_errorf (errmsg, "out of memory for checkpoint %s", name);
    goto refused;
  }
  seq = c->seq;
  c->provisional = provisional;
  /* The checkpoint starts here; the file follows outside the gate. */
  r = ckpt_save_and_unlock (errmsg);
  if (r == -1) {
    /* Keep memory and file in step: undo.  Writes since the point
     * marked c; its bits go back to the one before, which records
     * again (and in write-ahead mode they went to its file region).
     * ckpt_save_lock keeps every other change of the chain out, so c
     * is still the newest.
     */
    pthread_rwlock_wrlock (&ckpt_gate);
    if (ckpt_newest && ckpt_newest->seq == seq)
      ckpt_unlink_merge (ckpt_newest);
    pthread_rwlock_unlock (&ckpt_gate);
  }
  else if (db_debug_verbose)
    nbdkit_debug ("dirty-bitmap: checkpoint %s (seq %" PRIu64 ") started",
                  name, seq);
  pthread_mutex_unlock (&ckpt_save_lock);
  return r;

 refused:
  ckpt_command_unlock ();
  return r;
}

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

int
ckpt_confirm (const char *name, char **errmsg)
{
  struct checkpoint *c;
  int r;

  if (ckpt_command_lock (errmsg) == -1)
    return -1;
  c = ckpt_find (name);
  if (c == NULL || !c->provisional) {
    ckpt_command_unlock ();
    return 0;
  }
  c->provisional = false;
  r = ckpt_save_and_unlock (errmsg);
  pthread_mutex_unlock (&ckpt_save_lock);
  return r;
}

void
ckpt_merge_provisional (void)
{
  struct checkpoint *c, *older;
  char *errmsg = NULL;
  bool any = false;

  pthread_mutex_lock (&ckpt_save_lock);
  pthread_rwlock_wrlock (&ckpt_gate);
  for (c = ckpt_newest; c; c = older) {
    older = c->older;
    if (c->provisional) {
      nbdkit_error ("dirty-bitmap: checkpoint %s was begun by a backup job "
                    "that did not complete before nbdkit stopped; it is "
                    "merged back, so incremental backups since the "
                    "checkpoint before it still cover every change",
                    c->name);
      ckpt_unlink_merge (c);
      any = true;
    }
  }
  if (!any) {
    ckpt_command_unlock ();
    return;
  }
  if (ckpt_save_and_unlock (&errmsg) == -1) {
    nbdkit_error ("%s", errmsg ? errmsg : "bitmap-file: cannot save");
    free (errmsg);
  }
  pthread_mutex_unlock (&ckpt_save_lock);
}

/* How long checkpoint-delete waits for delta connections to close. */
#define VIEW_CLOSE_WAIT_MS 2000

int
ckpt_delete (const char *name, char **errmsg)
{
  struct checkpoint *c;
  unsigned i;
  int r;

  if (ckpt_command_lock (errmsg) == -1)
    return -1;
  c = ckpt_find (name);
  if (c && c->holds[FLEECE_HOLD_SINCE]) {
    r = fleece_errorf (errmsg, "checkpoint %s is in use: the active snapshot "
                       "was begun with since=%s and serves changes since "
                       "it; delete it after snapshot-end", name, name);
    goto refused;
  }
  /* A client that has just disconnected may not be closed by nbdkit
   * yet (nbdcopy; checkpoint-delete in a script): give its connection
   * up to VIEW_CLOSE_WAIT_MS to go, with the gate released meanwhile.
   */
  for (i = 0; c && c->holds[FLEECE_HOLD_VIEW] && i < VIEW_CLOSE_WAIT_MS / 50;
       i++) {
    pthread_rwlock_unlock (&ckpt_gate);
    nanosleep (&(struct timespec) { .tv_nsec = 50000000 }, NULL);
    if (ckpt_gate_for_command (errmsg) == -1) {
      pthread_mutex_unlock (&ckpt_save_lock);
      return -1;
    }
    c = ckpt_find (name);
  }
  if (c == NULL) {
    r = fleece_errorf (errmsg, "no checkpoint named %s", name);
    goto refused;
  }
  if (c->holds[FLEECE_HOLD_VIEW]) {
    r = fleece_errorf (errmsg, "checkpoint %s is in use: %u open "
                       "connection(s) read the delta view since it; "
                       "delete it after they close", name,
                       c->holds[FLEECE_HOLD_VIEW]);
    goto refused;
  }
  /* Merge into the older neighbour, so "since" any older checkpoint
   * still covers these changes.  An inconsistent checkpoint taints the
   * one it merges into.
   */
  ckpt_unlink_merge (c);
  if (db_debug_verbose)
    nbdkit_debug ("dirty-bitmap: checkpoint %s deleted", name);
  /* The file follows memory, outside the gate; a failure here is
   * reported but the checkpoint is gone either way (keeping it would
   * lose nothing, but memory is the truth while nbdkit runs).
   */
  r = ckpt_save_and_unlock (errmsg);
  pthread_mutex_unlock (&ckpt_save_lock);
  return r;

 refused:
  ckpt_command_unlock ();
  return r;
}
