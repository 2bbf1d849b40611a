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
 * Several jobs may run at once (JOB_MAX_RUNNING), each with its own
 * named snapshot, thread and workers.
 *
 * jobs_lock (mutex) with jobs_cond.  Protects the list jobs[] (njobs),
 * every field of each job marked "lock" below (thread and joinable
 * too), and shutting_down.  Held only for short updates, never across
 * I/O.  Waiters on jobs_cond: paused workers, workers sleeping for the
 * speed limit (timed), nothing else.
 *
 * A job stays in the list after it ended until the next backup-start,
 * which removes ended jobs only after joining their threads; a job's
 * thread and workers use the fields marked "fixed" without the lock.
 * The control thread serialises commands, so two backup-starts never
 * race; job_stop_all (from .cleanup) may run concurrently with a
 * command, so joining goes through joinable (whoever clears it, under
 * the lock, joins).
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

#include "bitset.h"
#include "errors.h"
#include "fleece-api.h"
#include "job-dest.h"
#include "job.h"
#include "job-int.h"
#include "json.h"
#include "size.h"

const char *const state_names[] = {
  "running", "paused", "completed", "failed", "cancelled",
};

pthread_mutex_t jobs_lock = PTHREAD_MUTEX_INITIALIZER;
pthread_cond_t jobs_cond = PTHREAD_COND_INITIALIZER;
struct job *jobs[JOB_MAX];       /* (lock) oldest first */
size_t njobs;                   /* (lock) */
bool shutting_down;      /* job_stop_all ran (lock) */
uint64_t last_job;       /* control thread only */

/* Start-up state, written before any job. */
nbdkit_backend *below;
int nworkers = MAX_WORKERS;

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

bool
active (const struct job *j)
{
  return j->state == JOB_RUNNING || j->state == JOB_PAUSED;
}

void
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
void
set_error_locked (struct job *j, char *msg)
{
  if (j->error == NULL)
    j->error = msg ? msg : strdup ("out of memory");
  else
    free (msg);
  pthread_cond_broadcast (&jobs_cond);
}

void
set_error (struct job *j, char *msg)
{
  pthread_mutex_lock (&jobs_lock);
  set_error_locked (j, msg);
  pthread_mutex_unlock (&jobs_lock);
}

/* Should the workers stop taking pieces? */
bool
stopping_locked (const struct job *j)
{
  return j->cancel || j->stop || j->error;
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
    left = due - fleece_now_mono ();
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
      double now = fleece_now_mono ();

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
  j->t_free = fleece_now_mono ();
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

void *
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

