/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * Command-line options (opts.c).  Every subcommand parses its options
 * with fc_options from a table of its own options; the global ones
 * (-c, --json, --timeout, --progress, -q) are accepted by every
 * subcommand as well, so "fleecectl status -c CTL --json" works as
 * well as "fleecectl -c CTL --json status".  A subcommand option of
 * the same name as a global one replaces it for that subcommand
 * (group-snapshot's --timeout).
 */

#ifndef FLEECECTL_OPTS_H
#define FLEECECTL_OPTS_H

#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>

#include "fleecectl.h"

/* Parse arg, the value of --name (NULL for an option without a value),
 * into dest.  Returns 0, or -1 after reporting a usage error.
 */
typedef int fc_opt_set (const char *name, const char *arg, void *dest);

/* One option of a subcommand.  A table ends with a NULL name. */
struct fc_opt {
  const char *name;             /* the long name, without "--" */
  int has_arg;                  /* no_argument or required_argument */
  fc_opt_set *set;              /* NULL: a flag, *(bool *) dest = true */
  void *dest;
  char short_name;              /* also accepted as -X, or 0 */
};

/* Table entries: an option with a value parsed by set into dest; a
 * flag setting the bool *dest; the end of a table.
 */
#define FC_VALUE(name, set, dest) { name, required_argument, set, dest, 0 }
#define FC_FLAG(name, dest)       { name, no_argument, NULL, dest, 0 }
#define FC_END                    { NULL, 0, NULL, NULL, 0 }

/* Parse the options of cmd (NULL: the options before the subcommand)
 * from argv, starting at argv[1]; afterwards argv[optind] is the first
 * operand.  Returns 0, or -1 after reporting a usage error.
 */
extern int fc_options (struct globals *g, const char *cmd, int argc,
                       char **argv, const struct fc_opt *opts);

/* Value parsers for struct fc_opt. */
/* The text as it is (const char **dest). */
extern fc_opt_set fc_opt_text;
/* A size such as 64K or 50M; the text is kept (const char **dest). */
extern fc_opt_set fc_opt_size_text;
/* A polling interval, 10 to 60000 milliseconds (int *dest). */
extern fc_opt_set fc_opt_interval;

/* A whole number from min to max; else a usage error "--NAME=ARG:
 * expected EXPECTED".  Returns 0 or -1.
 */
extern int fc_parse_uint (const char *name, const char *arg, uint64_t min,
                          uint64_t max, const char *expected, uint64_t *out);
/* Parse a size ("64K", "50M", plain bytes); usage error message on
 * failure naming --name.  Returns 0 or -1.
 */
extern int fc_parse_size (const char *name, const char *str, uint64_t *out);

/* Checks after the options are parsed: true if val is NULL or a valid
 * name (checkpoint or snapshot), else false after a usage error.
 */
extern bool fc_since_ok (const char *since);
extern bool fc_name_ok (const char *name, const char *val, const char *kind);
/* True if -c CTL was given, else false after a usage error. */
extern bool fc_have_ctl (const struct globals *g, const char *cmd);

#endif /* FLEECECTL_OPTS_H */
