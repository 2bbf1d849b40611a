/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * The monotonic clock in seconds, for rate limits and waits that must
 * not jump with the wall clock.
 */

#ifndef FLEECE_MONOTIME_H
#define FLEECE_MONOTIME_H

#include <time.h>

static inline double
fleece_now_mono (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

#endif /* FLEECE_MONOTIME_H */
