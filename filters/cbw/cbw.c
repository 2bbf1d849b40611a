/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * The cbw (copy-before-write) filter: registration, start-up and the
 * interface the other project filters use (fleece_cbw_v1).
 */

#include <config.h>

#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <nbdkit-filter.h>

#include "cbw.h"
#include "ctl-owner.h"
#include "fleece-api.h"
#include "json.h"
#include "params.h"

/* -D cbw.copy=1: log every cluster copy. */
NBDKIT_DLL_PUBLIC int cbw_debug_copy = 0;

/* Start-up state, written by nbdkit's single-threaded start-up. */
static unsigned load_count;
static bool config_started;

static void
cbw_load (void)
{
  load_count++;
}

static void
cbw_unload (void)
{
  fleece_control_cleanup ();
  cbw_config_free ();
}

static int
cbw_config_cb (nbdkit_next_config *next, nbdkit_backend *nxdata,
            const char *key, const char *value)
{
  int r = cbw_config_key (key, value);

  if (r != 0)
    return r == 1 ? 0 : -1;
  return fleece_config_other (next, nxdata, key, value);
}

static int
cbw_config_complete (nbdkit_next_config_complete *next,
                     nbdkit_backend *nxdata)
{
  config_started = true;
  if (fleece_config_complete_common (FLEECE_CBW, load_count) == -1 ||
      cbw_config_check () == -1)
    return -1;
  nbdkit_debug ("cbw: target: %s %s, cluster size %" PRIu32
                ", on error %s, timeout %" PRIu64 " s",
                cbw_target_kind_name (cbw_config.target_kind),
                cbw_config.target ? cbw_config.target : "in $TMPDIR",
                cbw_config.cluster_size,
                cbw_on_error_name (cbw_config.on_error), cbw_config.timeout);
  return next (nxdata);
}

static int
cbw_get_ready (int thread_model)
{
  return fleece_control_get_ready ();
}

static int
cbw_after_fork (nbdkit_backend *backend)
{
  return fleece_control_after_fork ();
}

static void
cbw_cleanup (nbdkit_backend *backend)
{
  fleece_control_cleanup ();
}

/* Interface for the other project filters. */

static bool
api_config_started (void)
{
  return config_started;
}

static void
api_status (struct jbuf *reply)
{
  jbuf_key (reply, "snapshot");
  jbuf_raw (reply, "{\"active\":false,\"started\":null,"
            "\"clusters_copied\":0,\"target_bytes\":0,"
            "\"released_bytes\":0,\"broken\":null");
  jbuf_key (reply, "cluster_size");
  jbuf_u64 (reply, cbw_config.cluster_size);
  jbuf_key (reply, "target_kind");
  jbuf_string (reply, cbw_target_kind_name (cbw_config.target_kind));
  jbuf_key (reply, "on_error");
  jbuf_string (reply, cbw_on_error_name (cbw_config.on_error));
  jbuf_raw (reply, "}");
}

NBDKIT_DLL_PUBLIC const struct fleece_filter_api fleece_cbw_v1 = {
  .size = sizeof (struct fleece_filter_api),
  .id = FLEECE_CBW,
  .name = "cbw",
  .config_started = api_config_started,
  .status = api_status,
  .command = NULL,
};

static struct nbdkit_filter filter = {
  .name              = "cbw",
  .longname          = "nbdkit copy-before-write filter",
  .load              = cbw_load,
  .unload            = cbw_unload,
  .config            = cbw_config_cb,
  .config_complete   = cbw_config_complete,
  .config_help       = CBW_CONFIG_HELP,
  .get_ready         = cbw_get_ready,
  .after_fork        = cbw_after_fork,
  .cleanup           = cbw_cleanup,
};

NBDKIT_REGISTER_FILTER (filter)
