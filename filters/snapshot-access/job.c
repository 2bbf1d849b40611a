/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * Push backup jobs (semantics after QEMU's backup job: sync modes, a
 * checkpoint that only takes effect if the job succeeds, speed,
 * progress, pause and cancel).
 *
 * Life of a job:
 *
 *   backup-start (control thread): check every argument, open the
 *   target without changing it, begin the job's own snapshot through
 *   cbw (snapshot_begin_owned, with checkpoint= and since= as
 *   snapshot-begin takes them), start the job thread, reply at once.
 *   Any failure before the reply changes nothing (a target file this
 *   command created is removed again).
 *
 *   job thread: opens its own read-only context on the layer below
 *   (cbw), exactly as a connection to the "snapshot" export does, maps
 *   what to copy into runs, and lets a few workers copy pieces of the
 *   runs in parallel.  Then it flushes the target, ends the snapshot,
 *   and if the job did not complete, deletes the checkpoint it started
 *   so its changes merge back into the one before (so "since" that one
 *   still covers everything).  Only then does the state become final.
 *
 * What is copied:
 *
 *   sync=full: the snapshot's block status; extents reading as zero
 *   are skipped when the target starts zeroed (a file is truncated to
 *   zero and extended sparse; an NBD export only if the user says
 *   target-zeroed=true), else made zero with WRITE_ZEROES, so the
 *   result equals the snapshot on any target.  Data extents are read;
 *   within each piece, 64K blocks that read as zeroes are skipped on
 *   a zeroed target, so the target is as sparse as the disk.
 *
 *   sync=incremental since=C: exactly the granules (dirty-bitmap's
 *   granularity) changed between C and the snapshot point; each is
 *   written whatever it holds, zero blocks as WRITE_ZEROES (or a
 *   punched hole in a file), never skipped, because the target holds
 *   the previous backup.
 *
 * Progress: bytes_total is the bytes the job reads from the snapshot
 * (the data extents for full, the changed granules for incremental),
 * known once the job has mapped the snapshot (0 before);
 * bytes_done counts the bytes of those that are on the target.
 * Zeroing holes of a non-zeroed NBD target is not counted (it reads
 * nothing and is cheap).  bytes_done only grows and equals bytes_total
 * when a job completes.
 *
 * Speed: a virtual clock.  Each piece of data reserves len/speed
 * seconds starting at t_free (or now, if t_free is past) and waits
 * until its start, so the average rate over any interval is speed up
 * to one piece per worker.  Pieces are speed/16 bytes (64K to 1M) so a
 * one-second window holds many of them.  job-set-speed, job-resume
 * restart the clock at now.
 *
 * Locks:
 *
 * jobs_lock (mutex) with jobs_cond.  Protects the pointer job and every
 * field of *job marked "lock" below, thread and joinable, and
 * shutting_down.  Held only for short updates, never across I/O.
 * Waiters on jobs_cond: paused workers, workers sleeping for the speed
 * limit (timed), nothing else.
 *
 * *job itself lives until the next backup-start replaces it, which
 * happens only after the previous job thread was joined; the job
 * thread and its workers use the fields marked "fixed" without the
 * lock.  The control thread serialises commands, so two backup-starts
 * never race; job_stop_all (from .cleanup) may run concurrently with
 * a command, so joining goes through joinable (whoever clears it,
 * under the lock, joins).
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

#include "bitmap.h"
#include "errors.h"
#include "fleece-api.h"
#include "job-dest.h"
#include "job.h"
#include "json.h"
#include "size.h"

#define MAX_WORKERS 4
#define PIECE_MAX (1024 * 1024)
#define PIECE_MIN (64 * 1024)
#define ZERO_RUN_PIECE (64 * 1024 * 1024)
#define ZERO_BLOCK (64 * 1024)  /* zero check granularity */
#define MAP_STEP (1U << 30)     /* block status asked per call */

enum run_kind {
  RUN_DATA,                     /* read, then write (or zero) */
  RUN_ZERO,                     /* make zero on the target, read nothing */
};

struct run {
  uint64_t off, len;
  enum run_kind kind;
};

enum job_state {
  JOB_RUNNING, JOB_PAUSED, JOB_COMPLETED, JOB_FAILED, JOB_CANCELLED,
};

static const char *const state_names[] = {
  "running", "paused", "completed", "failed", "cancelled",
};

struct job {
  /* fixed: set by backup-start before the thread starts. */
  char id[32];
  bool full;
  char since[FLEECE_NAME_BUF];
  char checkpoint[FLEECE_NAME_BUF];
  char *target;
  uint64_t snap_id;
  uint64_t size;
  struct job_dest *dest;
  int64_t started;

  /* fixed once the workers start (set by the job thread before it
   * creates them, never changed while they run).
   */
  nbdkit_next *next;
  struct run *runs;
  size_t nruns;

  /* lock */
  enum job_state state;
  bool cancel;                  /* job-cancel */
  bool stop;                    /* job_stop_all */
  char *stop_why;
  char *error;                  /* the first failure, or NULL */
  uint64_t bytes_total, bytes_done;
  uint64_t speed;               /* bytes/s, 0 unlimited */
  double t_free;                /* speed limit clock (monotonic s) */
  size_t cur_run;               /* work cursor: next piece starts at */
  uint64_t cur_pos;             /*   runs[cur_run].off + cur_pos */
  int64_t finished;
};

static pthread_mutex_t jobs_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t jobs_cond = PTHREAD_COND_INITIALIZER;
static struct job *job;         /* the latest job, or NULL (lock) */
static pthread_t thread;        /* its thread (lock) */
static bool joinable;           /* thread not joined yet (lock) */
static bool shutting_down;      /* job_stop_all ran (lock) */
static uint64_t last_job;       /* control thread only */

/* Start-up state, written before any job. */
static nbdkit_backend *below;
static int nworkers = MAX_WORKERS;

void
job_set_thread_model (int thread_model)
{
  /* Our contexts are not serialised by nbdkit: stay in line with a
   * plugin that does not take parallel requests.
   */
  nworkers = thread_model >= NBDKIT_THREAD_MODEL_PARALLEL ? MAX_WORKERS : 1;
}

void
job_set_backend (nbdkit_backend *backend)
{
  below = backend;
}

static bool
active (const struct job *j)
{
  return j->state == JOB_RUNNING || j->state == JOB_PAUSED;
}

static double
now_mono (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void
free_job (struct job *j)
{
  if (j == NULL)
    return;
  free (j->target);
  free (j->runs);
  free (j->stop_why);
  free (j->error);
  free (j);
}

/* Record the first error of a job (takes msg). */
static void
set_error_locked (struct job *j, char *msg)
{
  if (j->error == NULL)
    j->error = msg ? msg : strdup ("out of memory");
  else
    free (msg);
  pthread_cond_broadcast (&jobs_cond);
}

static void
set_error (struct job *j, char *msg)
{
  pthread_mutex_lock (&jobs_lock);
  set_error_locked (j, msg);
  pthread_mutex_unlock (&jobs_lock);
}

/* Should the workers stop taking pieces? */
static bool
stopping_locked (const struct job *j)
{
  return j->cancel || j->stop || j->error;
}

/*----------------------------------------------------------------------
 * Mapping: what the job copies.
 */

static int
add_run (struct job *j, size_t *cap, uint64_t off, uint64_t len,
         enum run_kind kind)
{
  struct run *r;

  if (len == 0)
    return 0;
  if (j->nruns > 0) {
    r = &j->runs[j->nruns - 1];
    if (r->kind == kind && r->off + r->len == off) {
      r->len += len;
      return 0;
    }
  }
  if (j->nruns == *cap) {
    size_t ncap = *cap ? *cap * 2 : 64;

    r = realloc (j->runs, ncap * sizeof *r);
    if (r == NULL)
      return -1;
    j->runs = r;
    *cap = ncap;
  }
  j->runs[j->nruns++] = (struct run) { off, len, kind };
  return 0;
}

/* sync=full: the snapshot's block status. */
static int
map_full (struct job *j, const struct fleece_cbw_api *cbw, bool can_extents,
          char **errmsg)
{
  const bool zeroed = dest_starts_zeroed (j->dest);
  size_t cap = 0;
  uint64_t off = 0, reached, count;
  size_t i;
  int err = 0;

  if (!can_extents)
    return add_run (j, &cap, 0, j->size, RUN_DATA) == -1
      ? fleece_errorf (errmsg, "out of memory") : 0;

  while (off < j->size) {
    struct nbdkit_extents *ext;

    count = j->size - off < MAP_STEP ? j->size - off : MAP_STEP;
    ext = nbdkit_extents_new (off, off + count);
    if (ext == NULL)
      return fleece_errorf (errmsg, "out of memory for block status");
    if (cbw->snapshot_extents (j->snap_id, j->next, count, off, 0, ext,
                               &err) == -1) {
      nbdkit_extents_free (ext);
      return fleece_errorf (errmsg, "block status of the snapshot at offset "
                            "%" PRIu64 " failed: %s (see the nbdkit log)",
                            off, strerror (err));
    }
    reached = off;
    for (i = 0; i < nbdkit_extents_count (ext); i++) {
      struct nbdkit_extent e = nbdkit_get_extent (ext, i);
      uint64_t end = e.offset + e.length;

      if (e.offset >= j->size)
        break;
      if (end > j->size)
        end = j->size;
      if (e.offset < reached)   /* never count a byte twice */
        e.offset = reached;
      if (end <= e.offset)
        continue;
      if (e.type & NBDKIT_EXTENT_ZERO) {
        if (!zeroed && add_run (j, &cap, e.offset, end - e.offset,
                                RUN_ZERO) == -1)
          err = -1;
      }
      else if (add_run (j, &cap, e.offset, end - e.offset, RUN_DATA) == -1)
        err = -1;
      reached = end;
    }
    nbdkit_extents_free (ext);
    if (err == -1)
      return fleece_errorf (errmsg, "out of memory for the copy map");
    if (reached <= off)
      return fleece_errorf (errmsg, "block status of the snapshot at offset "
                            "%" PRIu64 " described nothing", off);
    off = reached;
  }
  return 0;
}

/* sync=incremental: the granules changed since the checkpoint. */
static int
map_incremental (struct job *j, const struct fleece_cbw_api *cbw,
                 char **errmsg)
{
  const struct fleece_db_api *db = fleece_dirty_bitmap ();
  struct bitmap changed;
  uint64_t gran, u, e, off, end;
  size_t cap = 0;
  int r = 0;

  if (db == NULL)
    return fleece_errorf (errmsg, "incremental backups need the "
                          "dirty-bitmap filter");
  gran = db->granularity ();
  if (bitmap_init (&changed, (j->size + gran - 1) / gran) == -1)
    return fleece_errorf (errmsg, "out of memory for the changed-block map");
  if (cbw->snapshot_changed_since (j->snap_id, j->since, gran, &changed,
                                   errmsg) == -1) {
    bitmap_free (&changed);
    return -1;
  }
  for (u = bitmap_next_set (&changed, 0); r == 0 && u < changed.nbits;
       u = bitmap_next_set (&changed, e)) {
    e = bitmap_next_clear (&changed, u);
    off = u * gran;
    end = e * gran < j->size ? e * gran : j->size;
    r = add_run (j, &cap, off, end - off, RUN_DATA);
  }
  bitmap_free (&changed);
  if (r == -1)
    return fleece_errorf (errmsg, "out of memory for the copy map");
  return 0;
}

/*----------------------------------------------------------------------
 * Workers.
 */

static bool
is_zero (const char *p, size_t n)
{
  return n == 0 || (p[0] == 0 && memcmp (p, p + 1, n - 1) == 0);
}

/* Write a piece read from the snapshot: non-zero stretches as data;
 * zero blocks skipped on a full backup's zeroed target, else zeroed.
 */
static int
write_piece (struct job *j, const char *buf, uint64_t off, uint64_t len,
             char **errmsg)
{
  const bool skip_zero = j->full && dest_starts_zeroed (j->dest);
  uint64_t pos = 0, start, n;
  bool zero;

  while (pos < len) {
    start = pos;
    n = len - pos < ZERO_BLOCK ? len - pos : ZERO_BLOCK;
    zero = is_zero (buf + pos, n);
    pos += n;
    while (pos < len) {
      n = len - pos < ZERO_BLOCK ? len - pos : ZERO_BLOCK;
      if (is_zero (buf + pos, n) != zero)
        break;
      pos += n;
    }
    if (!zero) {
      if (dest_write (j->dest, buf + start, pos - start, off + start,
                      errmsg) == -1)
        return -1;
    }
    else if (!skip_zero &&
             dest_zero (j->dest, pos - start, off + start, errmsg) == -1)
      return -1;
  }
  return 0;
}

static uint64_t
piece_size (uint64_t speed)
{
  uint64_t n;

  if (speed == 0)
    return PIECE_MAX;
  n = speed / 16 / PIECE_MIN * PIECE_MIN;
  if (n < PIECE_MIN)
    n = PIECE_MIN;
  return n > PIECE_MAX ? PIECE_MAX : n;
}

/* Sleep until the monotonic time due, or until the job must stop. */
static void
wait_until (struct job *j, double due)
{
  double left;
  struct timespec ts;

  for (;;) {
    pthread_mutex_lock (&jobs_lock);
    if (stopping_locked (j)) {
      pthread_mutex_unlock (&jobs_lock);
      return;
    }
    pthread_mutex_unlock (&jobs_lock);
    left = due - now_mono ();
    if (left <= 0)
      return;
    if (left > 0.05)
      left = 0.05;
    ts.tv_sec = 0;
    ts.tv_nsec = left * 1e9;
    nanosleep (&ts, NULL);
  }
}

static void *
worker (void *arg)
{
  struct job *j = arg;
  const struct fleece_cbw_api *cbw = fleece_cbw ();
  char *buf = malloc (PIECE_MAX);
  struct run p;
  double due;
  char *msg;
  int err, r;

  if (buf == NULL) {
    set_error (j, strdup ("out of memory for a copy buffer"));
    return NULL;
  }
  for (;;) {
    pthread_mutex_lock (&jobs_lock);
    while (!stopping_locked (j) && j->state == JOB_PAUSED)
      pthread_cond_wait (&jobs_cond, &jobs_lock);
    if (stopping_locked (j) || j->cur_run == j->nruns) {
      pthread_mutex_unlock (&jobs_lock);
      break;
    }
    p = j->runs[j->cur_run];
    p.off += j->cur_pos;
    p.len -= j->cur_pos;
    {
      uint64_t max = p.kind == RUN_DATA ? piece_size (j->speed)
        : ZERO_RUN_PIECE;

      if (p.len > max)
        p.len = max;
    }
    j->cur_pos += p.len;
    if (j->cur_pos == j->runs[j->cur_run].len) {
      j->cur_run++;
      j->cur_pos = 0;
    }
    due = 0;
    if (p.kind == RUN_DATA && j->speed) {
      double now = now_mono ();

      if (j->t_free < now)
        j->t_free = now;
      due = j->t_free;
      j->t_free += (double) p.len / j->speed;
    }
    pthread_mutex_unlock (&jobs_lock);

    if (due > 0)
      wait_until (j, due);

    msg = NULL;
    if (p.kind == RUN_ZERO)
      r = dest_zero (j->dest, p.len, p.off, &msg);
    else {
      err = 0;
      r = cbw->snapshot_pread (j->snap_id, j->next, buf, p.len, p.off, &err);
      if (r == -1)
        fleece_errorf (&msg, "reading the snapshot at offset %" PRIu64
                       " failed: %s (see the nbdkit log)", p.off,
                       strerror (err));
      else
        r = write_piece (j, buf, p.off, p.len, &msg);
    }

    pthread_mutex_lock (&jobs_lock);
    if (r == -1)
      set_error_locked (j, msg);
    else if (p.kind == RUN_DATA)
      j->bytes_done += p.len;
    pthread_mutex_unlock (&jobs_lock);
  }
  free (buf);
  return NULL;
}

/*----------------------------------------------------------------------
 * The job thread.
 */

/* Copy everything; returns 0, or -1 with the reason in j->error, or
 * 0 with j->cancel or j->stop set if it was stopped.
 */
static void
run_job (struct job *j)
{
  const struct fleece_cbw_api *cbw = fleece_cbw ();
  pthread_t tids[MAX_WORKERS];
  uint64_t total = 0;
  char *msg = NULL;
  int i, n = 0, can_extents;
  size_t k;

  j->next = nbdkit_next_context_open (below, 1, "", 1);
  if (j->next == NULL) {
    set_error (j, strdup ("cannot open a context on the disk "
                          "(see the nbdkit log)"));
    return;
  }
  if (j->next->prepare (j->next) == -1 ||
      j->next->get_size (j->next) == -1 ||
      (can_extents = j->next->can_extents (j->next)) == -1) {
    set_error (j, strdup ("cannot open the disk below (see the nbdkit "
                          "log)"));
    return;
  }
  if ((j->full && dest_prepare_full (j->dest, j->size, &msg) == -1) ||
      (j->full ? map_full (j, cbw, can_extents == 1, &msg)
       : map_incremental (j, cbw, &msg)) == -1) {
    set_error (j, msg);
    return;
  }
  for (k = 0; k < j->nruns; k++)
    if (j->runs[k].kind == RUN_DATA)
      total += j->runs[k].len;

  pthread_mutex_lock (&jobs_lock);
  j->bytes_total = total;
  j->t_free = now_mono ();
  pthread_mutex_unlock (&jobs_lock);
  nbdkit_debug ("job %s: %zu runs, %" PRIu64 " bytes to copy, %d workers",
                j->id, j->nruns, total, nworkers);

  for (i = 0; i < nworkers; i++) {
    if (pthread_create (&tids[i], NULL, worker, j) != 0) {
      set_error (j, strdup ("cannot start a worker thread"));
      break;
    }
    n++;
  }
  for (i = 0; i < n; i++)
    pthread_join (tids[i], NULL);

  pthread_mutex_lock (&jobs_lock);
  i = stopping_locked (j);
  pthread_mutex_unlock (&jobs_lock);
  if (!i && dest_flush (j->dest, &msg) == -1)
    set_error (j, msg);
}

static void *
job_main (void *arg)
{
  struct job *j = arg;
  const struct fleece_cbw_api *cbw = fleece_cbw ();
  const struct fleece_db_api *db = fleece_dirty_bitmap ();
  enum job_state final;
  char *msg = NULL, *why;

  run_job (j);
  if (j->next) {
    j->next->finalize (j->next);
    nbdkit_next_context_close (j->next);
    j->next = NULL;
  }
  dest_close (j->dest);
  j->dest = NULL;

  pthread_mutex_lock (&jobs_lock);
  if (j->error)
    final = JOB_FAILED;
  else if (j->cancel)
    final = JOB_CANCELLED;
  else if (j->stop) {
    final = JOB_FAILED;
    j->error = strdup (j->stop_why ? j->stop_why : "stopped");
  }
  else
    final = JOB_COMPLETED;
  pthread_mutex_unlock (&jobs_lock);

  /* End the snapshot, then merge back the checkpoint of a job that did
   * not complete.  The state becomes final only after both, so a
   * client that sees it may start the next backup at once.
   */
  if (cbw->snapshot_end_owned (j->snap_id, &msg) == -1) {
    nbdkit_error ("job %s: ending its snapshot: %s", j->id,
                  msg ? msg : "failed");
    if (final == JOB_COMPLETED)
      final = JOB_FAILED;
    pthread_mutex_lock (&jobs_lock);
    set_error_locked (j, msg);
    pthread_mutex_unlock (&jobs_lock);
    msg = NULL;
  }
  /* A completed job's checkpoint stops being provisional: from now on
   * it survives a restart.  If that cannot be saved it stays
   * provisional, which only means a restart merges it back (safe).
   */
  if (final == JOB_COMPLETED && j->checkpoint[0] && db &&
      db->confirm_checkpoint (j->checkpoint, &msg) == -1) {
    nbdkit_error ("job %s: keeping checkpoint %s across restarts: %s",
                  j->id, j->checkpoint, msg ? msg : "failed");
    free (msg);
    msg = NULL;
  }
  if (final != JOB_COMPLETED && j->checkpoint[0] && db) {
    if (db->delete_checkpoint (j->checkpoint, &msg) == -1) {
      why = NULL;
      fleece_errorf (&why, "checkpoint %s could not be merged back (%s); "
                     "delete it with checkpoint-delete %s before the next "
                     "incremental backup", j->checkpoint,
                     msg ? msg : "failed", j->checkpoint);
      nbdkit_error ("job %s: %s", j->id, why ? why : "merge back failed");
      pthread_mutex_lock (&jobs_lock);
      if (j->error) {
        /* Keep the first reason, add this one. */
        char *both = NULL;

        fleece_errorf (&both, "%s; %s", j->error, why ? why : "");
        if (both) {
          free (j->error);
          j->error = both;
        }
        free (why);
      }
      else
        j->error = why;
      pthread_mutex_unlock (&jobs_lock);
      free (msg);
    }
    else
      nbdkit_debug ("job %s: checkpoint %s merged back", j->id,
                    j->checkpoint);
  }

  pthread_mutex_lock (&jobs_lock);
  j->state = final;
  j->finished = time (NULL);
  if (final == JOB_COMPLETED)
    j->bytes_done = j->bytes_total;     /* already equal; never less */
  pthread_cond_broadcast (&jobs_cond);
  pthread_mutex_unlock (&jobs_lock);
  nbdkit_debug ("job %s: %s%s%s", j->id, state_names[final],
                j->error ? ": " : "", j->error ? j->error : "");
  return NULL;
}

/*----------------------------------------------------------------------
 * Commands.
 */

static int
parse_speed (const char *value, uint64_t *out, char **errmsg)
{
  const char *why = NULL;

  if (fleece_parse_size (value, out, &why) == -1)
    return fleece_errorf (errmsg, "speed=%s: %s; give bytes per second, "
                          "e.g. 50M, or 0 for unlimited", value,
                          why ? why : "not a size");
  return 0;
}

static int
name_arg (const struct ctl_request *req, const char *key, const char **out,
          char **errmsg)
{
  *out = ctl_request_get (req, key);
  if (*out && !fleece_valid_name (*out))
    return fleece_errorf (errmsg, "%s=%s: a checkpoint name is 1 to %d "
                          "characters from A-Z a-z 0-9 _ . - and does not "
                          "start with . or -", key, *out, FLEECE_NAME_MAX);
  return 0;
}

/* Join the previous job's thread, which has ended. */
static void
join_ended (void)
{
  pthread_t t;
  bool join = false;

  pthread_mutex_lock (&jobs_lock);
  if (joinable && job && !active (job)) {
    joinable = false;
    join = true;
    t = thread;
  }
  pthread_mutex_unlock (&jobs_lock);
  if (join)
    pthread_join (t, NULL);
}

/* backup-start failed after it began the snapshot: end it, merge back
 * the checkpoint it started, remove a target file it created.
 */
static void
undo_start (struct job_dest *dest, uint64_t snap_id, const char *checkpoint)
{
  const struct fleece_cbw_api *cbw = fleece_cbw ();
  const struct fleece_db_api *db = fleece_dirty_bitmap ();
  char *msg = NULL;

  dest_discard_created (dest);
  dest_close (dest);
  if (cbw->snapshot_end_owned (snap_id, &msg) == -1)
    nbdkit_error ("backup-start: ending the snapshot again: %s",
                  msg ? msg : "failed");
  free (msg);
  msg = NULL;
  if (checkpoint && db && db->delete_checkpoint (checkpoint, &msg) == -1)
    nbdkit_error ("backup-start: removing checkpoint %s again: %s",
                  checkpoint, msg ? msg : "failed");
  free (msg);
}

static int
backup_start (const struct ctl_request *req, struct jbuf *reply,
              char **errmsg)
{
  static const char *const keys[] = {
    "target", "sync", "since", "checkpoint", "speed", "target-zeroed", NULL
  };
  const struct fleece_cbw_api *cbw = fleece_cbw ();
  const char *target, *sync, *since, *checkpoint, *speed_s, *zeroed_s;
  struct fleece_snapshot_info info;
  struct job_dest *dest;
  struct job *j, *old;
  uint64_t speed = 0, snap_id;
  int64_t disk_size;
  bool full, zeroed = false;
  char id[32];

  if (ctl_request_check (req, keys, 0, errmsg) == -1 ||
      name_arg (req, "since", &since, errmsg) == -1 ||
      name_arg (req, "checkpoint", &checkpoint, errmsg) == -1)
    return -1;
  target = ctl_request_get (req, "target");
  sync = ctl_request_get (req, "sync");
  speed_s = ctl_request_get (req, "speed");
  zeroed_s = ctl_request_get (req, "target-zeroed");
  if (target == NULL || target[0] == '\0')
    return fleece_errorf (errmsg, "backup-start needs target=PATH or "
                          "target=URI (nbd://, nbd+unix://...)");
  if (sync == NULL)
    full = since == NULL;
  else if (strcmp (sync, "full") == 0)
    full = true;
  else if (strcmp (sync, "incremental") == 0)
    full = false;
  else
    return fleece_errorf (errmsg, "sync=%s: use sync=full or "
                          "sync=incremental", sync);
  if (full && since)
    return fleece_errorf (errmsg, "since=%s is for sync=incremental; a full "
                          "backup copies the whole disk", since);
  if (!full && since == NULL)
    return fleece_errorf (errmsg, "sync=incremental needs since=CHECKPOINT "
                          "(the checkpoint of the backup the target holds)");
  if (speed_s && parse_speed (speed_s, &speed, errmsg) == -1)
    return -1;
  if (zeroed_s) {
    if (strcmp (zeroed_s, "true") == 0)
      zeroed = true;
    else if (strcmp (zeroed_s, "false") != 0)
      return fleece_errorf (errmsg, "target-zeroed=%s: use true or false",
                            zeroed_s);
    if (zeroed && !(full && dest_is_uri (target)))
      return fleece_errorf (errmsg, "target-zeroed=true is for a full "
                            "backup to an NBD export that reads as zeroes; "
                            "a file target is made zero by the job, an "
                            "incremental target holds the previous backup");
  }

  pthread_mutex_lock (&jobs_lock);
  if (shutting_down) {
    pthread_mutex_unlock (&jobs_lock);
    return fleece_errorf (errmsg, "nbdkit is shutting down");
  }
  if (job && active (job)) {
    pthread_mutex_unlock (&jobs_lock);
    return fleece_errorf (errmsg, "backup job %s is running; one job at a "
                          "time; wait for it or cancel it with job-cancel "
                          "id=%s", job->id, job->id);
  }
  pthread_mutex_unlock (&jobs_lock);
  if (below == NULL)
    return fleece_errorf (errmsg, "the server is not ready yet");

  /* Open the target (changing nothing) before the snapshot, so a bad
   * target leaves the checkpoints as they were.
   */
  disk_size = cbw->disk_size ();
  if (disk_size < 0)
    return fleece_errorf (errmsg, "the size of the disk is not known yet");
  dest = dest_open (target, full, disk_size, errmsg);
  if (dest == NULL)
    return -1;
  snprintf (id, sizeof id, "backup-%" PRIu64, last_job + 1);
  snap_id = cbw->snapshot_begin_owned (id, checkpoint, since, errmsg);
  if (snap_id == 0) {
    dest_discard_created (dest);
    dest_close (dest);
    return -1;
  }
  cbw->snapshot_info (id, &info);
  if (info.id != snap_id || info.size != (uint64_t) disk_size) {
    undo_start (dest, snap_id, checkpoint);
    return fleece_errorf (errmsg, "the disk changed size during "
                          "backup-start; nothing was changed, try again");
  }
  if (zeroed)
    dest_declare_zeroed (dest);

  j = calloc (1, sizeof *j);
  if (j == NULL || (j->target = strdup (target)) == NULL) {
    free (j);
    undo_start (dest, snap_id, checkpoint);
    return fleece_errorf (errmsg, "out of memory");
  }
  snprintf (j->id, sizeof j->id, "%s", id);
  j->full = full;
  snprintf (j->since, sizeof j->since, "%s", since ? since : "");
  snprintf (j->checkpoint, sizeof j->checkpoint, "%s",
            checkpoint ? checkpoint : "");
  j->snap_id = snap_id;
  j->size = info.size;
  j->dest = dest;
  j->started = time (NULL);
  j->speed = speed;
  j->state = JOB_RUNNING;

  /* The previous job, if any, has ended: join its thread, replace it. */
  join_ended ();
  pthread_mutex_lock (&jobs_lock);
  old = job;
  job = j;
  if (pthread_create (&thread, NULL, job_main, j) != 0) {
    job = old;
    pthread_mutex_unlock (&jobs_lock);
    j->dest = NULL;
    free_job (j);
    undo_start (dest, snap_id, checkpoint);
    return fleece_errorf (errmsg, "cannot start the job thread");
  }
  joinable = true;
  pthread_mutex_unlock (&jobs_lock);
  free_job (old);
  last_job++;

  nbdkit_debug ("job %s: backup %s of snapshot %" PRIu64 " to %s%s%s",
                j->id, full ? "full" : "incremental", snap_id, target,
                since ? " since " : "", since ? since : "");
  jbuf_key (reply, "job");
  jbuf_string (reply, j->id);
  return 0;
}

/* The job named by id=, with jobs_lock held; NULL with *errmsg. */
static struct job *
find_locked (const struct ctl_request *req, char **errmsg)
{
  const char *id = ctl_request_get (req, "id");

  if (id == NULL) {
    fleece_errorf (errmsg, "%s needs id=JOB (the id backup-start "
                   "returned)", req->command);
    return NULL;
  }
  if (job == NULL || strcmp (job->id, id) != 0) {
    if (job)
      fleece_errorf (errmsg, "no job with id %s (the latest job is %s)",
                     id, job->id);
    else
      fleece_errorf (errmsg, "no job with id %s (no job has run)", id);
    return NULL;
  }
  return job;
}

static int
ended (const struct job *j, const char *command, char **errmsg)
{
  return fleece_errorf (errmsg, "job %s has already ended (%s); %s works "
                        "on a running job", j->id, state_names[j->state],
                        command);
}

static int
control (const struct ctl_request *req, struct jbuf *reply, char **errmsg)
{
  static const char *const id_keys[] = { "id", NULL };
  static const char *const speed_keys[] = { "id", "speed", NULL };
  const bool set_speed = strcmp (req->command, "job-set-speed") == 0;
  const char *speed_s = NULL;
  uint64_t speed = 0;
  struct job *j;
  int r = 0;

  if (ctl_request_check (req, set_speed ? speed_keys : id_keys, 0,
                         errmsg) == -1)
    return -1;
  if (set_speed) {
    speed_s = ctl_request_get (req, "speed");
    if (speed_s == NULL)
      return fleece_errorf (errmsg, "job-set-speed needs speed=RATE (bytes "
                            "per second, e.g. 50M; 0 for unlimited)");
    if (parse_speed (speed_s, &speed, errmsg) == -1)
      return -1;
  }

  pthread_mutex_lock (&jobs_lock);
  j = find_locked (req, errmsg);
  if (j == NULL)
    r = -1;
  else if (!active (j))
    r = ended (j, req->command, errmsg);
  else if (strcmp (req->command, "job-cancel") == 0)
    j->cancel = true;
  else if (strcmp (req->command, "job-pause") == 0) {
    if (j->state == JOB_PAUSED)
      r = fleece_errorf (errmsg, "job %s is already paused", j->id);
    else
      j->state = JOB_PAUSED;
  }
  else if (strcmp (req->command, "job-resume") == 0) {
    if (j->state != JOB_PAUSED)
      r = fleece_errorf (errmsg, "job %s is not paused", j->id);
    else {
      j->state = JOB_RUNNING;
      j->t_free = now_mono ();
    }
  }
  else {
    j->speed = speed;
    j->t_free = now_mono ();
  }
  if (r == 0) {
    pthread_cond_broadcast (&jobs_cond);
    jbuf_key (reply, "job");
    jbuf_string (reply, j->id);
  }
  pthread_mutex_unlock (&jobs_lock);
  return r;
}

static const char *const start_keys[] = {
  "target", "sync", "since", "checkpoint", "speed", "target-zeroed", NULL
};
static const char *const id_keys[] = { "id", NULL };
static const char *const speed_keys[] = { "id", "speed", NULL };

const struct fleece_command job_commands[] = {
  { "backup-start", start_keys, 0,
    "start a push backup job: target=PATH|URI [sync=full|incremental] "
    "[since=C] [checkpoint=N] [speed=RATE] [target-zeroed=true]",
    backup_start },
  { "job-cancel", id_keys, 0, "cancel backup job id=ID", control },
  { "job-pause", id_keys, 0, "pause backup job id=ID", control },
  { "job-resume", id_keys, 0, "resume backup job id=ID", control },
  { "job-set-speed", speed_keys, 0,
    "change the speed of backup job id=ID speed=RATE", control },
  { .name = NULL }
};

void
job_status (struct jbuf *reply)
{
  struct job *j;

  pthread_mutex_lock (&jobs_lock);
  j = job;
  jbuf_key (reply, "jobs");
  jbuf_raw (reply, "[");
  if (j) {
    jbuf_raw (reply, "{");
    jbuf_key (reply, "id");
    jbuf_string (reply, j->id);
    jbuf_key (reply, "type");
    jbuf_string (reply, "backup");
    jbuf_key (reply, "sync");
    jbuf_string (reply, j->full ? "full" : "incremental");
    jbuf_key (reply, "state");
    jbuf_string (reply, state_names[j->state]);
    jbuf_key (reply, "bytes_total");
    jbuf_u64 (reply, j->bytes_total);
    jbuf_key (reply, "bytes_done");
    jbuf_u64 (reply, j->bytes_done);
    jbuf_key (reply, "speed");
    jbuf_u64 (reply, j->speed);
    jbuf_key (reply, "started");
    jbuf_time (reply, j->started);
    jbuf_key (reply, "finished");
    jbuf_time (reply, j->finished);
    jbuf_key (reply, "error");
    jbuf_string (reply, j->error);
    jbuf_key (reply, "target");
    jbuf_string (reply, j->target);
    jbuf_key (reply, "since");
    jbuf_string (reply, j->since[0] ? j->since : NULL);
    jbuf_key (reply, "checkpoint");
    jbuf_string (reply, j->checkpoint[0] ? j->checkpoint : NULL);
    jbuf_key (reply, "cancel_requested");
    jbuf_bool (reply, j->cancel);
    jbuf_raw (reply, "}");
  }
  jbuf_raw (reply, "]");
  pthread_mutex_unlock (&jobs_lock);
}

void
job_stop_all (const char *why)
{
  pthread_t t;
  bool join = false;

  pthread_mutex_lock (&jobs_lock);
  shutting_down = true;
  if (job && active (job) && !job->stop) {
    job->stop = true;
    job->stop_why = strdup (why);
    nbdkit_debug ("job %s: stopping: %s", job->id, why);
    pthread_cond_broadcast (&jobs_cond);
  }
  if (joinable) {
    joinable = false;
    join = true;
    t = thread;
  }
  pthread_mutex_unlock (&jobs_lock);
  if (join)
    pthread_join (t, NULL);
}
