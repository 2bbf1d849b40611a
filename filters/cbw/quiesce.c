/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * quiesce and resume: hold guest writes so that several servers can
 * take their snapshots at one consistent point.
 *
 * A guest write, zero or trim takes the snapshot gate for reading and
 * then looks at the hold (quiesce_holding); if there is one it lets go
 * of the gate and waits in quiesce_wait.  quiesce sets the hold first
 * and then takes the gate for writing once, which waits for the writes
 * that took the gate before the hold was set; every write that takes
 * the gate later sees the hold.  So while the hold lasts no write is in
 * flight and none starts; reads go on.  The hold ends at
 * resume or at its deadline, whichever comes first, even if the
 * coordinator that asked for it has gone: the waiting writers
 * themselves end it at the deadline.
 *
 * q_lock protects every variable below; held is also read without it,
 * atomically, on the write path.  Invariant: while held is true no
 * guest write holds the gate for reading except those that took it
 * before held became true, and quiesce returns only after those
 * finished.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include <nbdkit-filter.h>

#include "errors.h"
#include "gate.h"
#include "json.h"
#include "monotime.h"
#include "quiesce.h"
#include "snapshot-int.h"

#define QUIESCE_MAX_SECONDS 3600

static pthread_mutex_t q_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t q_cond;   /* CLOCK_MONOTONIC */
static bool held;
static struct timespec q_start, q_deadline;
static int64_t q_started_wall;
static uint64_t holds, expired_holds, last_hold_ms, writes_held;
static bool last_expired;

void
quiesce_init (void)
{
  fleece_cond_init_mono (&q_cond);
}

static uint64_t
ms_between (const struct timespec *a, const struct timespec *b)
{
  int64_t ms = (b->tv_sec - a->tv_sec) * 1000 +
    (b->tv_nsec - a->tv_nsec) / 1000000;

  return ms < 0 ? 0 : ms;
}

static bool
passed (const struct timespec *deadline)
{
  struct timespec now;

  clock_gettime (CLOCK_MONOTONIC, &now);
  return now.tv_sec > deadline->tv_sec ||
    (now.tv_sec == deadline->tv_sec && now.tv_nsec >= deadline->tv_nsec);
}

/* End the hold; caller holds q_lock. */
static void
set_held (bool v)
{
  __atomic_store_n (&held, v, __ATOMIC_SEQ_CST);
}

bool
quiesce_holding (void)
{
  return __atomic_load_n (&held, __ATOMIC_SEQ_CST);
}

static void
release_locked (bool expired)
{
  struct timespec now;

  clock_gettime (CLOCK_MONOTONIC, &now);
  set_held (false);
  last_hold_ms = ms_between (&q_start, &now);
  last_expired = expired;
  if (expired) {
    expired_holds++;
    nbdkit_error ("cbw: the quiesce hold ended at its timeout after %" PRIu64
                  " ms without resume; guest writes go on", last_hold_ms);
  }
  pthread_cond_broadcast (&q_cond);
}

void
quiesce_wait (void)
{
  pthread_mutex_lock (&q_lock);
  if (held)
    writes_held++;
  while (held) {
    if (passed (&q_deadline)) {
      release_locked (true);
      break;
    }
    pthread_cond_timedwait (&q_cond, &q_lock, &q_deadline);
  }
  pthread_mutex_unlock (&q_lock);
}

int
quiesce_begin (unsigned timeout, struct jbuf *reply, char **errmsg)
{
  struct timespec drained;
  int r;

  if (timeout == 0 || timeout > QUIESCE_MAX_SECONDS)
    return fleece_errorf (errmsg, "timeout=%u: expected 1 to %d seconds",
                          timeout, QUIESCE_MAX_SECONDS);
  pthread_mutex_lock (&q_lock);
  if (held && !passed (&q_deadline)) {
    pthread_mutex_unlock (&q_lock);
    return fleece_errorf (errmsg, "already quiesced; resume first");
  }
  set_held (true);
  holds++;
  clock_gettime (CLOCK_MONOTONIC, &q_start);
  q_deadline = q_start;
  q_deadline.tv_sec += timeout;
  q_started_wall = time (NULL);
  writes_held = 0;
  pthread_mutex_unlock (&q_lock);

  /* Wait for the writes already in flight (bounded by the timeout). */
  r = fleece_gate_wrlock (&snap_gate, timeout);
  if (r != 0) {
    pthread_mutex_lock (&q_lock);
    release_locked (false);
    pthread_mutex_unlock (&q_lock);
    return fleece_errorf (errmsg, "guest writes in flight did not finish "
                          "within %u s; not quiesced", timeout);
  }
  pthread_rwlock_unlock (&snap_gate);
  clock_gettime (CLOCK_MONOTONIC, &drained);
  jbuf_kv_u64 (reply, "timeout", timeout);
  jbuf_kv_u64 (reply, "drain_ms", ms_between (&q_start, &drained));
  return 0;
}

int
quiesce_end (struct jbuf *reply, char **errmsg)
{
  pthread_mutex_lock (&q_lock);
  if (held && passed (&q_deadline))
    release_locked (true);
  if (!held) {
    bool expired = last_expired;
    uint64_t ms = last_hold_ms;

    last_expired = false;       /* said once */
    pthread_mutex_unlock (&q_lock);
    if (expired)
      return fleece_errorf (errmsg, "the hold had already ended at its "
                            "timeout (after %" PRIu64 " ms), so writes went "
                            "on before resume; a group taken under it is not "
                            "consistent", ms);
    return fleece_errorf (errmsg, "not quiesced");
  }
  release_locked (false);
  jbuf_kv_u64 (reply, "held_ms", last_hold_ms);
  jbuf_kv_u64 (reply, "writes_held", writes_held);
  pthread_mutex_unlock (&q_lock);
  return 0;
}

void
quiesce_status (struct jbuf *reply)
{
  pthread_mutex_lock (&q_lock);
  if (held && passed (&q_deadline))
    release_locked (true);
  jbuf_kv_raw (reply, "quiesce", "{");
  jbuf_kv_bool (reply, "active", held);
  jbuf_kv_time (reply, "since", held ? q_started_wall : 0);
  jbuf_kv_u64 (reply, "holds", holds);
  jbuf_kv_u64 (reply, "expired", expired_holds);
  jbuf_kv_u64 (reply, "last_hold_ms", last_hold_ms);
  jbuf_raw (reply, "}");
  pthread_mutex_unlock (&q_lock);
}
