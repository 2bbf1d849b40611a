/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * Which filters nbdkit stacked, in order, from its command line.
 *
 * nbdkit gives a filter no way to see its neighbours, and the stack
 * rules (stack-rules.c) must know what sits between and above the
 * project's filters.  nbdkit takes filters only from its command line
 * (--filter=NAME, in order, top first), parsed by getopt_long with
 * argument permutation: options may follow the plugin name, "--" ends
 * them, long options may be abbreviated to any unique prefix, short
 * options may be bundled.  This file reads the same arguments the same
 * way.  It is pure (no I/O) so it can be unit-tested and fuzzed;
 * fleece_cmdline_self reads /proc/self/cmdline.
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cmdline.h"

/* nbdkit 1.32's long options (nbdkit --help, options.h) and whether
 * each takes an argument.  Options we do not know are assumed to take
 * none, which is what getopt would refuse anyway.
 */
static const struct { const char *name; bool arg; } long_opts[] = {
  { "debug", true }, { "dump-config", false }, { "dump-plugin", false },
  { "exit-with-parent", false }, { "export", true }, { "export-name", true },
  { "exportname", true }, { "filter", true }, { "foreground", false },
  { "no-fork", false }, { "group", true }, { "help", false },
  { "ip-addr", true }, { "ipaddr", true }, { "ipv4-only", false },
  { "ipv6-only", false }, { "keep-core", false }, { "log", true },
  { "mask-handshake", true }, { "new-style", false }, { "newstyle", false },
  { "no-meta-contexts", false }, { "no-mc", false },
  { "no-structured-replies", false }, { "no-sr", false },
  { "old-style", false }, { "oldstyle", false }, { "pid-file", true },
  { "pidfile", true }, { "port", true }, { "read-only", false },
  { "readonly", false }, { "run", true }, { "selinux-label", true },
  { "single", false }, { "stdin", false }, { "swap", false },
  { "threads", true }, { "time", false }, { "tls", true },
  { "tls-certificates", true }, { "tls-psk", true },
  { "tls-verify-peer", false }, { "unix", true }, { "user", true },
  { "verbose", false }, { "version", false }, { "vsock", false },
};

/* Short options that take an argument. */
static const char short_with_arg[] = "DegiPptUu";

/* The long option that name (without "--" and "=value") stands for:
 * an exact match, else the only option it abbreviates.  -1 if none or
 * ambiguous.
 */
static int
find_long (const char *name, size_t len)
{
  size_t i;
  int found = -1;

  for (i = 0; i < sizeof long_opts / sizeof long_opts[0]; i++) {
    if (strncmp (long_opts[i].name, name, len) != 0)
      continue;
    if (long_opts[i].name[len] == '\0')
      return i;                 /* exact */
    /* Abbreviations of two spellings of one option with the same
     * argument rule are not ambiguous for our purpose.
     */
    if (found >= 0 && long_opts[found].arg != long_opts[i].arg)
      return -2;
    if (found < 0 || strcmp (long_opts[i].name, "filter") == 0)
      found = i;
  }
  return found;
}

/* "nbdkit-cow-filter.so", "/x/y/nbdkit-cow-filter.so", "cow" -> "cow";
 * the same for plugins.
 */
char *
fleece_filter_short_name (const char *arg)
{
  const char *base = strrchr (arg, '/');
  size_t len;

  base = base ? base + 1 : arg;
  len = strlen (base);
  if (len > 3 && strcmp (base + len - 3, ".so") == 0)
    len -= 3;
  if (len > 7 && (strncmp (base + len - 7, "-filter", 7) == 0 ||
                  strncmp (base + len - 7, "-plugin", 7) == 0))
    len -= 7;
  if (len > 7 && strncmp (base, "nbdkit-", 7) == 0) {
    base += 7;
    len -= 7;
  }
  return strndup (base, len);
}

static int
add (struct fleece_cmdline *c, const char *arg)
{
  char **n = realloc (c->filters, (c->n + 2) * sizeof *n);

  if (n == NULL)
    return -1;
  c->filters = n;
  n[c->n] = fleece_filter_short_name (arg);
  if (n[c->n] == NULL)
    return -1;
  n[++c->n] = NULL;
  return 0;
}

int
fleece_cmdline_parse (int argc, char *const *argv, struct fleece_cmdline *c)
{
  int i;

  c->n = 0;
  c->filters = NULL;
  c->plugin = NULL;
  c->nparams = 0;
  c->params = calloc (argc + 1, sizeof *c->params);
  c->buf = NULL;
  if (c->params == NULL)
    goto nomem;
  for (i = 1; i < argc; i++) {
    const char *a = argv[i];

    if (strcmp (a, "--") == 0) {
      /* Everything after it is the plugin and its arguments. */
      for (i++; i < argc; i++) {
        if (c->plugin == NULL)
          c->plugin = argv[i];
        else
          c->params[c->nparams++] = argv[i];
      }
      break;
    }
    if (a[0] != '-' || a[1] == '\0') {
      /* The plugin name, then its arguments. */
      if (c->plugin == NULL)
        c->plugin = a;
      else
        c->params[c->nparams++] = a;
      continue;
    }
    if (a[1] == '-') {
      const char *eq = strchr (a + 2, '=');
      size_t len = eq ? (size_t) (eq - (a + 2)) : strlen (a + 2);
      int o = find_long (a + 2, len);
      const char *value;

      if (o < 0 || !long_opts[o].arg)
        continue;
      if (eq)
        value = eq + 1;
      else if (i + 1 < argc)
        value = argv[++i];
      else
        break;
      if (strcmp (long_opts[o].name, "filter") == 0 && add (c, value) == -1)
        goto nomem;
      continue;
    }
    /* Bundled short options: one that takes an argument takes the rest
     * of this word, or the next word.  No short option means --filter.
     */
    for (a++; *a; a++) {
      if (strchr (short_with_arg, *a)) {
        if (a[1] == '\0')
          i++;
        break;
      }
    }
  }
  return 0;

 nomem:
  fleece_cmdline_free (c);
  errno = ENOMEM;
  return -1;
}

void
fleece_cmdline_free (struct fleece_cmdline *c)
{
  size_t i;

  for (i = 0; i < c->n; i++)
    free (c->filters[i]);
  free (c->filters);
  free (c->params);
  free (c->buf);
  c->filters = NULL;
  c->params = NULL;
  c->buf = NULL;
  c->plugin = NULL;
  c->n = c->nparams = 0;
}

int
fleece_cmdline_self (struct fleece_cmdline *c)
{
  char *buf = NULL, **argv = NULL;
  size_t len = 0, cap = 0, i;
  int fd, argc = 0, r = -1;
  ssize_t n;

  fd = open ("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
  if (fd == -1)
    return -1;
  for (;;) {
    if (len + 4096 + 1 > cap) {
      char *b = realloc (buf, cap = len + 65536);
      if (b == NULL)
        goto out;
      buf = b;
    }
    n = read (fd, buf + len, cap - len - 1);
    if (n == -1)
      goto out;
    if (n == 0)
      break;
    len += n;
  }
  buf[len] = '\0';
  argv = calloc (len + 2, sizeof *argv);
  if (argv == NULL)
    goto out;
  for (i = 0; i < len; i += strlen (buf + i) + 1)
    argv[argc++] = buf + i;
  r = fleece_cmdline_parse (argc, argv, c);
  if (r == 0) {
    c->buf = buf;               /* plugin and params point into it */
    buf = NULL;
  }
 out:
  close (fd);
  free (argv);
  free (buf);
  return r;
}
