/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * Backup jobs' shared state, for job.c (the job thread and its
 * workers), job-map.c (what a job copies) and job-cmd.c (the control
 * commands and status).  The life of a job and the lock rules are at
 * the top of job.c.
 */

#ifndef FLEECE_SA_JOB_INT_H
#define FLEECE_SA_JOB_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include <nbdkit-filter.h>

#include "fleece-api.h"
#include "job-dest.h"
#include "monotime.h"

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

extern const char *const state_names[];

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
  pthread_t thread;             /* lock: its thread */
  bool joinable;                /* lock: thread not joined yet */
};

extern pthread_mutex_t jobs_lock;
extern pthread_cond_t jobs_cond;
/* At most JOB_MAX_RUNNING jobs run at once; the list keeps ended ones
 * too, until the next backup-start.
 */
#define JOB_MAX_RUNNING 4
#define JOB_MAX 16
extern struct job *jobs[JOB_MAX];
extern size_t njobs;
extern bool shutting_down;      /* job_stop_all ran (lock) */
extern uint64_t last_job;       /* control thread only */

/* Start-up state, written before any job. */
extern nbdkit_backend *below;
extern int nworkers;

extern bool active (const struct job *j);
extern void free_job (struct job *j);
/* Record the first error of a job (takes msg). */
extern void set_error_locked (struct job *j, char *msg);
extern void set_error (struct job *j, char *msg);
/* Should the workers stop taking pieces? */
extern bool stopping_locked (const struct job *j);

/* job-map.c: fill j->runs (and bytes_total) from the snapshot. */
extern int map_full (struct job *j, const struct fleece_cbw_api *cbw,
                     bool can_extents, char **errmsg);
extern int map_incremental (struct job *j, const struct fleece_cbw_api *cbw,
                            char **errmsg);

/* The job thread. */
extern void *job_main (void *arg);

#endif /* FLEECE_SA_JOB_INT_H */
