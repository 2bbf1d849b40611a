/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * fleecectl restore: follow a live restore (the stream filter's
 * background population, "stream" in status) with a progress bar
 * until every cluster is populated.  The restore runs in the server;
 * stopping fleecectl (Ctrl-C) stops only the following.
 */

#include <config.h>

#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fleecectl.h"
#include "opts.h"
#include "size.h"

static volatile sig_atomic_t interrupted;

static void
on_signal (int sig)
{
  interrupted = 1;
}

static const struct option restore_opts[] = {
  GLOBAL_LONG_OPTS,
  { "interval", required_argument, NULL, OPT_INTERVAL },
  { NULL, 0, NULL, 0 }
};

static int
follow_stream (struct globals *g, int interval_ms)
{
  struct progress p;
  struct timespec ts = { interval_ms / 1000, (interval_ms % 1000) * 1000000L };
  char err[1024];
  uint64_t done = 0, total = 0;
  int failures = 0;

  progress_start (&p, g->progress, stdout, "restore");
  while (!interrupted) {
    struct jval *r = ctl_call (g->ctl, "status", g->timeout_ms, NULL, err,
                               sizeof err);
    const struct jval *s;
    const char *state;

    if (r == NULL || !jv_true (jv_get (r, "ok"))) {
      jv_free (r);
      if (++failures * interval_ms > 10000) {
        if (p.drawn)
          fputc ('\n', p.fp);
        fc_error ("restore: lost the control socket: %s", err);
        return EXIT_FAIL;
      }
      nanosleep (&ts, NULL);
      continue;
    }
    failures = 0;
    s = jv_get (r, "stream");
    if (s == NULL) {
      jv_free (r);
      fc_error ("restore: this server has no stream filter (no \"stream\" "
                "in status)");
      return EXIT_FAIL;
    }
    state = jv_str (jv_get (s, "state"));
    jv_u64 (jv_get (s, "bytes_done"), &done);
    jv_u64 (jv_get (s, "bytes_total"), &total);
    if (state && strcmp (state, "complete") == 0) {
      progress_update (&p, done, total, NULL);
      progress_end (&p, done, "complete");
      jv_free (r);
      return EXIT_OK;
    }
    progress_update (&p, done, total,
                     state && strcmp (state, "running") != 0 ? state : NULL);
    jv_free (r);
    nanosleep (&ts, NULL);
  }
  if (p.drawn)
    fputc ('\n', p.fp);
  fc_error ("interrupted; the restore goes on in the server");
  return EXIT_FAIL;
}

int
cmd_restore (struct globals *g, int argc, char **argv)
{
  struct sigaction sa, old_int, old_term;
  int interval_ms = 500, c, r;
  uint64_t v;

  optind = 1;
  while ((c = getopt_long (argc, argv, "+" GLOBAL_SHORT_OPTS, restore_opts,
                           NULL)) != -1) {
    if (c == OPT_INTERVAL) {
      if (fleece_parse_uint (optarg, 60000, &v, &(const char *){ NULL })
          == -1 || v < 10) {
        fc_usage_error ("--interval=%s: expected milliseconds, 10 to 60000",
                        optarg);
        return EXIT_USAGE;
      }
      interval_ms = v;
      continue;
    }
    r = fc_global_option (g, c, optarg);
    if (r == -1)
      return EXIT_USAGE;
    if (r == 1) {
      fc_usage_error ("restore: unknown option or missing value: %s",
                      argv[optind - 1]);
      return EXIT_USAGE;
    }
  }
  if (argc != optind) {
    fc_usage_error ("restore takes no arguments");
    return EXIT_USAGE;
  }
  if (g->ctl == NULL) {
    fc_usage_error ("restore needs the control socket: -c CTL");
    return EXIT_USAGE;
  }
  memset (&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset (&sa.sa_mask);
  sigaction (SIGINT, &sa, &old_int);
  sigaction (SIGTERM, &sa, &old_term);
  r = follow_stream (g, interval_ms);
  sigaction (SIGINT, &old_int, NULL);
  sigaction (SIGTERM, &old_term, NULL);
  return r;
}
