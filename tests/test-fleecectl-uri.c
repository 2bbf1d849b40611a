/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * Unit test for fleecectl/uri.c: which strings are NBD URIs, where
 * the export name is, deriving the delta view's URI from the snapshot
 * export's (--since), and making TARGET paths absolute.
 */

#include <config.h>

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fleecectl.h"
#include "uri.h"
#include "unit.h"

/* uri.c reports errors through main.c's fc_error. */
void
fc_error (const char *fmt, ...)
{
  va_list ap;

  va_start (ap, fmt);
  vfprintf (stderr, fmt, ap);
  va_end (ap);
  fputc ('\n', stderr);
}

static bool
since_is (const char *uri, const char *name, const char *want)
{
  char err[512];
  char *got = fc_uri_with_since (uri, name, err, sizeof err);
  bool ok;

  if (want == NULL) {
    ok = got == NULL && err[0] != '\0';
    if (!ok)
      fprintf (stderr, "%s: expected an error, got %s\n", uri, got);
  }
  else {
    ok = got != NULL && strcmp (got, want) == 0;
    if (!ok)
      fprintf (stderr, "%s: got %s, expected %s (%s)\n", uri,
               got ? got : "NULL", want, got ? "" : err);
  }
  free (got);
  return ok;
}

int
main (void)
{
  static const struct { const char *uri; bool nbd; } uris[] = {
    { "nbd+unix:///snapshot?socket=/s", true },
    { "nbd://host:10809/snapshot", true },
    { "nbds+unix:///x?socket=/s", true },
    { "nbd+vsock://3/x", true },
    { "/var/backup.img", false },
    { "nbd.img", false },
    { "http://x/y", false },
  };
  static const struct { const char *uri, *name, *want; } since[] = {
    { "nbd+unix:///snapshot?socket=/tmp/s.sock", "c1",
      "nbd+unix:///snapshot/since/c1?socket=/tmp/s.sock" },
    { "nbd://host:10809/snapshot", "c2",
      "nbd://host:10809/snapshot/since/c2" },
    { "nbd://host/snapshot@n1#frag", "c2",
      "nbd://host/snapshot@n1/since/c2#frag" },
    { "nbds+unix:///snap?socket=/s&tls-psk-file=/k", "c3",
      "nbds+unix:///snap/since/c3?socket=/s&tls-psk-file=/k" },
    /* No export name (the live disk), a delta view already, not a URI. */
    { "nbd+unix:///?socket=/s", "c1", NULL },
    { "nbd+unix://?socket=/s", "c1", NULL },
    { "nbd+unix:///snapshot/since/c0?socket=/s", "c1", NULL },
    { "/tmp/x", "c1", NULL },
  };
  size_t s, l, i;
  char *p, *cwd;

  for (i = 0; i < ARRAY_SIZE (uris); i++)
    CHECK (fc_is_nbd_uri (uris[i].uri) == uris[i].nbd);

  CHECK (fc_uri_export ("nbd+unix:///snapshot?socket=/s", &s, &l) &&
         l == 8 && strncmp ("nbd+unix:///snapshot?socket=/s" + s,
                            "snapshot", 8) == 0);
  CHECK (fc_uri_export ("nbd+unix://?socket=/s", &s, &l) && l == 0);
  CHECK (fc_uri_export ("nbd+unix:///?socket=/s", &s, &l) && l == 0);
  CHECK (fc_uri_export ("nbd://h/snapshot/since/c1", &s, &l) && l == 17);
  CHECK (!fc_uri_export ("file.img", &s, &l));

  for (i = 0; i < ARRAY_SIZE (since); i++)
    CHECK (since_is (since[i].uri, since[i].name, since[i].want));

  CHECK (fc_uri_is_delta ("nbd+unix:///snapshot/since/c1?socket=/s"));
  CHECK (!fc_uri_is_delta ("nbd+unix:///snapshot?socket=/since/x"));
  CHECK (!fc_uri_is_delta ("nbd+unix:///snapshot?socket=/s"));

  p = fc_absolute_target ("/abs/path.img");
  CHECK (p && strcmp (p, "/abs/path.img") == 0);
  free (p);
  p = fc_absolute_target ("nbd+unix:///?socket=rel.sock");
  CHECK (p && strcmp (p, "nbd+unix:///?socket=rel.sock") == 0);
  free (p);
  cwd = getcwd (NULL, 0);
  p = fc_absolute_target ("./sub/b.img");
  CHECK (p && cwd && strncmp (p, cwd, strlen (cwd)) == 0 &&
         strcmp (p + strlen (cwd), "/sub/b.img") == 0);
  free (p);
  free (cwd);

  UNIT_EXIT ();
}
