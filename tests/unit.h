/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * Minimal helpers for the C unit tests.  A test program exits 0 when
 * every check passed, 1 otherwise (automake's test protocol).
 */

#ifndef FLEECE_UNIT_H
#define FLEECE_UNIT_H

#include <stdio.h>
#include <stdlib.h>

static unsigned unit_failures;

#define CHECK(cond)                                                     \
  do {                                                                  \
    if (!(cond)) {                                                      \
      fprintf (stderr, "%s:%d: check failed: %s\n",                     \
               __FILE__, __LINE__, #cond);                              \
      unit_failures++;                                                  \
    }                                                                   \
  } while (0)

#define UNIT_EXIT()                                                     \
  do {                                                                  \
    if (unit_failures) {                                                \
      fprintf (stderr, "%u check(s) failed\n", unit_failures);          \
      exit (EXIT_FAILURE);                                              \
    }                                                                   \
    exit (EXIT_SUCCESS);                                                \
  } while (0)

#endif /* FLEECE_UNIT_H */
