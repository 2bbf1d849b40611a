/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * The stream filter's glue: nbdkit registration, start-up, the
 * control commands it owns (stream-pause, stream-resume,
 * stream-set-speed) and its "stream" status member, and the interface
 * symbol fleece_stream_v1 (common/fleece-api.h).  Kept apart from the
 * filter's logic so it can move to the shared glue in one step.
 */

#include <config.h>

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <nbdkit-filter.h>

#include "control.h"
#include "errors.h"
#include "fleece-api.h"
#include "glue.h"
#include "json.h"
#include "stream.h"
#include "stream-glue.h"

/* Set once the filter started (after_fork): commands and status need
 * it.  Written only by nbdkit's single-threaded start-up and shutdown.
 */
static bool started;

static void
stream_unload (void)
{
  stream_free ();
  stream_config_free ();
}

static int
stream_get_ready (void)
{
  return state_lock (stream_config.state_path);
}

static int
stream_after_fork (nbdkit_backend *backend)
{
  if (stream_start (backend) == -1)
    return -1;
  started = true;
  return 0;
}

static void
stream_cleanup (void)
{
  if (started)
    stream_stop ();
  started = false;
}

static struct fleece_glue glue = {
  .id = FLEECE_STREAM,
  .unload = stream_unload,
  .config = stream_config_key,
  .config_check = stream_config_check,
  .get_ready = stream_get_ready,
  .after_fork = stream_after_fork,
  .cleanup = stream_cleanup,
};
FLEECE_GLUE_CALLBACKS (glue)
FLEECE_WRITE_CALLBACKS (stream, stream_write)

static void
api_status (struct jbuf *reply)
{
  if (started)
    job_status (reply);
}

static int
do_pause (const struct ctl_request *req, struct jbuf *reply, char **errmsg)
{
  if (!started)
    return fleece_errorf (errmsg, "the stream filter is not ready");
  return job_pause (errmsg);
}

static int
do_resume (const struct ctl_request *req, struct jbuf *reply, char **errmsg)
{
  if (!started)
    return fleece_errorf (errmsg, "the stream filter is not ready");
  return job_resume (errmsg);
}

static int
do_set_speed (const struct ctl_request *req, struct jbuf *reply,
              char **errmsg)
{
  const char *v = ctl_request_get (req, "speed"), *why;
  uint64_t speed;

  if (!started)
    return fleece_errorf (errmsg, "the stream filter is not ready");
  if (v == NULL)
    return fleece_errorf (errmsg, "stream-set-speed needs speed=RATE, "
                          "bytes per second like 100M, 0 for unlimited");
  if (stream_parse_rate (v, &speed, &why) == -1)
    return fleece_errorf (errmsg, "speed=%s: %s; give bytes per second "
                          "like 100M, 0 for unlimited", v, why);
  return job_set_speed (speed, errmsg);
}

static const char *const speed_keys[] = { "speed", NULL };
static const struct fleece_command commands[] = {
  { "stream-pause", NULL, 0, "pause the background population", do_pause },
  { "stream-resume", NULL, 0, "resume the background population",
    do_resume },
  { "stream-set-speed", speed_keys, 0,
    "change the population speed speed=RATE (0: unlimited)", do_set_speed },
  { .name = NULL }
};

NBDKIT_DLL_PUBLIC const struct fleece_filter_api fleece_stream_v1 =
  FLEECE_GLUE_API (struct fleece_filter_api, FLEECE_STREAM, "stream",
                   api_status, commands);

static struct nbdkit_filter filter = {
  .name              = "stream",
  .longname          = "nbdkit stream (live restore) filter",
  FLEECE_GLUE_FILTER_FIELDS,
  .config_help       = STREAM_CONFIG_HELP,
  .open              = stream_open,
  .can_cache         = stream_can_cache,
  .pread             = stream_pread,
  .pwrite            = stream_pwrite,
  .zero              = stream_zero,
  .trim              = stream_trim,
  .flush             = stream_flush,
  .extents           = stream_extents,
};

NBDKIT_REGISTER_FILTER (filter)
