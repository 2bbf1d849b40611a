/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * Backup jobs' control commands (backup-start, job-cancel, job-pause,
 * job-resume, job-set-speed), their status and stopping them at
 * shutdown.  The life of a job and the lock rules are at the top of
 * job.c.
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

/* Join the threads of the jobs that have ended and drop those jobs
 * from the list (they stay listed until the next backup-start).
 */
static void
drop_ended (void)
{
  struct job *gone[JOB_MAX];
  bool join[JOB_MAX];
  size_t i, k = 0, n = 0;

  pthread_mutex_lock (&jobs_lock);
  for (i = 0; i < njobs; i++) {
    if (active (jobs[i]))
      jobs[k++] = jobs[i];
    else {
      /* A thread job_stop_all joined already is not joined twice. */
      join[n] = jobs[i]->joinable;
      jobs[i]->joinable = false;
      gone[n++] = jobs[i];
    }
  }
  njobs = k;
  pthread_mutex_unlock (&jobs_lock);
  for (i = 0; i < n; i++) {
    if (join[i])
      pthread_join (gone[i]->thread, NULL);
    free_job (gone[i]);
  }
}

static size_t
running_locked (void)
{
  size_t i, n = 0;

  for (i = 0; i < njobs; i++)
    if (active (jobs[i]))
      n++;
  return n;
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
  struct job *j;
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
  if (running_locked () >= JOB_MAX_RUNNING) {
    pthread_mutex_unlock (&jobs_lock);
    return fleece_errorf (errmsg, "%d backup jobs are running, the most "
                          "there may be at once; wait for one or cancel it "
                          "with job-cancel", JOB_MAX_RUNNING);
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

  /* Jobs that ended leave the list; the new one joins it. */
  drop_ended ();
  pthread_mutex_lock (&jobs_lock);
  if (pthread_create (&j->thread, NULL, job_main, j) != 0) {
    pthread_mutex_unlock (&jobs_lock);
    j->dest = NULL;
    free_job (j);
    undo_start (dest, snap_id, checkpoint);
    return fleece_errorf (errmsg, "cannot start the job thread");
  }
  j->joinable = true;
  jobs[njobs++] = j;
  pthread_mutex_unlock (&jobs_lock);
  last_job++;

  nbdkit_debug ("job %s: backup %s of snapshot %" PRIu64 " to %s%s%s",
                j->id, full ? "full" : "incremental", snap_id, target,
                since ? " since " : "", since ? since : "");
  jbuf_kv_string (reply, "job", j->id);
  return 0;
}

/* The job named by id=, with jobs_lock held; NULL with *errmsg. */
static struct job *
find_locked (const struct ctl_request *req, char **errmsg)
{
  const char *id = ctl_request_get (req, "id");
  size_t i;

  if (id == NULL) {
    fleece_errorf (errmsg, "%s needs id=ID (the \"job\" of backup-start's "
                   "reply)", req->command);
    return NULL;
  }
  for (i = 0; i < njobs; i++)
    if (strcmp (jobs[i]->id, id) == 0)
      return jobs[i];
  if (njobs)
    fleece_errorf (errmsg, "no job with id %s (the latest job is %s)",
                   id, jobs[njobs - 1]->id);
  else
    fleece_errorf (errmsg, "no job with id %s (no job has run)", id);
  return NULL;
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
      j->t_free = fleece_now_mono ();
    }
  }
  else {
    j->speed = speed;
    j->t_free = fleece_now_mono ();
  }
  if (r == 0) {
    pthread_cond_broadcast (&jobs_cond);
    jbuf_kv_string (reply, "job", j->id);
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
  size_t i;

  pthread_mutex_lock (&jobs_lock);
  jbuf_kv_raw (reply, "jobs", "[");
  for (i = 0; i < njobs; i++) {
    j = jobs[i];
    jbuf_raw (reply, i ? ",{" : "{");
    jbuf_kv_string (reply, "id", j->id);
    jbuf_kv_string (reply, "type", "backup");
    jbuf_kv_string (reply, "sync", j->full ? "full" : "incremental");
    jbuf_kv_string (reply, "state", state_names[j->state]);
    jbuf_kv_u64 (reply, "bytes_total", j->bytes_total);
    jbuf_kv_u64 (reply, "bytes_done", j->bytes_done);
    jbuf_kv_u64 (reply, "speed", j->speed);
    jbuf_kv_time (reply, "started", j->started);
    jbuf_kv_time (reply, "finished", j->finished);
    jbuf_kv_string (reply, "error", j->error);
    jbuf_kv_string (reply, "target", j->target);
    jbuf_kv_name (reply, "since", j->since);
    jbuf_kv_name (reply, "checkpoint", j->checkpoint);
    jbuf_kv_bool (reply, "cancel_requested", j->cancel);
    jbuf_raw (reply, "}");
  }
  jbuf_raw (reply, "]");
  pthread_mutex_unlock (&jobs_lock);
}

void
job_stop_all (const char *why)
{
  pthread_t t[JOB_MAX];
  size_t i, n = 0;

  pthread_mutex_lock (&jobs_lock);
  shutting_down = true;
  for (i = 0; i < njobs; i++) {
    struct job *j = jobs[i];

    if (active (j) && !j->stop) {
      j->stop = true;
      j->stop_why = strdup (why);
      nbdkit_debug ("job %s: stopping: %s", j->id, why);
    }
    if (j->joinable) {
      j->joinable = false;
      t[n++] = j->thread;
    }
  }
  pthread_cond_broadcast (&jobs_cond);
  pthread_mutex_unlock (&jobs_lock);
  for (i = 0; i < n; i++)
    pthread_join (t[i], NULL);
}
