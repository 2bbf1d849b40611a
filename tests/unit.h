/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * Minimal helpers for the C unit tests.  A test program exits 0 when
 * every check passed, 1 otherwise (automake's test protocol).  Also
 * the sleeping and waiting for another thread that the tests with
 * threads or servers need (the clock is common/monotime.h).
 */

#ifndef FLEECE_UNIT_H
#define FLEECE_UNIT_H

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "monotime.h"

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

#define ARRAY_SIZE(a) (sizeof (a) / sizeof (a)[0])

static inline void
unit_sleep_ms (unsigned ms)
{
  struct timespec ts = { ms / 1000, (long) (ms % 1000) * 1000000 };

  nanosleep (&ts, NULL);
}

/* Evaluate cond every poll_ms milliseconds until it holds or seconds
 * have passed; the value is whether it held the last time.  For
 * waiting on another thread or a server without a fixed sleep.
 */
#define WAIT_UNTIL(cond, seconds, poll_ms)                              \
  __extension__ ({                                                      \
    double unit_deadline_ = fleece_now_mono () + (seconds);                    \
    bool unit_ok_;                                                      \
    while (!(unit_ok_ = (cond)) && fleece_now_mono () < unit_deadline_)        \
      unit_sleep_ms (poll_ms);                                          \
    unit_ok_;                                                           \
  })

#endif /* FLEECE_UNIT_H */
