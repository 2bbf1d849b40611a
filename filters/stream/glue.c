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

#include "ctl-owner.h"
#include "errors.h"
#include "fleece-api.h"
#include "params.h"
#include "stream.h"
#include "stream-glue.h"

/* Start-up state, written by nbdkit's single-threaded start-up. */
static unsigned load_count;
static bool config_started;
static bool started;

static void
stream_load (void)
{
  load_count++;
}

static void
stream_unload (void)
{
  fleece_control_cleanup ();
  stream_free ();
  stream_config_free ();
}

static int
stream_config_cb (nbdkit_next_config *next, nbdkit_backend *nxdata,
                  const char *key, const char *value)
{
  int r = stream_config_key (key, value);

  if (r != 0)
    return r == 1 ? 0 : -1;
  return fleece_config_other (next, nxdata, key, value);
}

static int
stream_config_complete (nbdkit_next_config_complete *next,
                        nbdkit_backend *nxdata)
{
  config_started = true;
  if (fleece_config_complete_common (FLEECE_STREAM, load_count) == -1 ||
      stream_config_check () == -1)
    return -1;
  return next (nxdata);
}

static int
stream_get_ready (int thread_model)
{
  if (state_lock (stream_config.state_path) == -1)
    return -1;
  return fleece_control_get_ready ();
}

static int
stream_after_fork (nbdkit_backend *backend)
{
  if (stream_start (backend) == -1)
    return -1;
  started = true;
  return fleece_control_after_fork ();
}

static void
stream_cleanup (nbdkit_backend *backend)
{
  fleece_control_cleanup ();
  if (started)
    stream_stop ();
  started = false;
}

static bool
api_config_started (void)
{
  return config_started;
}

static void
api_status (struct jbuf *reply)
{
  if (started)
    job_status (reply);
}

static int
api_command (const struct ctl_request *req, struct jbuf *reply,
             char **errmsg)
{
  static const char *const no_keys[] = { NULL };
  static const char *const speed_keys[] = { "speed", NULL };
  const char *v, *why;
  uint64_t speed;

  if (!started)
    return fleece_errorf (errmsg, "the stream filter is not ready");
  if (strcmp (req->command, "stream-pause") == 0) {
    if (ctl_request_check (req, no_keys, 0, errmsg) == -1)
      return -1;
    return job_pause (errmsg);
  }
  if (strcmp (req->command, "stream-resume") == 0) {
    if (ctl_request_check (req, no_keys, 0, errmsg) == -1)
      return -1;
    return job_resume (errmsg);
  }
  if (strcmp (req->command, "stream-set-speed") == 0) {
    if (ctl_request_check (req, speed_keys, 0, errmsg) == -1)
      return -1;
    v = ctl_request_get (req, "speed");
    if (v == NULL)
      return fleece_errorf (errmsg, "stream-set-speed needs speed=RATE, "
                            "bytes per second like 100M, 0 for unlimited");
    if (stream_parse_rate (v, &speed, &why) == -1)
      return fleece_errorf (errmsg, "speed=%s: %s; give bytes per second "
                            "like 100M, 0 for unlimited", v, why);
    return job_set_speed (speed, errmsg);
  }
  return fleece_errorf (errmsg, "stream: unknown command '%s'",
                        req->command);
}

NBDKIT_DLL_PUBLIC const struct fleece_filter_api fleece_stream_v1 = {
  .size = sizeof (struct fleece_filter_api),
  .id = FLEECE_STREAM,
  .name = "stream",
  .config_started = api_config_started,
  .status = api_status,
  .command = api_command,
};

static struct nbdkit_filter filter = {
  .name              = "stream",
  .longname          = "nbdkit stream (live restore) filter",
  .load              = stream_load,
  .unload            = stream_unload,
  .config            = stream_config_cb,
  .config_complete   = stream_config_complete,
  .config_help       = STREAM_CONFIG_HELP,
  .get_ready         = stream_get_ready,
  .after_fork        = stream_after_fork,
  .cleanup           = stream_cleanup,
  .open              = stream_open,
  .can_cache         = stream_can_cache,
  .pread             = stream_pread,
  .pwrite            = stream_pwrite,
  .zero              = stream_zero,
  .trim              = stream_trim,
  .extents           = stream_extents,
};

NBDKIT_REGISTER_FILTER (filter)
