/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * The few nbdkit server functions that common/ calls, for the C unit
 * tests, which run without nbdkit.  Errors and debug messages go to
 * stderr.
 */

#include <config.h>

#include <stdarg.h>
#include <stdio.h>

#include <nbdkit-filter.h>

void
nbdkit_debug (const char *fs, ...)
{
  va_list args;

  va_start (args, fs);
  fprintf (stderr, "debug: ");
  vfprintf (stderr, fs, args);
  fprintf (stderr, "\n");
  va_end (args);
}

void
nbdkit_error (const char *fs, ...)
{
  va_list args;

  va_start (args, fs);
  fprintf (stderr, "error: ");
  vfprintf (stderr, fs, args);
  fprintf (stderr, "\n");
  va_end (args);
}
