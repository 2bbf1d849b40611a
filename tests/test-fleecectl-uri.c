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
  size_t s, l;
  char *p, *cwd;

  CHECK (fc_is_nbd_uri ("nbd+unix:///snapshot?socket=/s"));
  CHECK (fc_is_nbd_uri ("nbd://host:10809/snapshot"));
  CHECK (fc_is_nbd_uri ("nbds+unix:///x?socket=/s"));
  CHECK (fc_is_nbd_uri ("nbd+vsock://3/x"));
  CHECK (!fc_is_nbd_uri ("/var/backup.img"));
  CHECK (!fc_is_nbd_uri ("nbd.img"));
  CHECK (!fc_is_nbd_uri ("http://x/y"));

  CHECK (fc_uri_export ("nbd+unix:///snapshot?socket=/s", &s, &l) &&
         l == 8 && strncmp ("nbd+unix:///snapshot?socket=/s" + s,
                            "snapshot", 8) == 0);
  CHECK (fc_uri_export ("nbd+unix://?socket=/s", &s, &l) && l == 0);
  CHECK (fc_uri_export ("nbd+unix:///?socket=/s", &s, &l) && l == 0);
  CHECK (fc_uri_export ("nbd://h/snapshot/since/c1", &s, &l) && l == 17);
  CHECK (!fc_uri_export ("file.img", &s, &l));

  CHECK (since_is ("nbd+unix:///snapshot?socket=/tmp/s.sock", "c1",
                   "nbd+unix:///snapshot/since/c1?socket=/tmp/s.sock"));
  CHECK (since_is ("nbd://host:10809/snapshot", "c2",
                   "nbd://host:10809/snapshot/since/c2"));
  CHECK (since_is ("nbd://host/snapshot@n1#frag", "c2",
                   "nbd://host/snapshot@n1/since/c2#frag"));
  CHECK (since_is ("nbds+unix:///snap?socket=/s&tls-psk-file=/k", "c3",
                   "nbds+unix:///snap/since/c3?socket=/s&tls-psk-file=/k"));
  /* No export name (the live disk), a delta view already, not a URI. */
  CHECK (since_is ("nbd+unix:///?socket=/s", "c1", NULL));
  CHECK (since_is ("nbd+unix://?socket=/s", "c1", NULL));
  CHECK (since_is ("nbd+unix:///snapshot/since/c0?socket=/s", "c1", NULL));
  CHECK (since_is ("/tmp/x", "c1", NULL));

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
