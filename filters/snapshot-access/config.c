/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * The snapshot-access filter's parameters (snapshot-export,
 * snapshot-discard) and the export names they define.
 */

#include <config.h>

#include <stdlib.h>
#include <string.h>

#include <nbdkit-filter.h>

#include "params.h"
#include "size.h"
#include "stack-rules.h"
#include "snapshot-access.h"

struct sa_config sa_config = {
  .export_name = NULL,
  .discard = false,
};

static bool discard_set;

/* An export name for the snapshot: printable ASCII without spaces,
 * not empty (that is the live disk), short enough to leave room for
 * "/since/NAME", and not itself containing "/since/".
 */
static int
check_export_name (const char *key, const char *value)
{
  size_t i, len = strlen (value);

  if (len == 0) {
    nbdkit_error ("%s: the name is empty, and the empty export name is "
                  "the live disk; choose another name", key);
    return -1;
  }
  if (len > SA_EXPORT_NAME_MAX - 128) {
    nbdkit_error ("%s: the name is longer than %d bytes",
                  key, SA_EXPORT_NAME_MAX - 128);
    return -1;
  }
  for (i = 0; i < len; i++) {
    unsigned char c = value[i];

    if (c <= ' ' || c >= 0x7f) {
      nbdkit_error ("%s: the name may only contain printable ASCII "
                    "characters other than space", key);
      return -1;
    }
  }
  if (strchr (value, '@')) {
    nbdkit_error ("%s=%s: the name may not contain \"@\", which introduces "
                  "named snapshots", key, value);
    return -1;
  }
  if (strstr (value, SA_SINCE)) {
    nbdkit_error ("%s=%s: the name may not contain \"%s\", which "
                  "introduces the delta views", key, value, SA_SINCE);
    return -1;
  }
  return 0;
}

int
sa_config_key (const char *key, const char *value)
{
  if (strcmp (key, "snapshot-export") == 0)
    return fleece_config_string (key, value, check_export_name,
                                 &sa_config.export_name) == -1 ? -1 : 1;
  if (strcmp (key, "snapshot-discard") == 0)
    return fleece_config_once (key, &discard_set) == -1 ||
      fleece_config_bool (key, value, &sa_config.discard) == -1 ? -1 : 1;
  return 0;
}

int
sa_config_check (void)
{
  if (sa_config.export_name == NULL) {
    sa_config.export_name = strdup ("snapshot");
    if (sa_config.export_name == NULL) {
      nbdkit_error ("strdup: %m");
      return -1;
    }
  }
  if (fleece_find (FLEECE_CBW) == NULL) {
    nbdkit_error ("the snapshot-access filter needs the cbw filter below "
                  "it: add --filter=cbw after --filter=snapshot-access");
    return -1;
  }
  return 0;
}

void
sa_config_free (void)
{
  fleece_config_free (&sa_config.export_name);
}

/* Names reserved for snapshots (stack-rules.c) never reach the
 * plugin: the ones this filter does not serve are refused.  The views:
 *
 *   EXPORT                     the default snapshot
 *   EXPORT/since/CKPT          its delta view
 *   EXPORT@NAME                the named snapshot NAME
 *   EXPORT@NAME/since/CKPT     its delta view
 */
enum sa_view
sa_classify (const char *name, char *snap, const char **checkpoint)
{
  size_t len = strlen (sa_config.export_name);
  const char *r = name + len;

  snap[0] = '\0';
  if (strncmp (name, sa_config.export_name, len) == 0) {
    if (*r == '@') {
      size_t n = strcspn (r + 1, "/");

      if (n > FLEECE_NAME_MAX)
        goto refused;
      memcpy (snap, r + 1, n);
      snap[n] = '\0';
      if (!fleece_valid_name (snap))
        goto refused;
      r += 1 + n;
    }
    if (*r == '\0')
      return SA_VIEW_SNAPSHOT;
    if (strncmp (r, SA_SINCE, strlen (SA_SINCE)) == 0 &&
        fleece_valid_name (r + strlen (SA_SINCE))) {
      *checkpoint = r + strlen (SA_SINCE);
      return SA_VIEW_DELTA;
    }
  }
 refused:
  if (fleece_reserved_export (name, sa_config.export_name))
    return SA_VIEW_REFUSED;
  return SA_VIEW_LIVE;
}
