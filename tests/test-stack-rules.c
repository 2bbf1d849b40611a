/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * Unit tests for reading nbdkit's command line (common/cmdline.c) and
 * the supported stacks (common/stack-rules.c).
 */

#include <config.h>

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cmdline.h"
#include "stack-rules.h"
#include "unit.h"

/* The filters of argv, joined with spaces, then "|" and the plugin
 * and its arguments.
 */
static char *
parsed (int argc, char *const *argv)
{
  struct fleece_cmdline c;
  static char out[1024];
  size_t i;

  CHECK (fleece_cmdline_parse (argc, argv, &c) == 0);
  out[0] = '\0';
  for (i = 0; i < c.n; i++) {
    strcat (out, c.filters[i]);
    strcat (out, " ");
  }
  strcat (out, "|");
  if (c.plugin)
    strcat (out, c.plugin);
  for (i = 0; i < c.nparams; i++) {
    strcat (out, " ");
    strcat (out, c.params[i]);
  }
  fleece_cmdline_free (&c);
  return out;
}

/* fleece_filter_short_name (arg) is want (the name is malloc'd). */
static bool
short_name_is (const char *arg, const char *want)
{
  char *name = fleece_filter_short_name (arg);
  bool r = name != NULL && strcmp (name, want) == 0;

  free (name);
  return r;
}

#define ARGV(...) (char *[]) { "nbdkit", __VA_ARGS__, NULL }
#define N(a) ((int) (sizeof (a) / sizeof (a)[0]) - 1)

static void
test_parse (void)
{
  char **a;

  a = ARGV ("-U", "-", "--filter=a", "--filter",
            "/x/nbdkit-b-filter.so", "-fv", "file", "d.img",
            "--filter=c", "k=v");
  CHECK (strcmp (parsed (11, a), "a b c |file d.img k=v") == 0);

  /* Options with arguments swallow what looks like a filter. */
  a = ARGV ("-e", "--filter=x", "--run", "--filter=y", "-U--filter=z",
            "memory", "1M");
  CHECK (strcmp (parsed (8, a), "|memory 1M") == 0);
  /* Bundled: -fU takes the next word. */
  a = ARGV ("-fU", "--filter=x", "--filter=cow", "memory");
  CHECK (strcmp (parsed (5, a), "cow |memory") == 0);
  /* Abbreviations: --filt is --filter; --f is ambiguous (foreground). */
  a = ARGV ("--filt=cow", "--fil", "log", "--f", "memory");
  CHECK (strcmp (parsed (6, a), "cow log |memory") == 0);
  /* "--" ends the options. */
  a = ARGV ("--filter=cow", "--", "memory", "--filter=log");
  CHECK (strcmp (parsed (5, a), "cow |memory --filter=log") == 0);
  /* Names by path. */
  CHECK (short_name_is ("./x/.libs/nbdkit-cbw-filter.so", "cbw"));
  CHECK (short_name_is ("nbdkit-file-plugin.so", "file"));
}

static char *
verdict_of (const char *stack)
{
  char *copy = strdup (stack), *tok, *save = NULL;
  char *filters[16];
  size_t n = 0;
  bool present[FLEECE_NR_FILTERS] = { false };
  char *v;
  int id;

  for (tok = strtok_r (copy, " ", &save); tok;
       tok = strtok_r (NULL, " ", &save)) {
    filters[n++] = tok;
    for (id = 0; id < FLEECE_NR_FILTERS; id++)
      if (strcmp (tok, fleece_filter_name (id)) == 0)
        present[id] = true;
  }
  v = fleece_stack_verdict (filters, n, present);
  free (copy);
  return v;
}

/* The verdict on stack: accepted (needle NULL), or refused with a
 * message containing needle.
 */
static bool
verdict_is (const char *stack, const char *needle)
{
  char *v = verdict_of (stack);
  bool r = needle ? v && strstr (v, needle) : v == NULL;

  if (!r)
    fprintf (stderr, "%s: %s\n", stack, v ? v : "accepted");
  free (v);
  return r;
}

static void
test_verdict (void)
{
  static const struct { const char *stack, *refused; } cases[] = {
    { "snapshot-access cbw dirty-bitmap", NULL },
    { "snapshot-access cbw", NULL },
    { "dirty-bitmap", NULL },
    { "log snapshot-access nofilter cbw stats dirty-bitmap "
      "cow offset cache", NULL },
    { "exportname snapshot-access cbw", NULL },
    { "cache cow", NULL },      /* no project filter: nothing to check */

    { "cbw", "needs the snapshot-access filter" },
    { "cbw dirty-bitmap", "needs the snapshot-access filter" },
    { "snapshot-access", "needs the cbw filter" },
    { "cbw snapshot-access", "unsupported filter order" },
    { "snapshot-access cow cbw", "--filter=cow cannot sit between" },
    { "snapshot-access cbw offset dirty-bitmap", "moves offsets" },
    { "snapshot-access cbw cache dirty-bitmap", "cache" },
    { "snapshot-access cbw mystery dirty-bitmap", "not known" },
    { "cache snapshot-access cbw", "cannot sit above" },
    { "cow dirty-bitmap", "cannot sit above" },
    { "snapshot-access cbw exportname", "cannot sit below" },
    { "snapshot-access cbw cbw", "more than once" },
  };
  size_t i;

  for (i = 0; i < ARRAY_SIZE (cases); i++)
    CHECK (verdict_is (cases[i].stack, cases[i].refused));

  /* On the command line, but its interface cannot be found. */
  {
    char *f[] = { "snapshot-access", "cbw" };
    bool present[FLEECE_NR_FILTERS] = { [FLEECE_SNAPSHOT_ACCESS] = true };
    char *v = fleece_stack_verdict (f, 2, present);

    CHECK (v && strstr (v, "RTLD_GLOBAL"));
    free (v);
  }
}

static void
test_plugin (void)
{
  struct fleece_cmdline c;
  char *v;
  char dir[] = "/tmp/fleece-unit.XXXXXX", disk[64], other[64];
  FILE *fp;

  CHECK (mkdtemp (dir) != NULL);
  snprintf (disk, sizeof disk, "%s/disk", dir);
  snprintf (other, sizeof other, "%s/other", dir);
  fp = fopen (disk, "w");
  fclose (fp);
  fp = fopen (other, "w");
  fclose (fp);

#define PLUGIN(expect_null, ...)                                        \
  do {                                                                  \
    char *a[] = { "nbdkit", __VA_ARGS__, NULL };                        \
    CHECK (fleece_cmdline_parse (N (a), a, &c) == 0);           \
    v = fleece_plugin_verdict (&c);                                     \
    if ((v == NULL) != (expect_null))                                   \
      fprintf (stderr, "plugin verdict: %s\n", v ? v : "accepted");     \
    CHECK ((v == NULL) == (expect_null));                               \
    free (v);                                                           \
    fleece_cmdline_free (&c);                                           \
  } while (0)

  PLUGIN (true, "file", disk, "cbw-target=/tmp/none");
  PLUGIN (true, "file", disk, "cbw-target", "dummy");
  PLUGIN (false, "file", "dir=/tmp");
  PLUGIN (false, "nbd", "socket=/x", "dynamic-export=true");
  PLUGIN (true, "nbd", "socket=/x", "dynamic-export=false");
  {
    char t[80], b[80], f[80];

    snprintf (t, sizeof t, "cbw-target=%s", disk);
    snprintf (b, sizeof b, "bitmap-file=%s", other);
    snprintf (f, sizeof f, "file=%s", disk);
    PLUGIN (false, "file", disk, t);
    PLUGIN (false, "/usr/lib/nbdkit-file-plugin.so", f, t);
    PLUGIN (true, "file", disk, b);
    snprintf (t, sizeof t, "cbw-target=%s", other);
    PLUGIN (false, "memory", "1M", b, t);
  }
  unlink (disk);
  unlink (other);
  rmdir (dir);
}

int
main (void)
{
  test_parse ();
  test_verdict ();
  test_plugin ();
  UNIT_EXIT ();
}
