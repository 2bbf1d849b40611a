/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * fleecectl restore: follow a live restore (the stream filter's
 * background population, "stream" in status) with a progress bar
 * until every cluster is populated.  The restore runs in the server;
 * stopping fleecectl (Ctrl-C) stops only the following.
 */

#include <config.h>

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "fleecectl.h"
#include "opts.h"

static enum follow_state
look_stream (struct follower *f, const struct jval *reply,
             struct follow_view *v)
{
  const struct jval *s = jv_get (reply, "stream");

  if (s == NULL) {
    snprintf (v->why, sizeof v->why, "restore: this server has no stream "
              "filter (no \"stream\" in status)");
    return FOLLOW_LOST;
  }
  v->state = jv_str (jv_get (s, "state"));
  jv_u64 (jv_get (s, "bytes_done"), &v->done);
  jv_u64 (jv_get (s, "bytes_total"), &v->total);
  if (v->state && strcmp (v->state, "complete") == 0)
    return FOLLOW_DONE;
  return FOLLOW_RUNNING;
}

static int
stop_following (struct globals *g, struct follower *f, struct progress *p)
{
  progress_break (p);
  fc_error ("interrupted; the restore goes on in the server");
  return EXIT_FAIL;
}

int
cmd_restore (struct globals *g, int argc, char **argv)
{
  struct follower f = {
    .label = "restore", .what = "restore", .interval_ms = 500,
    .look = look_stream, .interrupted = stop_following,
  };
  const struct fc_opt opts[] = {
    FC_VALUE ("interval", fc_opt_interval, &f.interval_ms),
    FC_END
  };

  if (fc_options (g, "restore", argc, argv, opts) == -1)
    return EXIT_USAGE;
  if (argc != optind) {
    fc_usage_error ("restore takes no arguments");
    return EXIT_USAGE;
  }
  if (!fc_have_ctl (g, "restore"))
    return EXIT_USAGE;
  return fc_follow (g, &f);
}
