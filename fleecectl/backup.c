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

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fleecectl.h"
#include "opts.h"
#include "uri.h"

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

/* The job followed. */
struct backup_follow {
  char id[128];
  bool seen;                    /* listed by a status reply */
  double t_start;               /* when following began */
};

/* After Ctrl-C: cancel the job, wait a little for it to say so (a
 * second signal stops waiting), exit status 1.
 */
static int
cancel_job (struct globals *g, struct follower *f, struct progress *p)
{
  const char *id = ((struct backup_follow *) f->opaque)->id;
  char line[256], err[1024];
  struct jval *r;
  double until;
  int sigs = fc_interrupted;

  progress_break (p);
  snprintf (line, sizeof line, "job-cancel id=%s", id);
  r = ctl_call (g->ctl, line, g->timeout_ms, NULL, err, sizeof err);
  if (r == NULL) {
    fc_error ("interrupted; could not cancel backup job %s: %s", id, err);
    return EXIT_FAIL;
  }
  if (!jv_true (jv_get (r, "ok"))) {
    fc_error ("interrupted; job-cancel id=%s failed: %s", id,
              fc_reply_error (r, "no reason given"));
    jv_free (r);
    return EXIT_FAIL;
  }
  jv_free (r);

  /* Wait (at most 10 s) until the server reports the job ended. */
  until = fleece_now_mono () + 10;
  while (fleece_now_mono () < until && fc_interrupted == sigs) {
    const struct jval *j;

    r = ctl_call (g->ctl, "status", g->timeout_ms, NULL, err, sizeof err);
    if (r) {
      j = find_job (r, id);
      if (j == NULL || terminal_state (jv_str (jv_get (j, "state")))) {
        jv_free (r);
        break;
      }
      jv_free (r);
    }
    fc_sleep_ms (100);
  }
  fc_error ("interrupted: backup job %s cancelled", id);
  return EXIT_FAIL;
}

static enum follow_state
look_job (struct follower *f, const struct jval *reply, struct follow_view *v)
{
  struct backup_follow *b = f->opaque;
  const struct jval *j = find_job (reply, b->id);

  if (j == NULL) {
    if (b->seen || fleece_now_mono () - b->t_start > 10) {
      snprintf (v->why, sizeof v->why, "backup job %s is no longer listed "
                "by the server (another job started, or nbdkit restarted); "
                "its result is unknown", b->id);
      return FOLLOW_LOST;
    }
    return FOLLOW_WAIT;
  }
  b->seen = true;
  v->state = jv_str (jv_get (j, "state"));
  v->error = jv_str (jv_get (j, "error"));
  jv_u64 (jv_get (j, "bytes_done"), &v->done);
  jv_u64 (jv_get (j, "bytes_total"), &v->total);
  if (v->state && strcmp (v->state, "completed") == 0)
    return FOLLOW_DONE;
  if (terminal_state (v->state))
    return FOLLOW_FAILED;
  return FOLLOW_RUNNING;
}

int
cmd_backup (struct globals *g, int argc, char **argv)
{
  const char *since = NULL, *checkpoint = NULL, *speed = NULL;
  bool target_zeroed = false;
  int interval_ms = 200, ret;
  const struct fc_opt opts[] = {
    FC_VALUE ("since", fc_opt_text, &since),
    FC_VALUE ("checkpoint", fc_opt_text, &checkpoint),
    FC_VALUE ("speed", fc_opt_size_text, &speed),
    FC_FLAG ("target-zeroed", &target_zeroed),
    FC_VALUE ("interval", fc_opt_interval, &interval_ms),
    FC_END
  };
  char *target = NULL, *line = NULL, err[1024], label[160], what[160];
  struct backup_follow b = { .seen = false };
  struct follower f = {
    .label = label, .what = what, .look = look_job,
    .interrupted = cancel_job, .opaque = &b,
  };
  struct jval *reply;

  if (fc_options (g, "backup", argc, argv, opts) == -1)
    return EXIT_USAGE;
  if (argc - optind != 1) {
    fc_usage_error ("backup needs exactly one TARGET (a file path or an "
                    "NBD URI)");
    return EXIT_USAGE;
  }
  if (!fc_have_ctl (g, "backup") || !fc_since_ok (since) ||
      !fc_name_ok ("checkpoint", checkpoint, "checkpoint"))
    return EXIT_USAGE;

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

  ret = EXIT_FAIL;
  reply = ctl_call (g->ctl, line, g->timeout_ms, NULL, err, sizeof err);
  if (reply == NULL)
    fc_error ("%s", err);
  else if (!jv_true (jv_get (reply, "ok")))
    fc_error ("backup-start: %s",
              fc_reply_error (reply, "the server answered ok:false"));
  else if (!job_id_text (jv_get (reply, "job"), b.id, sizeof b.id) ||
           !ctl_word_ok (b.id))
    fc_error ("backup-start: the reply has no usable \"job\" id");
  else {
    snprintf (label, sizeof label, "backup %s", b.id);
    snprintf (what, sizeof what, "backup job %s", b.id);
    f.interval_ms = interval_ms;
    b.t_start = fleece_now_mono ();
    ret = fc_follow (g, &f);
  }

  jv_free (reply);
  free (line);
  free (target);
  return ret;
}
