/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * The few nbdkit server functions that common/ calls, for the fuzz
 * harnesses.  Like tests/nbdkit-stubs.c, but quiet: control.c logs a
 * debug line for every request, and printing it would flood the
 * fuzzer's output and cost most of its speed.  The message is still
 * formatted (into a buffer), so a bad format argument is still caught
 * by the sanitizers.  Set FUZZ_VERBOSE=1 to print the messages.
 */

#include <config.h>

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <nbdkit-filter.h>

static int verbose = -1;

static void __attribute__ ((format (printf, 2, 0)))
emit (const char *prefix, const char *fs, va_list args)
{
  char buf[1024];

  if (verbose == -1) {
    const char *v = getenv ("FUZZ_VERBOSE");

    verbose = v && *v && strcmp (v, "0") != 0;
  }
  vsnprintf (buf, sizeof buf, fs, args);
  if (verbose)
    fprintf (stderr, "%s%s\n", prefix, buf);
}

void __attribute__ ((format (printf, 1, 2)))
nbdkit_debug (const char *fs, ...)
{
  va_list args;

  va_start (args, fs);
  emit ("debug: ", fs, args);
  va_end (args);
}

void __attribute__ ((format (printf, 1, 2)))
nbdkit_error (const char *fs, ...)
{
  va_list args;

  va_start (args, fs);
  emit ("error: ", fs, args);
  va_end (args);
}

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
