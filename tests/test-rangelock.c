/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * Unit tests for common/rangelock.c: disjoint ranges in parallel,
 * exclusive and shared conflicts, empty and overflowing ranges, FIFO
 * fairness (an exclusive waiter is not overtaken by later shared
 * requests), and a multi-threaded stress test that checks mutual
 * exclusion byte by byte.
 */

#include <config.h>

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <pthread.h>

#include "rangelock.h"
#include "unit.h"

static struct rangelock rl;

/* Wait (up to 5 s) until the lock has exactly n entries, i.e. until
 * some other thread has queued its request.
 */
static bool
wait_count (unsigned n)
{
  return WAIT_UNTIL (rangelock_count (&rl) == n, 5, 1);
}

/* A request run in its own thread.  "step" is a shared sequence
 * counter: the thread records the value it saw when it got the lock.
 */
struct req {
  pthread_t thread;
  uint64_t offset, len;
  enum rangelock_mode mode;
  bool use_trylock;
  unsigned hold_ms;             /* how long to hold before unlocking */
  bool result;                  /* for trylock */
  int acquired_at;              /* value of step when granted */
};

static int step;                /* protected by step_lock */
static pthread_mutex_t step_lock = PTHREAD_MUTEX_INITIALIZER;

static int
next_step (void)
{
  int r;

  pthread_mutex_lock (&step_lock);
  r = ++step;
  pthread_mutex_unlock (&step_lock);
  return r;
}

static void *
req_thread (void *arg)
{
  struct req *r = arg;
  struct rangelock_entry e;

  if (r->use_trylock) {
    r->result = rangelock_trylock (&rl, &e, r->offset, r->len, r->mode);
    if (!r->result)
      return NULL;
  }
  else
    rangelock_lock (&rl, &e, r->offset, r->len, r->mode);
  __atomic_store_n (&r->acquired_at, next_step (), __ATOMIC_SEQ_CST);
  if (r->hold_ms)
    unit_sleep_ms (r->hold_ms);
  rangelock_unlock (&rl, &e);
  return NULL;
}

static void
start (struct req *r, uint64_t offset, uint64_t len,
       enum rangelock_mode mode, bool use_trylock, unsigned hold_ms)
{
  r->offset = offset;
  r->len = len;
  r->mode = mode;
  r->use_trylock = use_trylock;
  r->hold_ms = hold_ms;
  r->result = false;
  r->acquired_at = 0;
  if (pthread_create (&r->thread, NULL, req_thread, r) != 0) {
    perror ("pthread_create");
    exit (EXIT_FAILURE);
  }
}

static void
test_disjoint (void)
{
  struct rangelock_entry a;
  struct req r;

  /* Main holds [0, 100) exclusively; another thread can take the
   * adjacent [100, 200) without waiting, but not [50, 150).
   */
  rangelock_lock (&rl, &a, 0, 100, RANGELOCK_EXCLUSIVE);
  CHECK (a.granted && a.start == 0 && a.end == 100);
  CHECK (rangelock_count (&rl) == 1);

  start (&r, 100, 100, RANGELOCK_EXCLUSIVE, true, 0);
  pthread_join (r.thread, NULL);
  CHECK (r.result);

  start (&r, 50, 100, RANGELOCK_EXCLUSIVE, true, 0);
  pthread_join (r.thread, NULL);
  CHECK (!r.result);
  CHECK (rangelock_count (&rl) == 1);       /* failed trylock left no entry */

  start (&r, 99, 1, RANGELOCK_SHARED, true, 0);
  pthread_join (r.thread, NULL);
  CHECK (!r.result);

  rangelock_unlock (&rl, &a);
  CHECK (rangelock_count (&rl) == 0);
}

static void
test_exclusive_blocks (void)
{
  struct rangelock_entry a;
  struct req r;
  int released_at;

  rangelock_lock (&rl, &a, 1000, 100, RANGELOCK_EXCLUSIVE);
  start (&r, 1050, 10, RANGELOCK_EXCLUSIVE, false, 0);
  CHECK (wait_count (2));                   /* r is queued ... */
  unit_sleep_ms (50);
  /* ... and still waiting. */
  CHECK (__atomic_load_n (&r.acquired_at, __ATOMIC_SEQ_CST) == 0);
  released_at = next_step ();
  rangelock_unlock (&rl, &a);
  pthread_join (r.thread, NULL);
  CHECK (r.acquired_at > released_at);
  CHECK (rangelock_count (&rl) == 0);
}

static void
test_shared (void)
{
  struct rangelock_entry a, b, c, d;

  /* Overlapping shared requests are both granted. */
  CHECK (rangelock_trylock (&rl, &a, 0, 100, RANGELOCK_SHARED));
  CHECK (rangelock_trylock (&rl, &b, 50, 100, RANGELOCK_SHARED));
  CHECK (a.granted && b.granted);
  /* An exclusive one overlapping either is not. */
  CHECK (!rangelock_trylock (&rl, &c, 120, 10, RANGELOCK_EXCLUSIVE));
  CHECK (!rangelock_trylock (&rl, &c, 0, 1, RANGELOCK_EXCLUSIVE));
  CHECK (rangelock_trylock (&rl, &c, 150, 10, RANGELOCK_EXCLUSIVE));
  CHECK (rangelock_count (&rl) == 3);
  /* Shared overlapping the exclusive holder fails. */
  CHECK (!rangelock_trylock (&rl, &d, 155, 1, RANGELOCK_SHARED));
  CHECK (rangelock_trylock (&rl, &d, 149, 1, RANGELOCK_SHARED));
  rangelock_unlock (&rl, &d);
  rangelock_unlock (&rl, &b);
  rangelock_unlock (&rl, &c);
  /* Exclusive vs shared holder. */
  CHECK (!rangelock_trylock (&rl, &c, 99, 5, RANGELOCK_EXCLUSIVE));
  CHECK (rangelock_trylock (&rl, &c, 100, 5, RANGELOCK_EXCLUSIVE));
  rangelock_unlock (&rl, &c);
  rangelock_unlock (&rl, &a);
  CHECK (rangelock_count (&rl) == 0);
}

static void
test_empty_and_overflow (void)
{
  struct rangelock_entry a, b, c;

  rangelock_lock (&rl, &a, 0, UINT64_MAX, RANGELOCK_EXCLUSIVE);
  CHECK (a.end == UINT64_MAX);
  /* len == 0 is granted even inside an exclusive range, and counted. */
  CHECK (rangelock_trylock (&rl, &b, 10, 0, RANGELOCK_EXCLUSIVE));
  rangelock_lock (&rl, &c, 20, 0, RANGELOCK_SHARED);
  CHECK (c.granted);
  CHECK (rangelock_count (&rl) == 3);
  rangelock_unlock (&rl, &b);
  rangelock_unlock (&rl, &c);
  rangelock_unlock (&rl, &a);

  /* offset + len overflows: the end is clipped, not wrapped around. */
  rangelock_lock (&rl, &a, UINT64_MAX - 10, 100, RANGELOCK_EXCLUSIVE);
  CHECK (a.start == UINT64_MAX - 10 && a.end == UINT64_MAX);
  CHECK (!rangelock_trylock (&rl, &b, UINT64_MAX - 1, 1, RANGELOCK_SHARED));
  CHECK (!rangelock_trylock (&rl, &b, UINT64_MAX - 20, 11, RANGELOCK_SHARED));
  CHECK (rangelock_trylock (&rl, &b, 0, 50, RANGELOCK_EXCLUSIVE));
  CHECK (rangelock_trylock (&rl, &c, UINT64_MAX - 20, 10, RANGELOCK_SHARED));
  rangelock_unlock (&rl, &c);
  rangelock_unlock (&rl, &b);
  rangelock_unlock (&rl, &a);
  CHECK (rangelock_count (&rl) == 0);
}

static void
test_fifo (void)
{
  struct rangelock_entry s, t;
  struct req x, y;
  int released_at;

  /* Main holds shared [0, 100).  X asks for exclusive [50, 150) and
   * must wait.
   */
  rangelock_lock (&rl, &s, 0, 100, RANGELOCK_SHARED);
  start (&x, 50, 100, RANGELOCK_EXCLUSIVE, false, 30);
  CHECK (wait_count (2));

  /* A new shared request overlapping X must not overtake it, even
   * though it is compatible with everything actually held.
   */
  CHECK (!rangelock_trylock (&rl, &t, 60, 10, RANGELOCK_SHARED));
  CHECK (!rangelock_trylock (&rl, &t, 0, 200, RANGELOCK_SHARED));
  /* One that overlaps only the shared holder is fine. */
  CHECK (rangelock_trylock (&rl, &t, 0, 50, RANGELOCK_SHARED));
  rangelock_unlock (&rl, &t);
  /* Disjoint from everything: fine too. */
  CHECK (rangelock_trylock (&rl, &t, 150, 10, RANGELOCK_EXCLUSIVE));
  rangelock_unlock (&rl, &t);

  /* Y, a blocking shared request overlapping X, queues behind X. */
  start (&y, 60, 10, RANGELOCK_SHARED, false, 0);
  CHECK (wait_count (3));
  unit_sleep_ms (50);
  CHECK (__atomic_load_n (&x.acquired_at, __ATOMIC_SEQ_CST) == 0);
  CHECK (__atomic_load_n (&y.acquired_at, __ATOMIC_SEQ_CST) == 0);

  released_at = next_step ();
  rangelock_unlock (&rl, &s);
  pthread_join (x.thread, NULL);
  pthread_join (y.thread, NULL);
  CHECK (x.acquired_at > released_at);
  CHECK (y.acquired_at > x.acquired_at);   /* granted in arrival order */
  CHECK (rangelock_count (&rl) == 0);
}

/* Stress: NT threads take random ranges of a small space.  For each
 * byte, excl_owner is the thread holding it exclusively (or 0) and
 * nshared the number of shared holders; both are updated atomically so
 * any overlap the lock lets through shows up as a violation.  data[]
 * is accessed without atomics so a thread sanitizer sees a race if
 * the lock fails.
 */
#define NT 8
#define SPACE 64
#define STRESS_ITERS 3000
#define STRESS_SECONDS 1.5

static int excl_owner[SPACE];
static int nshared[SPACE];
static int data[SPACE];
static unsigned violations;
static double stress_deadline;

static uint64_t
xorshift (uint64_t *s)
{
  *s ^= *s << 13;
  *s ^= *s >> 7;
  *s ^= *s << 17;
  return *s;
}

static void
violation (void)
{
  __atomic_fetch_add (&violations, 1, __ATOMIC_SEQ_CST);
}

static void *
stress_thread (void *arg)
{
  int me = (int) (uintptr_t) arg;
  uint64_t seed = 0x1234567887654321 * (uint64_t) me + 1;
  unsigned iter;

  for (iter = 0; iter < STRESS_ITERS; iter++) {
    struct rangelock_entry e;
    uint64_t off = xorshift (&seed) % SPACE;
    uint64_t len = 1 + xorshift (&seed) % 16;
    enum rangelock_mode mode =
      xorshift (&seed) % 3 == 0 ? RANGELOCK_EXCLUSIVE : RANGELOCK_SHARED;
    uint64_t i, end;
    int sum = 0;

    if ((iter & 63) == 0 && fleece_now_mono () > stress_deadline)
      break;
    if (off + len > SPACE)
      len = SPACE - off;
    end = off + len;

    if (xorshift (&seed) % 4 == 0) {
      if (!rangelock_trylock (&rl, &e, off, len, mode))
        continue;
    }
    else
      rangelock_lock (&rl, &e, off, len, mode);

    if (mode == RANGELOCK_EXCLUSIVE) {
      for (i = off; i < end; i++) {
        int zero = 0;
        if (!__atomic_compare_exchange_n (&excl_owner[i], &zero, me, false,
                                          __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
          violation ();
        if (__atomic_load_n (&nshared[i], __ATOMIC_SEQ_CST) != 0)
          violation ();
        data[i] = me;
      }
      sched_yield ();
      for (i = off; i < end; i++) {
        if (data[i] != me)
          violation ();
        if (__atomic_load_n (&nshared[i], __ATOMIC_SEQ_CST) != 0)
          violation ();
        if (__atomic_exchange_n (&excl_owner[i], 0, __ATOMIC_SEQ_CST) != me)
          violation ();
      }
    }
    else {
      for (i = off; i < end; i++) {
        __atomic_fetch_add (&nshared[i], 1, __ATOMIC_SEQ_CST);
        if (__atomic_load_n (&excl_owner[i], __ATOMIC_SEQ_CST) != 0)
          violation ();
        sum += data[i];
      }
      sched_yield ();
      for (i = off; i < end; i++) {
        if (__atomic_load_n (&excl_owner[i], __ATOMIC_SEQ_CST) != 0)
          violation ();
        sum -= data[i];         /* nobody may have written meanwhile */
        __atomic_fetch_sub (&nshared[i], 1, __ATOMIC_SEQ_CST);
      }
      if (sum != 0)
        violation ();
    }
    rangelock_unlock (&rl, &e);
  }
  return NULL;
}

static void
test_stress (void)
{
  pthread_t th[NT];
  int t;

  stress_deadline = fleece_now_mono () + STRESS_SECONDS;
  for (t = 0; t < NT; t++)
    pthread_create (&th[t], NULL, stress_thread, (void *) (uintptr_t) (t + 1));
  for (t = 0; t < NT; t++)
    pthread_join (th[t], NULL);
  if (violations)
    fprintf (stderr, "stress: %u violations\n", violations);
  CHECK (violations == 0);
  CHECK (rangelock_count (&rl) == 0);
}

int
main (void)
{
  rangelock_init (&rl);
  test_disjoint ();
  test_exclusive_blocks ();
  test_shared ();
  test_empty_and_overflow ();
  test_fifo ();
  test_stress ();
  rangelock_destroy (&rl);
  UNIT_EXIT ();
}
