/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * Following something that runs in the server (a backup job, a live
 * restore) through status until it ends, with progress, and the
 * SIGINT/SIGTERM handling of the commands that wait.
 *
 * The only state shared with a signal handler is fc_interrupted.
 */

#include <config.h>

#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "fleecectl.h"

/* How long status may fail in a row before the follower gives up. */
#define LOST_AFTER_MS 10000

volatile sig_atomic_t fc_interrupted;

static void
on_signal (int sig)
{
  fc_interrupted++;
}

void
fc_catch_signals (struct fc_signals *s)
{
  struct sigaction sa;

  memset (&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset (&sa.sa_mask);
  sa.sa_flags = 0;              /* no SA_RESTART: wake a sleep */
  sigaction (SIGINT, &sa, &s->old_int);
  sigaction (SIGTERM, &sa, &s->old_term);
}

void
fc_restore_signals (const struct fc_signals *s)
{
  sigaction (SIGINT, &s->old_int, NULL);
  sigaction (SIGTERM, &s->old_term, NULL);
}

void
fc_sleep_ms (int ms)
{
  struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

  if (!fc_interrupted)
    nanosleep (&ts, NULL);      /* EINTR: the signal is in fc_interrupted */
}

int
fc_follow (struct globals *g, struct follower *f)
{
  struct fc_signals sigs;
  struct progress p;
  struct follow_view v = { 0 };
  char err[1024];
  int failures = 0, ret = EXIT_FAIL;

  fc_catch_signals (&sigs);
  progress_start (&p, g->progress, stdout, f->label);

  for (;;) {
    struct jval *r;
    enum follow_state st;

    if (fc_interrupted) {
      ret = f->interrupted (g, f, &p);
      break;
    }
    r = ctl_call (g->ctl, "status", g->timeout_ms, NULL, err, sizeof err);
    if (r == NULL || !jv_true (jv_get (r, "ok"))) {
      /* A few seconds of trouble are tolerated (a busy server). */
      if (++failures * f->interval_ms > LOST_AFTER_MS) {
        progress_break (&p);
        fc_error ("%s: lost the control socket: %s", f->what,
                  r ? "status failed" : err);
        jv_free (r);
        break;
      }
      jv_free (r);
      fc_sleep_ms (f->interval_ms);
      continue;
    }
    failures = 0;
    v.state = v.error = NULL;
    v.why[0] = '\0';

    st = f->look (f, r, &v);
    switch (st) {
    case FOLLOW_WAIT:
      break;
    case FOLLOW_RUNNING:
      progress_update (&p, v.done, v.total,
                       v.state && strcmp (v.state, "running") != 0
                       ? v.state : NULL);
      break;
    case FOLLOW_DONE:
      progress_update (&p, v.done, v.total, NULL);
      progress_end (&p, v.done, v.state);
      ret = EXIT_OK;
      break;
    case FOLLOW_FAILED:
      progress_update (&p, v.done, v.total, v.state);
      progress_end (&p, v.done, v.state);
      fc_error ("%s %s: %s", f->what, v.state,
                v.error ? v.error : "no reason given");
      break;
    case FOLLOW_LOST:
      progress_break (&p);
      fc_error ("%s", v.why);
      break;
    }
    jv_free (r);                /* v.state and v.error point into r */
    if (st != FOLLOW_WAIT && st != FOLLOW_RUNNING)
      break;
    fc_sleep_ms (f->interval_ms);
  }

  fc_restore_signals (&sigs);
  return ret;
}
