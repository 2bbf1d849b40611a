/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * Unit tests for common/bitmap.c: single bits and ranges across word
 * boundaries, clipping, searching, counting, merging, serialisation,
 * copying, a randomised comparison against a naive bool array, and
 * the atomic range functions used from several threads at once.
 */

#include <config.h>

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>

#include "bitset.h"
#include "unit.h"

/* True if exactly the bits of [first, end) are set in bm. */
static bool
only_range_set (const struct bitset *bm, uint64_t first, uint64_t end)
{
  uint64_t i;

  for (i = 0; i < bm->nbits; i++)
    if (bitset_test (bm, i) != (i >= first && i < end))
      return false;
  return true;
}

/* True if no bit past nbits is set in the last word. */
static bool
padding_clear (const struct bitset *bm)
{
  uint64_t nwords = (bm->nbits + 63) / 64;
  unsigned r = bm->nbits % 64;

  if (nwords == 0 || r == 0)
    return true;
  return (bm->words[nwords - 1] >> r) == 0;
}

static void
test_init (void)
{
  struct bitset bm = BITSET_INIT;

  CHECK (bitset_init (&bm, 0) == 0);
  CHECK (bm.nbits == 0 && bm.words == NULL);
  CHECK (bitset_count (&bm) == 0);
  CHECK (bitset_next_set (&bm, 0) == 0);
  CHECK (bitset_next_clear (&bm, 0) == 0);
  CHECK (!bitset_any_in_range (&bm, 0, UINT64_MAX));
  bitset_set_range (&bm, 0, UINT64_MAX);  /* must not crash */
  bitset_set_all (&bm);
  bitset_clear_all (&bm);
  CHECK (bitset_serialized_size (&bm) == 0);
  CHECK (bitset_deserialize (&bm, NULL, 0) == 0);
  bitset_free (&bm);

  CHECK (bitset_init (&bm, 100) == 0);
  CHECK (bm.nbits == 100);
  CHECK (bitset_count (&bm) == 0);
  CHECK (bm.words[0] == 0 && bm.words[1] == 0);
  bitset_free (&bm);
  CHECK (bm.words == NULL && bm.nbits == 0);
  bitset_free (&bm);            /* freeing twice is harmless */
}

static void
test_single_bits (void)
{
  struct bitset bm;

  CHECK (bitset_init (&bm, 130) == 0);
  bitset_set (&bm, 0);
  bitset_set (&bm, 63);
  bitset_set (&bm, 64);
  bitset_set (&bm, 129);
  CHECK (bitset_test (&bm, 0));
  CHECK (!bitset_test (&bm, 1));
  CHECK (bitset_test (&bm, 63));
  CHECK (bitset_test (&bm, 64));
  CHECK (!bitset_test (&bm, 65));
  CHECK (bitset_test (&bm, 129));
  CHECK (bm.words[0] == (UINT64_C (1) | UINT64_C (1) << 63));
  CHECK (bm.words[1] == 1);
  CHECK (bm.words[2] == 2);
  CHECK (bitset_count (&bm) == 4);
  bitset_clear (&bm, 63);
  CHECK (!bitset_test (&bm, 63));
  CHECK (bitset_test (&bm, 64));
  CHECK (bitset_count (&bm) == 3);
  bitset_free (&bm);
}

static void
test_ranges (void)
{
  struct bitset bm;

  CHECK (bitset_init (&bm, 200) == 0);

  bitset_set_range (&bm, 60, 11);           /* 60..70 */
  CHECK (only_range_set (&bm, 60, 71));
  CHECK (bitset_count (&bm) == 11);
  CHECK (bm.words[0] == UINT64_C (0xf000000000000000));
  CHECK (bm.words[1] == 0x7f);
  bitset_clear_range (&bm, 62, 4);          /* clear 62..65 */
  CHECK (bitset_test (&bm, 61) && !bitset_test (&bm, 62));
  CHECK (!bitset_test (&bm, 65) && bitset_test (&bm, 66));
  CHECK (bitset_count (&bm) == 7);
  bitset_clear_all (&bm);
  CHECK (bitset_count (&bm) == 0);

  bitset_set_range (&bm, 0, 64);            /* exactly word 0 */
  CHECK (bm.words[0] == UINT64_MAX && bm.words[1] == 0);
  CHECK (only_range_set (&bm, 0, 64));
  bitset_clear_all (&bm);

  bitset_set_range (&bm, 63, 2);            /* 63..64 */
  CHECK (bm.words[0] == UINT64_C (1) << 63 && bm.words[1] == 1);
  CHECK (only_range_set (&bm, 63, 65));
  bitset_clear_range (&bm, 64, 1);
  CHECK (only_range_set (&bm, 63, 64));
  bitset_clear_all (&bm);

  bitset_set_range (&bm, 10, 150);          /* spans three words */
  CHECK (only_range_set (&bm, 10, 160));
  bitset_clear_range (&bm, 0, 0);           /* empty: no effect */
  bitset_set_range (&bm, 5, 0);
  CHECK (only_range_set (&bm, 10, 160));
  bitset_clear_range (&bm, 64, 64);         /* exactly word 1 */
  CHECK (bm.words[1] == 0);
  CHECK (bitset_count (&bm) == 150 - 64);
  bitset_free (&bm);
}

static void
test_clipping (void)
{
  struct bitset bm;

  CHECK (bitset_init (&bm, 100) == 0);

  bitset_set_range (&bm, 90, 1000);
  CHECK (only_range_set (&bm, 90, 100));
  CHECK (padding_clear (&bm));
  bitset_clear_all (&bm);

  bitset_set_range (&bm, 50, UINT64_MAX);   /* first + n overflows */
  CHECK (only_range_set (&bm, 50, 100));
  CHECK (padding_clear (&bm));
  CHECK (bitset_count_range (&bm, 0, UINT64_MAX) == 50);
  CHECK (bitset_count_range (&bm, 99, UINT64_MAX) == 1);
  CHECK (bitset_any_in_range (&bm, 99, UINT64_MAX));
  bitset_clear_range (&bm, 60, UINT64_MAX);
  CHECK (only_range_set (&bm, 50, 60));
  bitset_clear_all (&bm);

  bitset_set_range (&bm, 100, 10);          /* entirely past the end */
  bitset_set_range (&bm, UINT64_MAX, UINT64_MAX);
  CHECK (bitset_count (&bm) == 0);
  CHECK (padding_clear (&bm));

  bitset_set_all (&bm);
  CHECK (bitset_count (&bm) == 100);
  CHECK (padding_clear (&bm));
  CHECK (bm.words[1] == (UINT64_C (1) << 36) - 1);
  bitset_clear_range (&bm, 0, UINT64_MAX);
  CHECK (bitset_count (&bm) == 0);

  bitset_set_range_atomic (&bm, 70, UINT64_MAX);
  CHECK (only_range_set (&bm, 70, 100));
  CHECK (padding_clear (&bm));
  bitset_clear_range_atomic (&bm, 80, UINT64_MAX);
  CHECK (only_range_set (&bm, 70, 80));
  bitset_free (&bm);

  /* A multiple of 64: set_all fills every word completely. */
  CHECK (bitset_init (&bm, 128) == 0);
  bitset_set_all (&bm);
  CHECK (bm.words[0] == UINT64_MAX && bm.words[1] == UINT64_MAX);
  CHECK (bitset_count (&bm) == 128);
  bitset_free (&bm);
}

static void
test_next (void)
{
  struct bitset bm;

  /* Empty map of 150 bits (not a multiple of 64). */
  CHECK (bitset_init (&bm, 150) == 0);
  CHECK (bitset_next_set (&bm, 0) == 150);
  CHECK (bitset_next_set (&bm, 149) == 150);
  CHECK (bitset_next_set (&bm, 150) == 150);
  CHECK (bitset_next_set (&bm, UINT64_MAX) == 150);
  CHECK (bitset_next_clear (&bm, 0) == 0);
  CHECK (bitset_next_clear (&bm, 149) == 149);
  CHECK (bitset_next_clear (&bm, 150) == 150);

  /* Full map: next_clear must not report a padding bit. */
  bitset_set_all (&bm);
  CHECK (bitset_next_clear (&bm, 0) == 150);
  CHECK (bitset_next_clear (&bm, 140) == 150);
  CHECK (bitset_next_clear (&bm, UINT64_MAX) == 150);
  CHECK (bitset_next_set (&bm, 0) == 0);
  CHECK (bitset_next_set (&bm, 149) == 149);

  /* Scattered bits. */
  bitset_clear_all (&bm);
  bitset_set (&bm, 5);
  bitset_set (&bm, 64);
  bitset_set (&bm, 149);
  CHECK (bitset_next_set (&bm, 0) == 5);
  CHECK (bitset_next_set (&bm, 5) == 5);
  CHECK (bitset_next_set (&bm, 6) == 64);
  CHECK (bitset_next_set (&bm, 64) == 64);
  CHECK (bitset_next_set (&bm, 65) == 149);
  CHECK (bitset_next_set (&bm, 149) == 149);

  bitset_set_all (&bm);
  bitset_clear (&bm, 3);
  bitset_clear (&bm, 127);
  bitset_clear (&bm, 128);
  CHECK (bitset_next_clear (&bm, 0) == 3);
  CHECK (bitset_next_clear (&bm, 4) == 127);
  CHECK (bitset_next_clear (&bm, 128) == 128);
  CHECK (bitset_next_clear (&bm, 129) == 150);
  bitset_free (&bm);

  /* Exactly 128 bits: last bit, searching past the last word. */
  CHECK (bitset_init (&bm, 128) == 0);
  bitset_set (&bm, 127);
  CHECK (bitset_next_set (&bm, 0) == 127);
  CHECK (bitset_next_set (&bm, 127) == 127);
  CHECK (bitset_next_clear (&bm, 127) == 128);
  CHECK (bitset_next_clear (&bm, 126) == 126);
  bitset_free (&bm);

  /* One bit. */
  CHECK (bitset_init (&bm, 1) == 0);
  CHECK (bitset_next_set (&bm, 0) == 1);
  CHECK (bitset_next_clear (&bm, 0) == 0);
  bitset_set (&bm, 0);
  CHECK (bitset_next_set (&bm, 0) == 0);
  CHECK (bitset_next_clear (&bm, 0) == 1);
  bitset_free (&bm);
}

static void
test_count_any (void)
{
  struct bitset bm;

  CHECK (bitset_init (&bm, 300) == 0);
  bitset_set_range (&bm, 60, 11);           /* 60..70 */
  bitset_set (&bm, 200);
  CHECK (bitset_count (&bm) == 12);
  CHECK (bitset_count_range (&bm, 0, 300) == 12);
  CHECK (bitset_count_range (&bm, 0, 60) == 0);
  CHECK (bitset_count_range (&bm, 0, 61) == 1);
  CHECK (bitset_count_range (&bm, 64, 3) == 3);
  CHECK (bitset_count_range (&bm, 63, 2) == 2);
  CHECK (bitset_count_range (&bm, 70, 131) == 2);
  CHECK (bitset_count_range (&bm, 70, 130) == 1);
  CHECK (bitset_count_range (&bm, 65, 0) == 0);
  CHECK (bitset_count_range (&bm, 300, 10) == 0);

  CHECK (!bitset_any_in_range (&bm, 0, 60));
  CHECK (bitset_any_in_range (&bm, 0, 61));
  CHECK (bitset_any_in_range (&bm, 70, 1));
  CHECK (!bitset_any_in_range (&bm, 71, 129));
  CHECK (bitset_any_in_range (&bm, 71, 130));
  CHECK (!bitset_any_in_range (&bm, 201, UINT64_MAX));
  CHECK (!bitset_any_in_range (&bm, 65, 0));
  CHECK (!bitset_any_in_range (&bm, 128, 64));
  bitset_free (&bm);
}

static void
test_merge_copy (void)
{
  struct bitset a, b, c, d;

  CHECK (bitset_init (&a, 130) == 0);
  CHECK (bitset_init (&b, 130) == 0);
  CHECK (bitset_init (&c, 131) == 0);
  bitset_set_range (&a, 0, 10);
  bitset_set_range (&b, 5, 60);
  bitset_set (&b, 129);
  CHECK (bitset_merge (&a, &b) == 0);
  CHECK (bitset_count (&a) == 65 + 1);
  CHECK (bitset_test (&a, 0) && bitset_test (&a, 64) && bitset_test (&a, 129));
  CHECK (!bitset_test (&a, 65));
  CHECK (bitset_count (&b) == 61);          /* src unchanged */

  errno = 0;
  CHECK (bitset_merge (&a, &c) == -1);
  CHECK (errno == EINVAL);
  CHECK (bitset_count (&a) == 66);

  /* Copy is equal, then independent in both directions. */
  CHECK (bitset_copy (&d, &a) == 0);
  CHECK (d.nbits == a.nbits && d.words != a.words);
  CHECK (memcmp (d.words, a.words, 3 * sizeof (uint64_t)) == 0);
  bitset_clear_all (&d);
  CHECK (bitset_count (&a) == 66);
  bitset_set (&a, 100);
  CHECK (!bitset_test (&d, 100));
  bitset_free (&d);

  /* Copy of an empty bitmap. */
  bitset_free (&c);
  CHECK (bitset_init (&c, 0) == 0);
  CHECK (bitset_copy (&d, &c) == 0);
  CHECK (d.nbits == 0 && d.words == NULL);
  CHECK (bitset_merge (&d, &c) == 0);
  bitset_free (&d);

  bitset_free (&a);
  bitset_free (&b);
  bitset_free (&c);
}

static void
test_serialize (void)
{
  struct bitset bm, bm2;
  unsigned char buf[32], buf2[32];
  size_t i;

  CHECK (bitset_init (&bm, 20) == 0);
  CHECK (bitset_serialized_size (&bm) == 3);
  bitset_set (&bm, 0);
  bitset_set (&bm, 9);
  bitset_set (&bm, 19);
  memset (buf, 0xaa, sizeof buf);
  bitset_serialize (&bm, buf);
  CHECK (buf[0] == 0x01);
  CHECK (buf[1] == 0x02);
  CHECK (buf[2] == 0x08);
  CHECK (buf[3] == 0xaa);                   /* nothing written past size */

  /* Round trip. */
  CHECK (bitset_init (&bm2, 20) == 0);
  bitset_set (&bm2, 4);
  CHECK (bitset_deserialize (&bm2, buf, 3) == 0);
  CHECK (bm2.words[0] == bm.words[0]);
  CHECK (!bitset_test (&bm2, 4));           /* old contents replaced */

  /* Wrong length is rejected and bm2 is unchanged. */
  errno = 0;
  CHECK (bitset_deserialize (&bm2, buf, 2) == -1);
  CHECK (errno == EINVAL);
  errno = 0;
  CHECK (bitset_deserialize (&bm2, buf, 4) == -1);
  CHECK (errno == EINVAL);
  CHECK (bm2.words[0] == bm.words[0]);

  /* Padding bits (20..23) must be zero. */
  buf2[0] = 0xff; buf2[1] = 0xff; buf2[2] = 0x10;
  errno = 0;
  CHECK (bitset_deserialize (&bm2, buf2, 3) == -1);
  CHECK (errno == EINVAL);
  CHECK (bm2.words[0] == bm.words[0]);
  buf2[2] = 0x80;
  CHECK (bitset_deserialize (&bm2, buf2, 3) == -1);
  buf2[2] = 0x0f;                           /* all valid bits set */
  CHECK (bitset_deserialize (&bm2, buf2, 3) == 0);
  CHECK (bitset_count (&bm2) == 20);
  CHECK (padding_clear (&bm2));
  bitset_free (&bm);
  bitset_free (&bm2);

  /* Multi-word, byte order within a word: bit 8*k + k of byte k. */
  CHECK (bitset_init (&bm, 200) == 0);
  CHECK (bitset_serialized_size (&bm) == 25);
  for (i = 0; i < 25; i++)
    bitset_set (&bm, 8 * i + i % 8);
  bitset_serialize (&bm, buf);
  for (i = 0; i < 25; i++)
    CHECK (buf[i] == 1u << (i % 8));
  CHECK (bitset_init (&bm2, 200) == 0);
  CHECK (bitset_deserialize (&bm2, buf, 25) == 0);
  for (i = 0; i < 4; i++)
    CHECK (bm2.words[i] == bm.words[i]);
  bitset_free (&bm);
  bitset_free (&bm2);

  /* Multiple of 8: no padding, 0xff in the last byte is fine. */
  CHECK (bitset_init (&bm, 16) == 0);
  CHECK (bitset_serialized_size (&bm) == 2);
  buf[0] = 0x00; buf[1] = 0xff;
  CHECK (bitset_deserialize (&bm, buf, 2) == 0);
  CHECK (bitset_next_set (&bm, 0) == 8 && bitset_count (&bm) == 8);
  bitset_free (&bm);
}

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

/* Growing keeps the bits and adds clear ones; shrinking drops the
 * tail and keeps "bits past nbits are 0", so growing again shows none
 * of the old bits.
 */
static void
test_resize (void)
{
  struct bitset bm;

  CHECK (bitset_init (&bm, 70) == 0);
  bitset_set_range (&bm, 60, 10);
  CHECK (bitset_resize (&bm, 200) == 0);
  CHECK (bm.nbits == 200);
  CHECK (bitset_count (&bm) == 10);
  CHECK (bitset_next_set (&bm, 70) == 200);
  bitset_set (&bm, 199);
  CHECK (bitset_resize (&bm, 65) == 0);
  CHECK (bitset_count (&bm) == 5);
  CHECK (bitset_resize (&bm, 130) == 0);
  CHECK (bitset_count (&bm) == 5);
  CHECK (!bitset_test (&bm, 65) && !bitset_test (&bm, 129));
  CHECK (bitset_resize (&bm, 0) == 0);
  CHECK (bm.nbits == 0 && bm.words == NULL);
  bitset_free (&bm);
}

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
    uint64_t end, want, got;

    if (rng () % 20 == 0)
      n = UINT64_MAX - rng () % 3;
    end = first + (n < MODEL_BITS + 10 ? n : MODEL_BITS + 10);
    if (end > MODEL_BITS)
      end = MODEL_BITS;

    switch (rng () % 9) {
    case 0:
      bitset_set_range (&bm, first, n);
      for (i = first; i < end; i++) model[i] = true;
      break;
    case 1:
      bitset_clear_range (&bm, first, n);
      for (i = first; i < end; i++) model[i] = false;
      break;
    case 2:
      bitset_set_range_atomic (&bm, first, n);
      for (i = first; i < end; i++) model[i] = true;
      break;
    case 3:
      bitset_clear_range_atomic (&bm, first, n);
      for (i = first; i < end; i++) model[i] = false;
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
  test_init ();
  test_single_bits ();
  test_ranges ();
  test_clipping ();
  test_next ();
  test_count_any ();
  test_merge_copy ();
  test_serialize ();
  test_resize ();
  test_random ();
  test_atomic_threads ();
  UNIT_EXIT ();
}
