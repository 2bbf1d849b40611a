/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * NBD URI and path helpers for fleecectl (see uri.h).  The export
 * name is the URI's path without its leading '/' (the NBD URI
 * specification); libnbd decodes %XX escapes in it, which never
 * matter here because checkpoint names are plain words.
 */

#include <config.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fleecectl.h"
#include "uri.h"

static const char *const schemes[] = {
  "nbd://", "nbds://", "nbd+unix://", "nbds+unix://",
  "nbd+vsock://", "nbds+vsock://",
};

bool
fc_is_nbd_uri (const char *s)
{
  size_t i;

  for (i = 0; i < sizeof schemes / sizeof schemes[0]; i++)
    if (strncmp (s, schemes[i], strlen (schemes[i])) == 0)
      return true;
  return false;
}

bool
fc_uri_export (const char *uri, size_t *start, size_t *len)
{
  const char *p, *q;

  if (!fc_is_nbd_uri (uri))
    return false;
  p = strstr (uri, "://") + 3;
  p += strcspn (p, "/?#");      /* the authority */
  if (*p != '/') {
    *start = p - uri;
    *len = 0;
    return true;
  }
  p++;
  q = p + strcspn (p, "?#");
  *start = p - uri;
  *len = q - p;
  return true;
}

bool
fc_uri_is_delta (const char *uri)
{
  size_t start, len;
  char *e;
  bool r;

  if (!fc_uri_export (uri, &start, &len))
    return false;
  e = strndup (uri + start, len);
  if (e == NULL)
    return false;
  r = strstr (e, "/since/") != NULL;
  free (e);
  return r;
}

char *
fc_uri_with_since (const char *uri, const char *name, char *err,
                   size_t errlen)
{
  size_t start, len;
  char *out;

  if (!fc_uri_export (uri, &start, &len)) {
    snprintf (err, errlen, "'%s' is not an NBD URI (nbd+unix:///snapshot"
              "?socket=SOCK or nbd://HOST/snapshot)", uri);
    return NULL;
  }
  if (len == 0) {
    snprintf (err, errlen, "'%s' names no export: give the snapshot "
              "export's URI (e.g. nbd+unix:///snapshot?socket=SOCK), "
              "--since adds /since/%s to it", uri, name);
    return NULL;
  }
  if (fc_uri_is_delta (uri)) {
    snprintf (err, errlen, "'%s' is already a delta view (/since/ in the "
              "export name): give the snapshot export's URI with --since, "
              "or the delta view's URI without it", uri);
    return NULL;
  }
  if (asprintf (&out, "%.*s/since/%s%s", (int) (start + len), uri, name,
                uri + start + len) == -1) {
    snprintf (err, errlen, "out of memory");
    return NULL;
  }
  return out;
}

char *
fc_absolute_target (const char *target)
{
  char *cwd, *out;

  if (fc_is_nbd_uri (target) || target[0] == '/') {
    out = strdup (target);
    if (out == NULL)
      fc_error ("out of memory");
    return out;
  }
  cwd = getcwd (NULL, 0);
  if (cwd == NULL) {
    fc_error ("TARGET %s is relative and the current directory is "
              "unknown (%m): give an absolute path", target);
    return NULL;
  }
  while (target[0] == '.' && target[1] == '/')
    target += 2;
  if (asprintf (&out, "%s%s%s", cwd,
                cwd[strlen (cwd) - 1] == '/' ? "" : "/", target) == -1) {
    fc_error ("out of memory");
    out = NULL;
  }
  free (cwd);
  return out;
}
