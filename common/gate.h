/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * A "gate": a reader-writer lock that guest requests hold for reading
 * while they run and that state changes (snapshot begin/end, new
 * checkpoints) hold for writing.  Writers are preferred, so a state
 * change waits only for the requests already in flight, and new ones
 * queue behind it.  A reader must never take the gate twice (a waiting
 * writer would deadlock it).
 */

#ifndef FLEECE_GATE_H
#define FLEECE_GATE_H

#include <errno.h>
#include <pthread.h>
#include <time.h>

/* Longest a state change waits for the requests in flight before it
 * gives up with ETIMEDOUT, so a hung disk or target never hangs the
 * control socket.
 */
#define FLEECE_GATE_WAIT_SECONDS 30

static inline void
fleece_gate_init (pthread_rwlock_t *gate)
{
  pthread_rwlockattr_t attr;

  pthread_rwlockattr_init (&attr);
  pthread_rwlockattr_setkind_np (&attr,
                                 PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
  pthread_rwlock_init (gate, &attr);
  pthread_rwlockattr_destroy (&attr);
}

/* Take the gate for writing, waiting at most seconds.  0, or an errno
 * (ETIMEDOUT) with the gate not taken.
 */
static inline int
fleece_gate_wrlock (pthread_rwlock_t *gate, unsigned seconds)
{
  struct timespec ts;

  clock_gettime (CLOCK_REALTIME, &ts);
  ts.tv_sec += seconds;
  return pthread_rwlock_timedwrlock (gate, &ts);
}

#endif /* FLEECE_GATE_H */
