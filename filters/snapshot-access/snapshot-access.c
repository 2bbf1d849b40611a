/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * The snapshot-access filter: registration, start-up, and routing of
 * export names to the live disk or the snapshot views.
 */

#include <config.h>

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <nbdkit-filter.h>

#include "ctl-owner.h"
#include "debug-flag.h"
#include "fleece-api.h"
#include "json.h"
#include "params.h"
#include "snapshot-access.h"

/* -D snapshot-access.verbose=1: log every snapshot request. */
int sa_debug_verbose = 0;
FLEECE_DEBUG_ALIAS (sa_debug_verbose, "snapshot-access_debug_verbose");

/* Start-up state, written by nbdkit's single-threaded start-up. */
static unsigned load_count;
static bool config_started;

static void
sa_load (void)
{
  load_count++;
}

static void
sa_unload (void)
{
  fleece_control_cleanup ();
  sa_config_free ();
}

static int
sa_config_cb (nbdkit_next_config *next, nbdkit_backend *nxdata,
              const char *key, const char *value)
{
  int r = sa_config_key (key, value);

  if (r != 0)
    return r == 1 ? 0 : -1;
  return fleece_config_other (next, nxdata, key, value);
}

static int
sa_config_complete (nbdkit_next_config_complete *next,
                    nbdkit_backend *nxdata)
{
  config_started = true;
  if (fleece_config_complete_common (FLEECE_SNAPSHOT_ACCESS,
                                     load_count) == -1 ||
      sa_config_check () == -1)
    return -1;
  return next (nxdata);
}

static int
sa_get_ready (int thread_model)
{
  return fleece_control_get_ready ();
}

static int
sa_after_fork (nbdkit_backend *backend)
{
  return fleece_control_after_fork ();
}

static void
sa_cleanup (nbdkit_backend *backend)
{
  fleece_control_cleanup ();
}

static void *
sa_open (nbdkit_next_open *next, nbdkit_context *nxdata,
         int readonly, const char *exportname, int is_tls)
{
  const char *checkpoint = NULL;

  switch (sa_classify (exportname, &checkpoint)) {
  case SA_VIEW_LIVE:
    break;
  case SA_VIEW_SNAPSHOT:
  case SA_VIEW_DELTA:
    nbdkit_error ("export %s: no snapshot is active; start one with "
                  "'snapshot-begin' on the control socket", exportname);
    errno = ENOENT;
    return NULL;
  }
  if (next (nxdata, readonly, exportname) == -1)
    return NULL;
  return NBDKIT_HANDLE_NOT_NEEDED;
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
  jbuf_key (reply, "snapshot_export");
  jbuf_string (reply, sa_config.export_name);
}

NBDKIT_DLL_PUBLIC const struct fleece_filter_api fleece_snapshot_access_v1 = {
  .size = sizeof (struct fleece_filter_api),
  .id = FLEECE_SNAPSHOT_ACCESS,
  .name = "snapshot-access",
  .config_started = api_config_started,
  .status = api_status,
  .command = NULL,
};

static struct nbdkit_filter filter = {
  .name              = "snapshot-access",
  .longname          = "nbdkit snapshot access filter",
  .load              = sa_load,
  .unload            = sa_unload,
  .config            = sa_config_cb,
  .config_complete   = sa_config_complete,
  .config_help       = SA_CONFIG_HELP,
  .get_ready         = sa_get_ready,
  .after_fork        = sa_after_fork,
  .cleanup           = sa_cleanup,
  .open              = sa_open,
};

NBDKIT_REGISTER_FILTER (filter)
