/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * fleecectl backup: start a push backup job in the server
 * (backup-start, contract section 9) and follow it through status
 * until it ends.  Exit status 0 only when the job's state becomes
 * "completed"; "failed" or "cancelled" print the job's error and exit
 * 1.  SIGINT/SIGTERM send job-cancel for the job and exit 1.
 */

#include <config.h>

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fleecectl.h"
#include "opts.h"
#include "size.h"
#include "uri.h"

/* Set by the signal handler; read by the polling loop. */
static volatile sig_atomic_t interrupted;

static void
on_signal (int sig)
{
  interrupted++;
}

/* Sleep ms milliseconds, returning early on a signal. */
static void
sleep_ms (int ms)
{
  struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

  if (!interrupted)
    nanosleep (&ts, NULL);      /* EINTR: the signal is in interrupted */
}

/* The job with this id in a status reply, or NULL. */
static const struct jval *
find_job (const struct jval *reply, const char *id)
{
  const struct jval *jobs = jv_get (reply, "jobs");
  size_t i;
  char buf[128];

  for (i = 0; i < jv_len (jobs); i++) {
    const struct jval *j = jv_index (jobs, i);
    if (job_id_text (jv_get (j, "id"), buf, sizeof buf) &&
        strcmp (buf, id) == 0)
      return j;
  }
  return NULL;
}

static bool
terminal_state (const char *s)
{
  return s && (strcmp (s, "completed") == 0 || strcmp (s, "failed") == 0 ||
               strcmp (s, "cancelled") == 0);
}

/* After Ctrl-C: cancel the job, wait a little for it to say so (a
 * second signal stops waiting), exit status 1.
 */
static int
cancel_job (struct globals *g, struct progress *p, const char *id)
{
  char line[256], err[1024];
  struct jval *r;
  double until;
  int sigs = interrupted;

  if (p->drawn) {
    fputc ('\n', p->fp);
    p->drawn = false;
  }
  snprintf (line, sizeof line, "job-cancel id=%s", id);
  r = ctl_call (g->ctl, line, g->timeout_ms, NULL, err, sizeof err);
  if (r == NULL) {
    fc_error ("interrupted; could not cancel backup job %s: %s", id, err);
    return EXIT_FAIL;
  }
  if (!jv_true (jv_get (r, "ok"))) {
    const char *e = jv_str (jv_get (r, "error"));
    fc_error ("interrupted; job-cancel id=%s failed: %s", id,
              e ? e : "no reason given");
    jv_free (r);
    return EXIT_FAIL;
  }
  jv_free (r);

  /* Wait (at most 10 s) until the server reports the job ended. */
  until = now_mono () + 10;
  while (now_mono () < until && interrupted == sigs) {
    const struct jval *j;
    const char *state = NULL;

    r = ctl_call (g->ctl, "status", g->timeout_ms, NULL, err, sizeof err);
    if (r) {
      j = find_job (r, id);
      state = jv_str (jv_get (j, "state"));
      if (j == NULL || terminal_state (state)) {
        jv_free (r);
        break;
      }
      jv_free (r);
    }
    sleep_ms (100);
  }
  fc_error ("interrupted: backup job %s cancelled", id);
  return EXIT_FAIL;
}

/* Follow job id until it ends. */
static int
follow (struct globals *g, const char *id, int interval_ms)
{
  struct progress p;
  char label[160], err[1024];
  int failures = 0, ret = EXIT_FAIL;
  bool seen = false;
  double t_start = now_mono ();
  uint64_t done = 0, total = 0;
  struct sigaction sa, old_int, old_term;

  memset (&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset (&sa.sa_mask);
  sa.sa_flags = 0;              /* no SA_RESTART: wake the sleep */
  sigaction (SIGINT, &sa, &old_int);
  sigaction (SIGTERM, &sa, &old_term);

  snprintf (label, sizeof label, "backup %s", id);
  progress_start (&p, g->progress, stdout, label);

  for (;;) {
    struct jval *r;
    const struct jval *j;
    const char *state, *error;

    if (interrupted) {
      ret = cancel_job (g, &p, id);
      break;
    }
    r = ctl_call (g->ctl, "status", g->timeout_ms, NULL, err, sizeof err);
    if (r == NULL || !jv_true (jv_get (r, "ok"))) {
      /* A few seconds of trouble are tolerated (a busy server). */
      if (++failures * interval_ms > 10000) {
        if (p.drawn)
          fputc ('\n', p.fp);
        fc_error ("backup job %s: lost the control socket: %s", id,
                  r ? "status failed" : err);
        jv_free (r);
        break;
      }
      jv_free (r);
      sleep_ms (interval_ms);
      continue;
    }
    failures = 0;
    j = find_job (r, id);
    if (j == NULL) {
      if (seen || now_mono () - t_start > 10) {
        if (p.drawn)
          fputc ('\n', p.fp);
        fc_error ("backup job %s is no longer listed by the server "
                  "(another job started, or nbdkit restarted); its result "
                  "is unknown", id);
        jv_free (r);
        break;
      }
      jv_free (r);
      sleep_ms (interval_ms);
      continue;
    }
    seen = true;
    state = jv_str (jv_get (j, "state"));
    error = jv_str (jv_get (j, "error"));
    jv_u64 (jv_get (j, "bytes_done"), &done);
    jv_u64 (jv_get (j, "bytes_total"), &total);

    if (state && strcmp (state, "completed") == 0) {
      progress_update (&p, done, total, NULL);
      progress_end (&p, done, "completed");
      jv_free (r);
      ret = EXIT_OK;
      break;
    }
    if (state && (strcmp (state, "failed") == 0 ||
                  strcmp (state, "cancelled") == 0)) {
      progress_update (&p, done, total, state);
      progress_end (&p, done, state);
      fc_error ("backup job %s %s: %s", id, state,
                error ? error : "no reason given");
      jv_free (r);
      break;
    }
    progress_update (&p, done, total,
                     state && strcmp (state, "running") != 0 ? state : NULL);
    jv_free (r);
    sleep_ms (interval_ms);
  }

  sigaction (SIGINT, &old_int, NULL);
  sigaction (SIGTERM, &old_term, NULL);
  return ret;
}

static const struct option backup_opts[] = {
  GLOBAL_LONG_OPTS,
  { "since", required_argument, NULL, OPT_SINCE },
  { "checkpoint", required_argument, NULL, OPT_CHECKPOINT },
  { "speed", required_argument, NULL, OPT_SPEED },
  { "target-zeroed", no_argument, NULL, OPT_TARGET_ZEROED },
  { "interval", required_argument, NULL, OPT_INTERVAL },
  { NULL, 0, NULL, 0 }
};

int
cmd_backup (struct globals *g, int argc, char **argv)
{
  const char *since = NULL, *checkpoint = NULL, *speed = NULL;
  bool target_zeroed = false;
  int interval_ms = 200, c, r, ret;
  uint64_t v;
  char *target = NULL, *line = NULL, err[1024], id[128];
  struct jval *reply;

  optind = 1;
  while ((c = getopt_long (argc, argv, "+" GLOBAL_SHORT_OPTS, backup_opts,
                           NULL)) != -1) {
    switch (c) {
    case OPT_SINCE: since = optarg; break;
    case OPT_CHECKPOINT: checkpoint = optarg; break;
    case OPT_SPEED:
      if (fc_parse_size ("--speed", optarg, &v) == -1)
        return EXIT_USAGE;
      speed = optarg;
      break;
    case OPT_TARGET_ZEROED: target_zeroed = true; break;
    case OPT_INTERVAL:
      if (fleece_parse_uint (optarg, 60000, &v, &(const char *){ NULL })
          == -1 || v < 10) {
        fc_usage_error ("--interval=%s: expected milliseconds, 10 to 60000",
                        optarg);
        return EXIT_USAGE;
      }
      interval_ms = v;
      break;
    default:
      r = fc_global_option (g, c, optarg);
      if (r == -1)
        return EXIT_USAGE;
      if (r == 1) {
        fc_usage_error ("backup: unknown option or missing value: %s", argv[optind - 1]);
        return EXIT_USAGE;
      }
    }
  }
  if (argc - optind != 1) {
    fc_usage_error ("backup needs exactly one TARGET (a file path or an "
                    "NBD URI)");
    return EXIT_USAGE;
  }
  if (g->ctl == NULL) {
    fc_usage_error ("backup needs the control socket: -c CTL");
    return EXIT_USAGE;
  }
  if (since && !fleece_valid_name (since)) {
    fc_usage_error ("--since=%s: not a checkpoint name", since);
    return EXIT_USAGE;
  }
  if (checkpoint && !fleece_valid_name (checkpoint)) {
    fc_usage_error ("--checkpoint=%s: not a valid checkpoint name (1-64 of "
                    "A-Z a-z 0-9 _ . -, not starting with . or -)",
                    checkpoint);
    return EXIT_USAGE;
  }

  /* The server's working directory is not ours: absolute paths only. */
  target = fc_absolute_target (argv[optind]);
  if (target == NULL)
    return EXIT_FAIL;
  if (!ctl_word_ok (target)) {
    fc_usage_error ("TARGET '%s': the control line cannot carry spaces or "
                    "control characters; use another path", target);
    free (target);
    return EXIT_USAGE;
  }

  if (asprintf (&line, "backup-start target=%s sync=%s%s%s%s%s%s%s%s",
                target, since ? "incremental" : "full",
                since ? " since=" : "", since ? since : "",
                checkpoint ? " checkpoint=" : "",
                checkpoint ? checkpoint : "",
                speed ? " speed=" : "", speed ? speed : "",
                target_zeroed ? " target-zeroed=true" : "") == -1) {
    fc_error ("out of memory");
    free (target);
    return EXIT_FAIL;
  }

  reply = ctl_call (g->ctl, line, g->timeout_ms, NULL, err, sizeof err);
  if (reply == NULL) {
    fc_error ("%s", err);
    ret = EXIT_FAIL;
    goto out;
  }
  if (!jv_true (jv_get (reply, "ok"))) {
    const char *e = jv_str (jv_get (reply, "error"));
    fc_error ("backup-start: %s", e ? e : "the server answered ok:false");
    ret = EXIT_FAIL;
    goto out;
  }
  if (!job_id_text (jv_get (reply, "job"), id, sizeof id) ||
      !ctl_word_ok (id)) {
    fc_error ("backup-start: the reply has no usable \"job\" id");
    ret = EXIT_FAIL;
    goto out;
  }
  ret = follow (g, id, interval_ms);

 out:
  jv_free (reply);
  free (line);
  free (target);
  return ret;
}
