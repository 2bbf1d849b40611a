/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * The snapshot engine of the cbw filter: the set of active snapshots,
 * their begin and end, status, and the disk size they are taken at.
 * The guest's write path is copy.c, reading snapshots is view.c, the
 * shared state and its locking rules are in snapshot-int.h.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nbdkit-filter.h>

#include "errors.h"
#include "gate.h"
#include "json.h"
#include "quiesce.h"
#include "snapshot-int.h"
#include "snapshot.h"
#include "target.h"

pthread_rwlock_t snap_gate;
struct snapshot *snaps[SNAP_MAX];
unsigned nsnaps;
struct rangelock snap_ranges;
pthread_mutex_t state_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t last_id;        /* control thread only */

/* The disk's size as the latest context opened on it saw it: cbw's
 * .get_size runs in every context's handshake, before that context
 * can write.  snapshot_begin takes its size from here, so the control
 * thread never opens a backend connection of its own (a plugin that
 * serves one connection at a time would block it for ever).
 * Protected by size_lock.
 */
static pthread_mutex_t size_lock = PTHREAD_MUTEX_INITIALIZER;
static int64_t seen_size = -1;

void
snapshot_init (void)
{
  fleece_gate_init (&snap_gate);
  rangelock_init (&snap_ranges);
  quiesce_init ();
}

static void
snapshot_free (struct snapshot *s)
{
  const struct fleece_db_api *db = fleece_dirty_bitmap ();

  if (s) {
    if (db && s->frozen)
      db->frozen_free (s->frozen);
    bitset_free (&s->need);
    bitset_free (&s->copied);
    bitset_free (&s->moved);
    slotmap_free (&s->slots);
    free (s->broken);
    free (s->last_error);
    free (s);
  }
}

void
snapshot_cleanup (void)
{
  unsigned i;

  for (i = 0; i < SNAP_MAX; i++) {
    struct snapshot *s;

    pthread_mutex_lock (&state_lock);
    s = snaps[i];
    snaps[i] = NULL;
    pthread_mutex_unlock (&state_lock);
    snapshot_free (s);
  }
  nsnaps = 0;
  store_end ();
}

/* The active snapshot called name ("" for the default one), or NULL.
 * Caller holds the gate, or is the control thread.
 */
static struct snapshot *
find_by_name (const char *name)
{
  unsigned i;

  for (i = 0; i < SNAP_MAX; i++)
    if (snaps[i] && strcmp (snaps[i]->name, name) == 0)
      return snaps[i];
  return NULL;
}

/*----------------------------------------------------------------------
 * Breaking and errors.
 */

void
set_last_error (struct snapshot *s, const char *what, uint64_t offset,
                int err)
{
  char *msg;

  if (asprintf (&msg, "%s at offset %" PRIu64 ": %s",
                what, offset, strerror (err)) == -1)
    return;
  free (s->last_error);
  s->last_error = msg;
}

/* The errno a guest write fails with when its copy failed: the ones
 * NBD can carry, or that say what happened; anything else (a target
 * that went away: ENOTCONN, EPIPE, ...) is EIO.
 */
int
guest_errno (int err)
{
  switch (err) {
  case EIO: case ENOSPC: case EDQUOT: case EFBIG: case ETIMEDOUT:
  case ENOMEM:
    return err;
  default:
    return EIO;
  }
}

void
break_locked (struct snapshot *s, char *why)
{
  if (s->broken == NULL) {
    s->broken = why ? why : strdup ("the snapshot broke");
    why = NULL;
    nbdkit_error ("cbw: snapshot %" PRIu64 "%s%s is broken: %s", s->id,
                  s->name[0] ? " " : "", s->name, s->broken);
  }
  free (why);
}

/* The disk is smaller than s: the snapshot's data past the new end is
 * gone from the disk (unless copied), so s can no longer be exact.
 * This is no guest write's fault, so it breaks s whatever cbw-on-error
 * says.
 */
void
break_shrunk (struct snapshot *s, int64_t size)
{
  char *why;

  if (asprintf (&why, "the disk shrank from %" PRIu64 " to %" PRIi64
                " bytes while the snapshot was active", s->size,
                size) == -1)
    why = NULL;
  pthread_mutex_lock (&state_lock);
  break_locked (s, why);
  pthread_mutex_unlock (&state_lock);
}

void
snapshot_saw_size (int64_t size)
{
  unsigned i;

  pthread_mutex_lock (&size_lock);
  seen_size = size;
  pthread_mutex_unlock (&size_lock);
  pthread_rwlock_rdlock (&snap_gate);
  for (i = 0; i < SNAP_MAX; i++)
    if (snaps[i] && (uint64_t) size < snaps[i]->size)
      break_shrunk (snaps[i], size);
  pthread_rwlock_unlock (&snap_gate);
}

/*----------------------------------------------------------------------
 * Begin and end.
 */

static struct snapshot *
snapshot_new (const char *name, const char *checkpoint, const char *since,
              int64_t size, char **errmsg)
{
  struct snapshot *s = calloc (1, sizeof *s);

  if (s == NULL) {
    fleece_errorf (errmsg, "out of memory");
    return NULL;
  }
  s->size = size;
  s->nclusters = (size + cs () - 1) / cs ();
  snprintf (s->name, sizeof s->name, "%s", name);
  snprintf (s->checkpoint, sizeof s->checkpoint, "%s",
            checkpoint ? checkpoint : "");
  snprintf (s->since, sizeof s->since, "%s", since ? since : "");
  if (bitset_init (&s->need, s->nclusters) == -1 ||
      bitset_init (&s->copied, s->nclusters) == -1) {
    snapshot_free (s);
    fleece_errorf (errmsg, "out of memory for the cluster maps of a %"
                   PRIi64 "-byte disk", size);
    return NULL;
  }
  if (!since)
    bitset_set_all (&s->need);
  return s;
}

/* The target is shared by every active snapshot: prepared when the
 * first begins, emptied when the last ends.  Control thread only.
 */
static int
target_first (uint64_t size, char **errmsg)
{
  if (nsnaps > 0)
    return 0;
  if (target_begin (size, errmsg) == -1)
    return -1;
  if (store_begin ((size + cs () - 1) / cs (), target_capacity ()) == -1) {
    target_end ();
    return fleece_errorf (errmsg, "out of memory for the target's map");
  }
  return 0;
}

static void
target_last (void)
{
  if (nsnaps == 0) {
    store_end ();
    target_end ();
  }
}

int
snapshot_begin (const char *name, const char *checkpoint, const char *since,
                bool provisional, struct jbuf *reply, char **errmsg)
{
  const struct fleece_db_api *db = fleece_dirty_bitmap ();
  struct snapshot *s, *old;
  int64_t size;
  uint64_t needed;
  unsigned i, named = 0, slot = SNAP_MAX;

  old = find_by_name (name);
  if (old && name[0])
    return fleece_errorf (errmsg, "snapshot %s is already active (id %" PRIu64
                          "); end it with 'snapshot-end name=%s' first",
                          name, old->id, name);
  if (old)
    return fleece_errorf (errmsg, "a snapshot is already active (id %" PRIu64
                          "); end it with snapshot-end first, or take a "
                          "named one with name=NAME", old->id);
  for (i = 0; i < SNAP_MAX; i++) {
    if (snaps[i] == NULL) {
      if (slot == SNAP_MAX)
        slot = i;
    }
    else if (snaps[i]->name[0])
      named++;
  }
  if (name[0] && named >= SNAP_MAX_NAMED)
    return fleece_errorf (errmsg, "%d named snapshots are already active, "
                          "the most there may be; end one first",
                          SNAP_MAX_NAMED);
  if ((checkpoint || since) && db == NULL)
    return fleece_errorf (errmsg, "%s= needs the dirty-bitmap filter below "
                          "cbw (--filter=dirty-bitmap)",
                          checkpoint ? "checkpoint" : "since");

  pthread_mutex_lock (&size_lock);
  size = seen_size;
  pthread_mutex_unlock (&size_lock);
  if (size == -1)
    return fleece_errorf (errmsg, "the size of the disk is not known yet");

  s = snapshot_new (name, checkpoint, since, size, errmsg);
  if (s == NULL)
    return -1;
  if (target_first (size, errmsg) == -1) {
    snapshot_free (s);
    return -1;
  }

  /* The snapshot point: no guest write is in flight while we hold the
   * gate, and every later one sees the new snapshot.  The dirty-bitmap
   * filter sits directly below us (stack-rules.c), so its checkpoints
   * are frozen and change at exactly this point too.
   */
  if (fleece_gate_wrlock (&snap_gate, FLEECE_GATE_WAIT_SECONDS) != 0) {
    snapshot_free (s);
    target_last ();
    return fleece_errorf (errmsg, "guest writes in flight did not finish "
                          "within %d s (is the disk or the target hung?); "
                          "no snapshot was taken", FLEECE_GATE_WAIT_SECONDS);
  }
  if (db) {
    s->frozen = db->freeze (since, errmsg);
    if (s->frozen == NULL ||
        (since &&
         db->changed_since (s->frozen, since, cs (), &s->need,
                            errmsg) == -1) ||
        (checkpoint &&
         (provisional ? db->begin_checkpoint_provisional (checkpoint, errmsg)
          : db->begin_checkpoint (checkpoint, errmsg)) == -1)) {
      pthread_rwlock_unlock (&snap_gate);
      snapshot_free (s);
      target_last ();
      return -1;
    }
    if (since)
      s->since_hold = db->hold (since, FLEECE_HOLD_SINCE);
  }
  s->id = ++last_id;
  s->started = time (NULL);
  /* Count before publishing: from then on writers clear bits. */
  needed = bitset_count (&s->need);
  pthread_mutex_lock (&state_lock);
  snaps[slot] = s;
  pthread_mutex_unlock (&state_lock);
  nsnaps++;
  pthread_rwlock_unlock (&snap_gate);

  nbdkit_debug ("cbw: snapshot %" PRIu64 "%s%s begun, %" PRIi64 " bytes, %"
                PRIu64 " of %" PRIu64 " clusters preserved", s->id,
                name[0] ? " " : "", name, size, needed, s->nclusters);
  jbuf_kv_u64 (reply, "id", s->id);
  if (name[0])
    jbuf_kv_string (reply, "name", name);
  jbuf_kv_time (reply, "started", s->started);
  jbuf_kv_u64 (reply, "clusters_preserved", needed);
  return 0;
}

int
snapshot_end (const char *name, struct jbuf *reply, char **errmsg)
{
  const struct fleece_db_api *db = fleece_dirty_bitmap ();
  struct snapshot *s = find_by_name (name);
  unsigned i;

  if (s == NULL && name[0])
    return fleece_errorf (errmsg, "no snapshot named %s is active", name);
  if (s == NULL)
    return fleece_errorf (errmsg, "no snapshot is active");

  if (fleece_gate_wrlock (&snap_gate, FLEECE_GATE_WAIT_SECONDS) != 0)
    return fleece_errorf (errmsg, "requests in flight did not finish within "
                          "%d s (is the disk or the target hung?); the "
                          "snapshot is still active", FLEECE_GATE_WAIT_SECONDS);
  /* With other snapshots still active, give back what only s held;
   * the last one empties the whole target at once.
   */
  if (nsnaps > 1)
    snapshot_drop_range (s, 0, s->nclusters, NULL);
  pthread_mutex_lock (&state_lock);
  for (i = 0; i < SNAP_MAX; i++)
    if (snaps[i] == s)
      snaps[i] = NULL;
  pthread_mutex_unlock (&state_lock);
  nsnaps--;
  target_last ();
  pthread_rwlock_unlock (&snap_gate);
  if (db)
    db->unhold (s->since_hold, FLEECE_HOLD_SINCE);

  nbdkit_debug ("cbw: snapshot %" PRIu64 " ended after copying %" PRIu64
                " clusters", s->id, s->clusters_copied);
  jbuf_kv_u64 (reply, "id", s->id);
  jbuf_kv_u64 (reply, "clusters_copied", s->clusters_copied);
  snapshot_free (s);
  return 0;
}

/*----------------------------------------------------------------------
 * Status.
 */

/* The members of one snapshot's status object.  Caller holds the gate
 * for reading.
 */
static void
status_members (const struct snapshot *s, struct jbuf *reply)
{
  jbuf_kv_bool (reply, "active", s != NULL);
  jbuf_kv_time (reply, "started", s ? s->started : 0);
  pthread_mutex_lock (&state_lock);
  jbuf_kv_u64 (reply, "clusters_copied", s ? s->clusters_copied : 0);
  jbuf_kv_u64 (reply, "target_bytes", s ? s->target_bytes : 0);
  jbuf_kv_u64 (reply, "released_bytes", s ? s->released_bytes : 0);
  jbuf_kv_string (reply, "broken", s ? s->broken : NULL);
  jbuf_kv_u64 (reply, "copy_errors", s ? s->copy_errors : 0);
  jbuf_kv_string (reply, "last_error", s ? s->last_error : NULL);
  pthread_mutex_unlock (&state_lock);
  if (s) {
    jbuf_kv_u64 (reply, "id", s->id);
    jbuf_kv_u64 (reply, "size", s->size);
    jbuf_kv_name (reply, "checkpoint", s->checkpoint);
    jbuf_kv_name (reply, "since", s->since);
  }
  jbuf_kv_u64 (reply, "cluster_size", cbw_config.cluster_size);
  jbuf_kv_string (reply, "target_kind",
                  cbw_target_kind_name (cbw_config.target_kind));
  jbuf_kv_string (reply, "on_error", cbw_on_error_name (cbw_config.on_error));
}

void
snapshot_status (struct jbuf *reply)
{
  unsigned i;
  bool first = true;

  pthread_rwlock_rdlock (&snap_gate);
  jbuf_kv_raw (reply, "snapshot", "{");
  status_members (find_by_name (""), reply);
  jbuf_raw (reply, "}");
  jbuf_kv_raw (reply, "snapshots", "[");
  for (i = 0; i < SNAP_MAX; i++) {
    if (snaps[i] == NULL || snaps[i]->name[0] == '\0')
      continue;
    jbuf_raw (reply, first ? "{" : ",{");
    first = false;
    jbuf_kv_string (reply, "name", snaps[i]->name);
    status_members (snaps[i], reply);
    jbuf_raw (reply, "}");
  }
  jbuf_raw (reply, "]");
  jbuf_kv_raw (reply, "target", "{");
  pthread_mutex_lock (&state_lock);
  jbuf_kv_u64 (reply, "held_bytes", store_held_bytes ());
  pthread_mutex_unlock (&state_lock);
  if (cbw_config.target_limit)
    jbuf_kv_u64 (reply, "limit", cbw_config.target_limit);
  else
    jbuf_kv_raw (reply, "limit", "null");
  jbuf_raw (reply, "}");
  jbuf_kv_raw (reply, "buffer", "{");
  target_status (reply);
  jbuf_raw (reply, "}");
  pthread_rwlock_unlock (&snap_gate);
  quiesce_status (reply);
}

void
snapshot_info (const char *name, struct fleece_snapshot_info *info)
{
  struct snapshot *s;

  memset (info, 0, sizeof *info);
  pthread_rwlock_rdlock (&snap_gate);
  s = find_by_name (name);
  if (s) {
    info->id = s->id;
    info->size = s->size;
    info->started = s->started;
    memcpy (info->name, s->name, sizeof info->name);
    memcpy (info->checkpoint, s->checkpoint, sizeof info->checkpoint);
    memcpy (info->since, s->since, sizeof info->since);
  }
  pthread_rwlock_unlock (&snap_gate);
}

char **
snapshot_names (void)
{
  char **names = calloc (SNAP_MAX + 1, sizeof *names);
  unsigned i, n = 0;

  if (names == NULL)
    return NULL;
  pthread_rwlock_rdlock (&snap_gate);
  for (i = 0; i < SNAP_MAX; i++) {
    if (snaps[i] == NULL)
      continue;
    names[n] = strdup (snaps[i]->name);
    if (names[n] == NULL)
      break;
    n++;
  }
  pthread_rwlock_unlock (&snap_gate);
  return names;
}
