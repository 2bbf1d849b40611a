/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * The filters on nbdkit's command line, in stack order (top first).
 * See cmdline.c.
 */

#ifndef FLEECE_CMDLINE_H
#define FLEECE_CMDLINE_H

#include <stddef.h>

struct fleece_cmdline {
  size_t n;
  char **filters;               /* n short names, NULL-terminated */
  const char *plugin;           /* the plugin's name or path, or NULL */
  size_t nparams;
  const char **params;          /* its KEY=VALUE and bare arguments */
  char *buf;                    /* storage behind plugin and params */
};

/* Read argv as nbdkit does and collect every --filter, as its short
 * name ("cow" for --filter=/path/nbdkit-cow-filter.so), the plugin
 * and its arguments (pointing into argv).  Returns 0, or -1 with errno
 * (out of memory).
 */
extern int fleece_cmdline_parse (int argc, char *const *argv,
                                 struct fleece_cmdline *c);
/* The same for this process (/proc/self/cmdline). */
extern int fleece_cmdline_self (struct fleece_cmdline *c);
extern void fleece_cmdline_free (struct fleece_cmdline *c);

/* A filter's short name from a --filter argument; malloc'd. */
extern char *fleece_filter_short_name (const char *arg);

#endif /* FLEECE_CMDLINE_H */
