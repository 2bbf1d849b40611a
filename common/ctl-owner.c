/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * Owns the control server for the filter that consumed control=.
 */

#include <config.h>

#include <stdlib.h>

#include <nbdkit-filter.h>

#include "control.h"
#include "ctl-owner.h"
#include "params.h"

static char *control_path;      /* set by control=, or NULL */
static struct ctl_server *server;

int
fleece_control_config (const char *key, const char *value)
{
  if (control_path) {
    nbdkit_error ("%s: given twice; one control socket serves every "
                  "filter of the stack", key);
    return -1;
  }
  return fleece_config_path (key, value, &control_path);
}

int
fleece_control_config_complete (void)
{
  if (control_path == NULL)
    return 0;
  return fleece_check_parent_dir ("control", control_path);
}

int
fleece_control_get_ready (void)
{
  char *err = NULL;

  if (control_path == NULL)
    return 0;
  server = ctl_server_new (control_path, fleece_dispatch, NULL, &err);
  if (server == NULL) {
    nbdkit_error ("control=%s: %s", control_path, err ? err : "failed");
    free (err);
    return -1;
  }
  nbdkit_debug ("control socket %s created", control_path);
  return 0;
}

int
fleece_control_after_fork (void)
{
  char *err = NULL;

  if (server == NULL)
    return 0;
  if (ctl_server_start (server, &err) == -1) {
    nbdkit_error ("control=%s: %s", control_path, err ? err : "failed");
    free (err);
    return -1;
  }
  return 0;
}

void
fleece_control_cleanup (void)
{
  if (server) {
    ctl_server_free (server);
    server = NULL;
  }
  free (control_path);
  control_path = NULL;
}
