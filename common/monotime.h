/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * The monotonic clock, for rate limits, deadlines and waits that must
 * not jump with the wall clock.
 */

#ifndef FLEECE_MONOTIME_H
#define FLEECE_MONOTIME_H

#include <pthread.h>
#include <time.h>

/* Seconds since an arbitrary point. */
static inline double
fleece_now_mono (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* A condition variable whose timed waits take CLOCK_MONOTONIC
 * deadlines.
 */
static inline void
fleece_cond_init_mono (pthread_cond_t *cond)
{
  pthread_condattr_t attr;

  pthread_condattr_init (&attr);
  pthread_condattr_setclock (&attr, CLOCK_MONOTONIC);
  pthread_cond_init (cond, &attr);
  pthread_condattr_destroy (&attr);
}

#endif /* FLEECE_MONOTIME_H */
