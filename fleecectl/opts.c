/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * Command-line options: the global ones, the one getopt loop every
 * subcommand uses (driven by its table of struct fc_opt), and the
 * value parsers and checks the subcommands share.  See opts.h.
 */

#include <config.h>

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fleecectl.h"
#include "opts.h"
#include "size.h"

enum {
  OPT_JSON = 256,
  OPT_TIMEOUT,
  OPT_PROGRESS,
  OPT_SUB = 512,                /* + index: a subcommand's option */
};

/* Most options a subcommand may have. */
#define MAX_SUB_OPTS 16

static const struct option global_opts[] = {
  { "control", required_argument, NULL, 'c' },
  { "json", no_argument, NULL, OPT_JSON },
  { "timeout", required_argument, NULL, OPT_TIMEOUT },
  { "progress", required_argument, NULL, OPT_PROGRESS },
  { "quiet", no_argument, NULL, 'q' },
};
#define N_GLOBAL_OPTS (sizeof global_opts / sizeof global_opts[0])

/* A global option seen by getopt_long.  Returns 0, -1 for a usage
 * error, 1 if c is not a global option.
 */
static int
global_option (struct globals *g, int c, const char *arg)
{
  char *end;
  double secs;

  switch (c) {
  case 'c':
    g->ctl = arg;
    return 0;
  case OPT_JSON:
    g->json = true;
    return 0;
  case 'q':
    g->progress = PROGRESS_NONE;
    return 0;
  case OPT_PROGRESS:
    if (strcmp (arg, "auto") == 0) g->progress = PROGRESS_AUTO;
    else if (strcmp (arg, "bar") == 0) g->progress = PROGRESS_BAR;
    else if (strcmp (arg, "lines") == 0) g->progress = PROGRESS_LINES;
    else if (strcmp (arg, "none") == 0) g->progress = PROGRESS_NONE;
    else {
      fc_usage_error ("--progress=%s: expected auto, bar, lines or none", arg);
      return -1;
    }
    return 0;
  case OPT_TIMEOUT:
    errno = 0;
    secs = strtod (arg, &end);
    if (errno || end == arg || *end || !(secs > 0) || secs > 86400) {
      fc_usage_error ("--timeout=%s: expected seconds, more than 0 and at "
                      "most 86400", arg);
      return -1;
    }
    g->timeout_ms = (int) (secs * 1000);
    if (g->timeout_ms == 0)
      g->timeout_ms = 1;
    return 0;
  default:
    return 1;
  }
}

/* Is name one of the table's options? */
static bool
in_table (const struct fc_opt *opts, const char *name)
{
  for (; opts->name; opts++)
    if (strcmp (opts->name, name) == 0)
      return true;
  return false;
}

int
fc_options (struct globals *g, const char *cmd, int argc, char **argv,
            const struct fc_opt *opts)
{
  struct option lo[N_GLOBAL_OPTS + MAX_SUB_OPTS + 1];
  char shorts[8 + 2 * MAX_SUB_OPTS] = "+c:q";
  size_t n = 0, i, ns = strlen (shorts);
  int c;

  /* The getopt table: the global options the subcommand does not
   * replace, then its own.
   */
  for (i = 0; i < N_GLOBAL_OPTS; i++)
    if (!in_table (opts, global_opts[i].name))
      lo[n++] = global_opts[i];
  for (i = 0; opts[i].name; i++) {
    if (i == MAX_SUB_OPTS)
      abort ();                 /* a table too long: a bug here */
    lo[n++] = (struct option) {
      opts[i].name, opts[i].has_arg, NULL,
      opts[i].short_name ? opts[i].short_name : OPT_SUB + (int) i
    };
    if (opts[i].short_name) {
      shorts[ns++] = opts[i].short_name;
      if (opts[i].has_arg == required_argument)
        shorts[ns++] = ':';
    }
  }
  lo[n] = (struct option) { NULL, 0, NULL, 0 };
  shorts[ns] = '\0';

  optind = 1;
  while ((c = getopt_long (argc, argv, shorts, lo, NULL)) != -1) {
    const struct fc_opt *o = NULL;
    int r;

    for (i = 0; opts[i].name && o == NULL; i++)
      if (c == (opts[i].short_name ? opts[i].short_name : OPT_SUB + (int) i))
        o = &opts[i];
    if (o) {
      if (o->set == NULL)
        *(bool *) o->dest = true;
      else if (o->set (o->name, optarg, o->dest) == -1)
        return -1;
      continue;
    }
    r = global_option (g, c, optarg);
    if (r == -1)
      return -1;
    if (r == 1) {
      fc_usage_error ("%s%sunknown option or missing value: %s",
                      cmd ? cmd : "", cmd ? ": " : "", argv[optind - 1]);
      return -1;
    }
  }
  return 0;
}

int
fc_opt_text (const char *name, const char *arg, void *dest)
{
  *(const char **) dest = arg;
  return 0;
}

int
fc_opt_size_text (const char *name, const char *arg, void *dest)
{
  uint64_t v;

  if (fc_parse_size (name, arg, &v) == -1)
    return -1;
  *(const char **) dest = arg;
  return 0;
}

int
fc_opt_interval (const char *name, const char *arg, void *dest)
{
  uint64_t v;

  if (fc_parse_uint (name, arg, 10, 60000, "milliseconds, 10 to 60000",
                     &v) == -1)
    return -1;
  *(int *) dest = v;
  return 0;
}

int
fc_parse_uint (const char *name, const char *arg, uint64_t min,
               uint64_t max, const char *expected, uint64_t *out)
{
  uint64_t v;

  if (fleece_parse_uint (arg, max, &v, &(const char *){ NULL }) == -1 ||
      v < min) {
    fc_usage_error ("--%s=%s: expected %s", name, arg, expected);
    return -1;
  }
  *out = v;
  return 0;
}

int
fc_parse_size (const char *name, const char *str, uint64_t *out)
{
  const char *why;

  if (fleece_parse_size (str, out, &why) == -1) {
    fc_usage_error ("--%s=%s: %s", name, str, why);
    return -1;
  }
  return 0;
}

bool
fc_since_ok (const char *since)
{
  if (since && !fleece_valid_name (since)) {
    fc_usage_error ("--since=%s: not a checkpoint name", since);
    return false;
  }
  return true;
}

bool
fc_name_ok (const char *name, const char *val, const char *kind)
{
  if (val && !fleece_valid_name (val)) {
    fc_usage_error ("--%s=%s: not a valid %s name (1-64 of A-Z a-z 0-9 _ "
                    ". -, not starting with . or -)", name, val, kind);
    return false;
  }
  return true;
}

bool
fc_have_ctl (const struct globals *g, const char *cmd)
{
  if (g->ctl == NULL) {
    fc_usage_error ("%s needs the control socket: -c CTL", cmd);
    return false;
  }
  return true;
}
