/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * Parsing and checking of the filters' parameters, and which filter
 * owns a parameter (the filters' own predicates, fleece_filter_rows).
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

#include "params.h"
#include "size.h"

int
fleece_config_once (const char *key, bool *seen)
{
  if (*seen) {
    nbdkit_error ("%s: given twice; give it once", key);
    return -1;
  }
  *seen = true;
  return 0;
}

int
fleece_config_string (const char *key, const char *value,
                      int (*check) (const char *key, const char *value),
                      char **out)
{
  if (*out) {
    nbdkit_error ("%s: given twice; give it once", key);
    return -1;
  }
  if (check && check (key, value) == -1)
    return -1;
  *out = strdup (value);
  if (*out == NULL) {
    nbdkit_error ("%s: strdup: %m", key);
    return -1;
  }
  return 0;
}

int
fleece_config_unknown (enum fleece_filter_id id, const char *key,
                       const char *known)
{
  if (!fleece_filter_row (id)->owns_param (key))
    return 0;
  nbdkit_error ("%s: unknown %s parameter; the %s filter takes %s",
                key, fleece_filter_name (id), fleece_filter_name (id), known);
  return -1;
}

bool
fleece_is_nbd_uri (const char *value)
{
  static const char *const schemes[] = {
    "nbd://", "nbds://", "nbd+unix://", "nbds+unix://",
    "nbd+vsock://", "nbds+vsock://", NULL
  };
  size_t i;

  for (i = 0; schemes[i]; i++)
    if (strncmp (value, schemes[i], strlen (schemes[i])) == 0)
      return true;
  return false;
}

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
fleece_config_choice (const char *key, const char *value,
                      const char *const names[], const char *help, int *out)
{
  int i;

  for (i = 0; names[i]; i++)
    if (strcmp (value, names[i]) == 0) {
      *out = i;
      return 0;
    }
  nbdkit_error ("%s=%s: %s", key, value, help);
  return -1;
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
fleece_config_size (const char *key, const char *value, const char *example,
                    uint64_t *out)
{
  const char *why;

  if (fleece_parse_size (value, out, &why) == -1) {
    nbdkit_error ("%s=%s: %s; expected a size such as %s",
                  key, value, why, example);
    return -1;
  }
  return 0;
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

void
fleece_config_free (char **out)
{
  free (*out);
  *out = NULL;
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
fleece_check_own_file (const char *key, const char *path)
{
  struct stat st;

  if (stat (path, &st) == 0 && !S_ISREG (st.st_mode)) {
    nbdkit_error ("%s=%s: exists and is not a regular file", key, path);
    return -1;
  }
  return fleece_check_parent_dir (key, path);
}

int
fleece_param_owner (const char *key)
{
  size_t i;

  for (i = 0; i < FLEECE_NR_FILTERS; i++) {
    if (fleece_filter_rows[i].owns_param (key))
      return fleece_filter_rows[i].id;
  }
  return -1;
}
