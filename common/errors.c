/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * Error messages for control replies.
 */

#include <config.h>

#include <stdarg.h>
#include <stdio.h>

#include "errors.h"

int
fleece_errorf (char **errmsg, const char *fmt, ...)
{
  va_list args;

  va_start (args, fmt);
  if (vasprintf (errmsg, fmt, args) == -1)
    *errmsg = NULL;
  va_end (args);
  return -1;
}
