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

#include <pthread.h>

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

#endif /* FLEECE_GATE_H */
