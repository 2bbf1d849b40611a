/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * Unit tests for common/bitset.c against models: a randomised
 * comparison with a naive bool array, and the atomic range functions
 * used from several threads at once.
 */

#include <config.h>

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>

#include "bitset.h"
#include "bitset-check.h"
#include "unit.h"

/* Randomised comparison with a naive model. */
#define MODEL_BITS 1000

static uint64_t rng_state = 0x9e3779b97f4a7c15;

static uint64_t
rng (void)
{
  /* xorshift64 */
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

/* The range functions the model compares, and the value each sets. */
static const struct {
  void (*fn) (struct bitset *bm, uint64_t first, uint64_t n);
  bool set;
} range_ops[] = {
  { bitset_set_range, true }, { bitset_clear_range, false },
  { bitset_set_range_atomic, true }, { bitset_clear_range_atomic, false },
};

static void
test_random (void)
{
  struct bitset bm;
  bool model[MODEL_BITS] = { false };
  unsigned char buf[(MODEL_BITS + 7) / 8];
  unsigned iter, errors = 0;
  uint64_t i;

  CHECK (bitset_init (&bm, MODEL_BITS) == 0);
  for (iter = 0; iter < 5000 && errors == 0; iter++) {
    uint64_t first = rng () % (MODEL_BITS + 10);
    uint64_t n = rng () % 200;
    uint64_t end, want, got, op;

    if (rng () % 20 == 0)
      n = UINT64_MAX - rng () % 3;
    end = first + (n < MODEL_BITS + 10 ? n : MODEL_BITS + 10);
    if (end > MODEL_BITS)
      end = MODEL_BITS;

    switch (op = rng () % 9) {
    case 0: case 1: case 2: case 3:
      range_ops[op].fn (&bm, first, n);
      for (i = first; i < end; i++) model[i] = range_ops[op].set;
      break;
    case 4:
      if (first < MODEL_BITS) {
        if (rng () & 1) {
          bitset_set (&bm, first); model[first] = true;
        }
        else {
          bitset_clear (&bm, first); model[first] = false;
        }
      }
      break;
    case 5:
      want = 0;
      for (i = first; i < end; i++) want += model[i];
      if (bitset_count_range (&bm, first, n) != want) errors++;
      if (bitset_any_in_range (&bm, first, n) != (want > 0)) errors++;
      break;
    case 6:
      for (want = first; want < MODEL_BITS && !model[want]; want++)
        ;
      if (first > MODEL_BITS) want = MODEL_BITS;
      if (bitset_next_set (&bm, first) != want) errors++;
      break;
    case 7:
      for (want = first; want < MODEL_BITS && model[want]; want++)
        ;
      if (first > MODEL_BITS) want = MODEL_BITS;
      if (bitset_next_clear (&bm, first) != want) errors++;
      break;
    case 8:
      /* Serialise and check each byte against the model. */
      bitset_serialize (&bm, buf);
      for (i = 0; i < sizeof buf; i++) {
        unsigned char b = 0;
        unsigned k;
        for (k = 0; k < 8 && 8 * i + k < MODEL_BITS; k++)
          if (model[8 * i + k]) b |= 1u << k;
        if (buf[i] != b) errors++;
      }
      break;
    }

    /* Full comparison every step keeps failures close to their cause. */
    want = 0;
    for (i = 0; i < MODEL_BITS; i++) {
      want += model[i];
      if (bitset_test (&bm, i) != model[i] ||
          bitset_test_atomic (&bm, i) != model[i])
        errors++;
    }
    got = bitset_count (&bm);
    if (got != want || !padding_clear (&bm))
      errors++;
  }
  if (errors)
    fprintf (stderr, "random test: first failure at iteration %u\n", iter - 1);
  CHECK (errors == 0);
  bitset_free (&bm);
}

/* Atomic variants from several threads.  Thread t owns the runs of
 * RUN bits starting at RUN * (t + NTHREADS * k), so every word is
 * shared by all threads but the ranges are disjoint.  Each thread
 * repeatedly sets its runs and clears them, checking after each step
 * that its own bits have the expected value: a non-atomic
 * read-modify-write in another thread would undo the change.  In the
 * last round the runs stay set, so the result must be the union.
 */
#define NTHREADS 4
#define RUN 3
#define ATOMIC_BITS (RUN * NTHREADS * 16)  /* 192: three words */
#define ROUNDS 5000

static struct bitset shared_bm;
static pthread_barrier_t barrier;
static unsigned atomic_errors;

static bool
own_bits_are (unsigned t, bool want)
{
  uint64_t i, j;

  for (i = RUN * t; i < ATOMIC_BITS; i += RUN * NTHREADS)
    for (j = i; j < i + RUN; j++)
      if (bitset_test_atomic (&shared_bm, j) != want)
        return false;
  return true;
}

static void *
atomic_worker (void *arg)
{
  unsigned t = (unsigned) (uintptr_t) arg;
  unsigned round, errors = 0;
  uint64_t i;

  pthread_barrier_wait (&barrier);
  for (round = 0; round < ROUNDS; round++) {
    for (i = RUN * t; i < ATOMIC_BITS; i += RUN * NTHREADS)
      bitset_set_range_atomic (&shared_bm, i, RUN);
    if (!own_bits_are (t, true))
      errors++;
    if (round + 1 == ROUNDS)
      break;
    for (i = RUN * t; i < ATOMIC_BITS; i += RUN * NTHREADS)
      bitset_clear_range_atomic (&shared_bm, i, RUN);
    if (!own_bits_are (t, false))
      errors++;
  }
  __atomic_fetch_add (&atomic_errors, errors, __ATOMIC_SEQ_CST);
  return NULL;
}

static void
test_atomic_threads (void)
{
  pthread_t th[NTHREADS];
  unsigned t;

  /* Two spare bits past the workers' area: one set, one clear. */
  CHECK (bitset_init (&shared_bm, ATOMIC_BITS + 2) == 0);
  bitset_set (&shared_bm, ATOMIC_BITS);
  pthread_barrier_init (&barrier, NULL, NTHREADS);
  for (t = 0; t < NTHREADS; t++)
    pthread_create (&th[t], NULL, atomic_worker, (void *) (uintptr_t) t);
  for (t = 0; t < NTHREADS; t++)
    pthread_join (th[t], NULL);
  pthread_barrier_destroy (&barrier);

  if (atomic_errors)
    fprintf (stderr, "atomic test: %u lost updates\n", atomic_errors);
  CHECK (atomic_errors == 0);
  CHECK (bitset_count (&shared_bm) == ATOMIC_BITS + 1);
  CHECK (bitset_next_clear (&shared_bm, 0) == ATOMIC_BITS + 1);
  CHECK (bitset_test (&shared_bm, ATOMIC_BITS));
  bitset_free (&shared_bm);
}

int
main (void)
{
  test_random ();
  test_atomic_threads ();
  UNIT_EXIT ();
}
