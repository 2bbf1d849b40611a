/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * Unit tests for common/bitset.c: single bits and ranges across word
 * boundaries, clipping, searching, counting, merging, serialisation,
 * copying and resizing.  test-bitset-model.c has the randomised
 * comparison against a naive model and the atomic functions used from
 * several threads at once.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bitset.h"
#include "bitset-check.h"
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

/* A search from bit from and the bit it must find. */
struct search {
  bool clear;                   /* next_clear, else next_set */
  uint64_t from, want;
};

static void
check_searches (const struct bitset *bm, const struct search *s, size_t n)
{
  size_t i;
  uint64_t got;

  for (i = 0; i < n; i++) {
    got = s[i].clear ? bitset_next_clear (bm, s[i].from)
                     : bitset_next_set (bm, s[i].from);
    CHECK (got == s[i].want);
    if (got != s[i].want)
      fprintf (stderr, "  next_%s (%" PRIu64 "): %" PRIu64 "\n",
               s[i].clear ? "clear" : "set", s[i].from, got);
  }
}

#define SET(from, want) { false, (from), (want) }
#define CLR(from, want) { true, (from), (want) }

static void
test_next (void)
{
  static const struct search empty[] = {
    SET (0, 150), SET (149, 150), SET (150, 150), SET (UINT64_MAX, 150),
    CLR (0, 0), CLR (149, 149), CLR (150, 150),
  };
  /* Full map: next_clear must not report a padding bit. */
  static const struct search full[] = {
    CLR (0, 150), CLR (140, 150), CLR (UINT64_MAX, 150),
    SET (0, 0), SET (149, 149),
  };
  static const struct search scattered[] = {
    SET (0, 5), SET (5, 5), SET (6, 64), SET (64, 64), SET (65, 149),
    SET (149, 149),
  };
  static const struct search holes[] = {
    CLR (0, 3), CLR (4, 127), CLR (128, 128), CLR (129, 150),
  };
  /* Exactly 128 bits: last bit, searching past the last word. */
  static const struct search last[] = {
    SET (0, 127), SET (127, 127), CLR (127, 128), CLR (126, 126),
  };
  static const struct search one_clear[] = { SET (0, 1), CLR (0, 0) };
  static const struct search one_set[] = { SET (0, 0), CLR (0, 1) };
  struct bitset bm;

  /* Empty map of 150 bits (not a multiple of 64). */
  CHECK (bitset_init (&bm, 150) == 0);
  check_searches (&bm, empty, ARRAY_SIZE (empty));
  bitset_set_all (&bm);
  check_searches (&bm, full, ARRAY_SIZE (full));

  bitset_clear_all (&bm);
  bitset_set (&bm, 5);
  bitset_set (&bm, 64);
  bitset_set (&bm, 149);
  check_searches (&bm, scattered, ARRAY_SIZE (scattered));

  bitset_set_all (&bm);
  bitset_clear (&bm, 3);
  bitset_clear (&bm, 127);
  bitset_clear (&bm, 128);
  check_searches (&bm, holes, ARRAY_SIZE (holes));
  bitset_free (&bm);

  CHECK (bitset_init (&bm, 128) == 0);
  bitset_set (&bm, 127);
  check_searches (&bm, last, ARRAY_SIZE (last));
  bitset_free (&bm);

  /* One bit. */
  CHECK (bitset_init (&bm, 1) == 0);
  check_searches (&bm, one_clear, ARRAY_SIZE (one_clear));
  bitset_set (&bm, 0);
  check_searches (&bm, one_set, ARRAY_SIZE (one_set));
  bitset_free (&bm);
}

/* A range and what count_range (or any_in_range: 0 or 1) says of it. */
struct range {
  uint64_t first, n, want;
};

static void
check_ranges (const struct bitset *bm, bool any, const struct range *r,
              size_t n)
{
  size_t i;
  uint64_t got;

  for (i = 0; i < n; i++) {
    got = any ? bitset_any_in_range (bm, r[i].first, r[i].n)
              : bitset_count_range (bm, r[i].first, r[i].n);
    CHECK (got == r[i].want);
    if (got != r[i].want)
      fprintf (stderr, "  %s (%" PRIu64 ", %" PRIu64 "): %" PRIu64 "\n",
               any ? "any_in_range" : "count_range", r[i].first, r[i].n,
               got);
  }
}

static void
test_count_any (void)
{
  static const struct range counts[] = {
    { 0, 300, 12 }, { 0, 60, 0 }, { 0, 61, 1 }, { 64, 3, 3 }, { 63, 2, 2 },
    { 70, 131, 2 }, { 70, 130, 1 }, { 65, 0, 0 }, { 300, 10, 0 },
  };
  static const struct range anys[] = {
    { 0, 60, 0 }, { 0, 61, 1 }, { 70, 1, 1 }, { 71, 129, 0 },
    { 71, 130, 1 }, { 201, UINT64_MAX, 0 }, { 65, 0, 0 }, { 128, 64, 0 },
  };
  struct bitset bm;

  CHECK (bitset_init (&bm, 300) == 0);
  bitset_set_range (&bm, 60, 11);           /* 60..70 */
  bitset_set (&bm, 200);
  CHECK (bitset_count (&bm) == 12);
  check_ranges (&bm, false, counts, ARRAY_SIZE (counts));
  check_ranges (&bm, true, anys, ARRAY_SIZE (anys));
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
  UNIT_EXIT ();
}
