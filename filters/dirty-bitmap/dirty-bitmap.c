/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * The dirty-bitmap filter: registration, start-up and the interface
 * the other project filters use (fleece_dirty_bitmap_v1).
 */

#include <config.h>

#include <stdbool.h>

#include <nbdkit-filter.h>

#include "ctl-owner.h"
#include "debug-flag.h"
#include "dirty-bitmap.h"
#include "fleece-api.h"
#include "json.h"
#include "params.h"

/* -D dirty-bitmap.verbose=1: log checkpoint changes and marking. */
int db_debug_verbose = 0;
FLEECE_DEBUG_ALIAS (db_debug_verbose, "dirty-bitmap_debug_verbose");

/* Start-up state, written by nbdkit's single-threaded start-up. */
static unsigned load_count;
static bool config_started;

static void
db_load (void)
{
  load_count++;
}

static void
db_unload (void)
{
  fleece_control_cleanup ();
  db_config_free ();
}

static int
db_config_cb (nbdkit_next_config *next, nbdkit_backend *nxdata,
              const char *key, const char *value)
{
  int r = db_config_key (key, value);

  if (r != 0)
    return r == 1 ? 0 : -1;
  return fleece_config_other (next, nxdata, key, value);
}

static int
db_config_complete (nbdkit_next_config_complete *next,
                    nbdkit_backend *nxdata)
{
  config_started = true;
  if (fleece_config_complete_common (FLEECE_DIRTY_BITMAP,
                                     load_count) == -1 ||
      db_config_check () == -1)
    return -1;
  return next (nxdata);
}

static int
db_get_ready (int thread_model)
{
  return fleece_control_get_ready ();
}

static int
db_after_fork (nbdkit_backend *backend)
{
  return fleece_control_after_fork ();
}

static void
db_cleanup (nbdkit_backend *backend)
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
  jbuf_key (reply, "checkpoints");
  jbuf_raw (reply, "[]");
  jbuf_key (reply, "bitmap_granularity");
  jbuf_u64 (reply, db_config.granularity);
}

NBDKIT_DLL_PUBLIC const struct fleece_filter_api fleece_dirty_bitmap_v1 = {
  .size = sizeof (struct fleece_filter_api),
  .id = FLEECE_DIRTY_BITMAP,
  .name = "dirty-bitmap",
  .config_started = api_config_started,
  .status = api_status,
  .command = NULL,
};

static struct nbdkit_filter filter = {
  .name              = "dirty-bitmap",
  .longname          = "nbdkit dirty bitmap (changed block tracking) filter",
  .load              = db_load,
  .unload            = db_unload,
  .config            = db_config_cb,
  .config_complete   = db_config_complete,
  .config_help       = DB_CONFIG_HELP,
  .get_ready         = db_get_ready,
  .after_fork        = db_after_fork,
  .cleanup           = db_cleanup,
};

NBDKIT_REGISTER_FILTER (filter)
