/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * Parsing and checking of the filters' parameters, and the rules that
 * route a parameter to the filter that owns it.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nbdkit-filter.h>

#include "ctl-owner.h"
#include "params.h"
#include "size.h"
#include "stack-rules.h"

int
fleece_config_cluster (const char *key, const char *value, uint32_t *out)
{
  uint64_t v;
  const char *why;

  if (fleece_parse_size (value, &v, &why) == -1) {
    nbdkit_error ("%s=%s: %s; use a power of two from 4K to 16M",
                  key, value, why);
    return -1;
  }
  if (!fleece_is_pow2 (v) ||
      v < FLEECE_MIN_CLUSTER || v > FLEECE_MAX_CLUSTER) {
    nbdkit_error ("%s=%s: must be a power of two from 4K to 16M",
                  key, value);
    return -1;
  }
  *out = v;
  return 0;
}

int
fleece_config_bool (const char *key, const char *value, bool *out)
{
  static const char *const yes[] = { "1", "true", "on", "yes", NULL };
  static const char *const no[] = { "0", "false", "off", "no", NULL };
  size_t i;

  for (i = 0; yes[i]; i++)
    if (strcasecmp (value, yes[i]) == 0) {
      *out = true;
      return 0;
    }
  for (i = 0; no[i]; i++)
    if (strcasecmp (value, no[i]) == 0) {
      *out = false;
      return 0;
    }
  nbdkit_error ("%s=%s: expected true or false", key, value);
  return -1;
}

int
fleece_config_uint (const char *key, const char *value, uint64_t max,
                    uint64_t *out)
{
  const char *why;

  if (fleece_parse_uint (value, max, out, &why) == -1) {
    nbdkit_error ("%s=%s: %s; expected a whole number from 0 to %" PRIu64,
                  key, value, why, max);
    return -1;
  }
  return 0;
}

int
fleece_config_path (const char *key, const char *value, char **out)
{
  if (*out) {
    nbdkit_error ("%s: given twice; give it once", key);
    return -1;
  }
  if (*value == '\0') {
    nbdkit_error ("%s: the path is empty", key);
    return -1;
  }
  /* nbdkit_absolute_path reports its own errors, so add ours after. */
  *out = nbdkit_absolute_path (value);
  if (*out == NULL) {
    nbdkit_error ("%s=%s: cannot make the path absolute", key, value);
    return -1;
  }
  return 0;
}

int
fleece_check_parent_dir (const char *key, const char *path)
{
  char *copy = strdup (path);
  const char *dir;
  struct stat st;
  int r = 0;

  if (copy == NULL) {
    nbdkit_error ("%s: strdup: %m", key);
    return -1;
  }
  dir = dirname (copy);
  if (stat (dir, &st) == -1) {
    nbdkit_error ("%s=%s: directory %s: %m", key, path, dir);
    r = -1;
  }
  else if (!S_ISDIR (st.st_mode)) {
    nbdkit_error ("%s=%s: %s is not a directory", key, path, dir);
    r = -1;
  }
  else if (access (dir, W_OK | X_OK) == -1) {
    nbdkit_error ("%s=%s: cannot create files in %s: %m", key, path, dir);
    r = -1;
  }
  free (copy);
  return r;
}

int
fleece_param_owner (const char *key)
{
  if (strncmp (key, "cbw-", 4) == 0)
    return FLEECE_CBW;
  if (strcmp (key, "snapshot-export") == 0 ||
      strcmp (key, "snapshot-discard") == 0)
    return FLEECE_SNAPSHOT_ACCESS;
  if (strncmp (key, "bitmap-", 7) == 0)
    return FLEECE_DIRTY_BITMAP;
  if (strncmp (key, "stream-", 7) == 0)
    return FLEECE_STREAM;
  return -1;
}

int
fleece_config_other (nbdkit_next_config *next, nbdkit_backend *nxdata,
                     const char *key, const char *value)
{
  int owner;

  if (strcmp (key, "control") == 0)
    return fleece_control_config (key, value);

  owner = fleece_param_owner (key);
  if (owner >= 0 && fleece_find (owner) == NULL) {
    nbdkit_error ("%s: this parameter belongs to the %s filter, which is "
                  "not in the stack; add --filter=%s",
                  key, fleece_filter_name (owner), fleece_filter_name (owner));
    return -1;
  }
  return next (nxdata, key, value);
}

int
fleece_config_complete_common (enum fleece_filter_id self,
                               unsigned load_count)
{
  int id;

  if (load_count > 1) {
    nbdkit_error ("--filter=%s is given more than once; one is enough",
                  fleece_filter_name (self));
    return -1;
  }
  if (fleece_check_stack () == -1)
    return -1;

  for (id = 0; id < FLEECE_NR_FILTERS; id++) {
    const struct fleece_filter_api *other = fleece_find (id);

    /* A filter whose .config_complete already started is above us:
     * that is only supported if it comes before us in the order
     * snapshot-access, cbw, dirty-bitmap, stream.
     */
    if (id == (int) self || other == NULL || !other->config_started ())
      continue;
    if (id > (int) self) {
      nbdkit_error ("unsupported filter order: --filter=%s must come "
                    "before --filter=%s (the supported order is "
                    "--filter=snapshot-access --filter=cbw "
                    "--filter=dirty-bitmap --filter=stream)",
                    fleece_filter_name (self), fleece_filter_name (id));
      return -1;
    }
  }
  return fleece_control_config_complete ();
}
