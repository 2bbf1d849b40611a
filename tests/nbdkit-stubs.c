/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * The few nbdkit server functions that common/ calls, for programs
 * that run without nbdkit: the C unit tests, and the fuzz harnesses,
 * which build this file with -DFLEECE_QUIET_STUBS.  Errors and debug
 * messages go to stderr.
 *
 * Quiet stubs print only with FUZZ_VERBOSE=1: the control server logs
 * a debug line for every request, and printing it would flood the
 * fuzzer's output and cost most of its speed.  The message is still
 * formatted (into a buffer), so a bad format argument is still caught
 * by the sanitizers.
 */

#include <config.h>

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <nbdkit-filter.h>

static bool
quiet (void)
{
#ifdef FLEECE_QUIET_STUBS
  static int verbose = -1;

  if (verbose == -1) {
    const char *v = getenv ("FUZZ_VERBOSE");

    verbose = v && *v && strcmp (v, "0") != 0;
  }
  return !verbose;
#else
  return false;
#endif
}

static void __attribute__ ((format (printf, 2, 0)))
emit (const char *prefix, const char *fs, va_list args)
{
  char buf[1024];

  if (quiet ()) {
    vsnprintf (buf, sizeof buf, fs, args);
    return;
  }
  fputs (prefix, stderr);
  vfprintf (stderr, fs, args);
  fputc ('\n', stderr);
}

/* nbdkit_debug and nbdkit_error differ only in their prefix. */
#define STUB(name, prefix)                                              \
  void __attribute__ ((format (printf, 1, 2)))                          \
  name (const char *fs, ...)                                            \
  {                                                                     \
    va_list args;                                                       \
                                                                        \
    va_start (args, fs);                                                \
    emit (prefix, fs, args);                                            \
    va_end (args);                                                      \
  }

STUB (nbdkit_debug, "debug: ")
STUB (nbdkit_error, "error: ")

/* common/params.c (fleece_config_path) calls it. */
char *
nbdkit_absolute_path (const char *path)
{
  char cwd[4096];
  char *r;

  if (path[0] == '/')
    return strdup (path);
  if (getcwd (cwd, sizeof cwd) == NULL)
    return NULL;
  if (asprintf (&r, "%s/%s", cwd, path) == -1)
    return NULL;
  return r;
}
