/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * A plain bitmap stored as an array of 64 bit words, bit i being bit
 * i % 64 of word i / 64.  Ranges are clipped to the size of the map,
 * searches and counts work a word at a time, and the serialised form
 * is a little-endian byte string independent of the host.  The
 * invariant kept by every function here is that bits past nbits in
 * the last word are always zero, so whole-word operations (count,
 * merge, next_set) never see stray bits.
 */

#include <config.h>

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bitset.h"

#define WORD_BITS 64

/* Number of words needed for nbits bits, without overflow. */
static inline uint64_t
nwords_for (uint64_t nbits)
{
  return nbits / WORD_BITS + (nbits % WORD_BITS != 0);
}

/* Clip [first, first+n) to the map.  Returns false if the clipped
 * range is empty, else sets *end (exclusive, <= nbits, > first).
 */
static inline bool
clip (const struct bitset *bm, uint64_t first, uint64_t n, uint64_t *end)
{
  if (first >= bm->nbits || n == 0)
    return false;
  if (n > bm->nbits - first)
    n = bm->nbits - first;
  *end = first + n;
  return true;
}

/* Mask of the bits of word w that lie in [first, end), where the
 * range is non-empty and word w lies between first/64 and (end-1)/64.
 */
static inline uint64_t
word_mask (uint64_t w, uint64_t first, uint64_t end)
{
  uint64_t mask = UINT64_MAX;

  if (w == first / WORD_BITS)
    mask &= UINT64_MAX << (first % WORD_BITS);
  if (w == (end - 1) / WORD_BITS)
    mask &= UINT64_MAX >> (WORD_BITS - 1 - (end - 1) % WORD_BITS);
  return mask;
}

/* Mask of the valid bits of the last word (all ones if nbits is a
 * multiple of 64).  Only meaningful when nbits > 0.
 */
static inline uint64_t
last_word_mask (const struct bitset *bm)
{
  unsigned r = bm->nbits % WORD_BITS;

  return r == 0 ? UINT64_MAX : (UINT64_C (1) << r) - 1;
}

/* What range_do does to each word of a range. */
enum range_op {
  RANGE_SET, RANGE_CLEAR,                 /* plain read-modify-write */
  RANGE_SET_ATOMIC, RANGE_CLEAR_ATOMIC,   /* atomic per word */
  RANGE_COUNT,                            /* returns the set bits */
  RANGE_ANY,                              /* returns 1 at the first set bit */
};

/* The one walk over the words of [first, first+n) clipped to the map,
 * each word masked to the bits of the range.  Returns the count for
 * RANGE_COUNT, 1 or 0 for RANGE_ANY, 0 otherwise.  bm is const so
 * that the counting callers can share it; the set and clear ops write
 * the words it points to.  Always inlined, so op is a constant in
 * every caller and the switch disappears.
 */
static inline __attribute__ ((always_inline)) uint64_t
range_do (const struct bitset *bm, uint64_t first, uint64_t n,
          enum range_op op)
{
  uint64_t end, w, mask, count = 0;

  if (!clip (bm, first, n, &end))
    return 0;
  for (w = first / WORD_BITS; w <= (end - 1) / WORD_BITS; w++) {
    mask = word_mask (w, first, end);
    switch (op) {
    case RANGE_SET: bm->words[w] |= mask; break;
    case RANGE_CLEAR: bm->words[w] &= ~mask; break;
    case RANGE_SET_ATOMIC:
      __atomic_fetch_or (&bm->words[w], mask, __ATOMIC_SEQ_CST);
      break;
    case RANGE_CLEAR_ATOMIC:
      __atomic_fetch_and (&bm->words[w], ~mask, __ATOMIC_SEQ_CST);
      break;
    case RANGE_COUNT:
      count += __builtin_popcountll (bm->words[w] & mask);
      break;
    case RANGE_ANY:
      if (bm->words[w] & mask)
        return 1;
      break;
    }
  }
  return count;
}

/* The first bit at or after from whose value is not flip's (flip is 0
 * to find a set bit, UINT64_MAX to find a clear one), or nbits.  Bits
 * past nbits are zero: a set bit found is always a valid bit, and a
 * clear one found among them is bit nbits itself, the first of them.
 */
static inline uint64_t
next_unlike (const struct bitset *bm, uint64_t from, uint64_t flip)
{
  uint64_t nwords = nwords_for (bm->nbits);
  uint64_t w, word;

  if (from >= bm->nbits)
    return bm->nbits;
  w = from / WORD_BITS;
  word = (bm->words[w] ^ flip) & (UINT64_MAX << (from % WORD_BITS));
  for (;;) {
    if (word != 0)
      return w * WORD_BITS + __builtin_ctzll (word);
    if (++w >= nwords)
      return bm->nbits;
    word = bm->words[w] ^ flip;
  }
}

int
bitset_init (struct bitset *bm, uint64_t nbits)
{
  uint64_t nwords = nwords_for (nbits);

  bm->nbits = 0;
  bm->words = NULL;
  if (nbits == 0)
    return 0;

  /* The byte size must fit in size_t.  The serialised size is never
   * larger than this, so it fits too.
   */
  if (nwords > SIZE_MAX / sizeof (uint64_t)) {
    errno = EINVAL;
    return -1;
  }

  bm->words = calloc ((size_t) nwords, sizeof (uint64_t));
  if (bm->words == NULL) {
    errno = ENOMEM;
    return -1;
  }
  bm->nbits = nbits;
  return 0;
}

int
bitset_resize (struct bitset *bm, uint64_t nbits)
{
  uint64_t old = nwords_for (bm->nbits), nwords = nwords_for (nbits);
  uint64_t *w;

  if (nbits == 0) {
    bitset_free (bm);
    return 0;
  }
  if (nwords > SIZE_MAX / sizeof (uint64_t)) {
    errno = EINVAL;
    return -1;
  }
  if (nbits < bm->nbits) {
    /* Keep the rule that bits past nbits are 0. */
    bm->nbits = nbits;
    bm->words[nwords - 1] &= last_word_mask (bm);
  }
  if (nwords != old) {
    w = realloc (bm->words, (size_t) nwords * sizeof (uint64_t));
    if (w == NULL) {
      errno = ENOMEM;
      return -1;
    }
    if (nwords > old)
      memset (w + old, 0, (size_t) (nwords - old) * sizeof (uint64_t));
    bm->words = w;
  }
  bm->nbits = nbits;
  return 0;
}

void
bitset_free (struct bitset *bm)
{
  free (bm->words);
  bm->words = NULL;
  bm->nbits = 0;
}

int
bitset_copy (struct bitset *dst, const struct bitset *src)
{
  if (bitset_init (dst, src->nbits) == -1)
    return -1;
  if (src->nbits > 0)
    memcpy (dst->words, src->words,
            (size_t) nwords_for (src->nbits) * sizeof (uint64_t));
  return 0;
}

bool
bitset_test (const struct bitset *bm, uint64_t bit)
{
  return (bm->words[bit / WORD_BITS] >> (bit % WORD_BITS)) & 1;
}

void
bitset_set (struct bitset *bm, uint64_t bit)
{
  bm->words[bit / WORD_BITS] |= UINT64_C (1) << (bit % WORD_BITS);
}

void
bitset_clear (struct bitset *bm, uint64_t bit)
{
  bm->words[bit / WORD_BITS] &= ~(UINT64_C (1) << (bit % WORD_BITS));
}

void
bitset_set_range (struct bitset *bm, uint64_t first, uint64_t n)
{
  range_do (bm, first, n, RANGE_SET);
}

void
bitset_clear_range (struct bitset *bm, uint64_t first, uint64_t n)
{
  range_do (bm, first, n, RANGE_CLEAR);
}

void
bitset_set_all (struct bitset *bm)
{
  uint64_t nwords = nwords_for (bm->nbits);

  if (nwords == 0)
    return;
  memset (bm->words, 0xff, (size_t) nwords * sizeof (uint64_t));
  bm->words[nwords - 1] &= last_word_mask (bm);
}

void
bitset_clear_all (struct bitset *bm)
{
  if (bm->nbits > 0)
    memset (bm->words, 0, (size_t) nwords_for (bm->nbits) * sizeof (uint64_t));
}

uint64_t
bitset_next_set (const struct bitset *bm, uint64_t from)
{
  return next_unlike (bm, from, 0);
}

uint64_t
bitset_next_clear (const struct bitset *bm, uint64_t from)
{
  return next_unlike (bm, from, UINT64_MAX);
}

uint64_t
bitset_count (const struct bitset *bm)
{
  uint64_t nwords = nwords_for (bm->nbits);
  uint64_t w, count = 0;

  for (w = 0; w < nwords; w++)
    count += __builtin_popcountll (bm->words[w]);
  return count;
}

uint64_t
bitset_count_range (const struct bitset *bm, uint64_t first, uint64_t n)
{
  return range_do (bm, first, n, RANGE_COUNT);
}

bool
bitset_any_in_range (const struct bitset *bm, uint64_t first, uint64_t n)
{
  return range_do (bm, first, n, RANGE_ANY) != 0;
}

int
bitset_merge (struct bitset *dst, const struct bitset *src)
{
  uint64_t nwords, w;

  if (dst->nbits != src->nbits) {
    errno = EINVAL;
    return -1;
  }
  nwords = nwords_for (dst->nbits);
  for (w = 0; w < nwords; w++)
    dst->words[w] |= src->words[w];
  return 0;
}

size_t
bitset_serialized_size (const struct bitset *bm)
{
  /* Fits: bitset_init checked that the word array fits in size_t. */
  return (size_t) (bm->nbits / 8 + (bm->nbits % 8 != 0));
}

void
bitset_serialize (const struct bitset *bm, unsigned char *out)
{
  size_t len = bitset_serialized_size (bm);
  size_t i;

  /* Padding bits come out as zero because they are zero in the words. */
  for (i = 0; i < len; i++)
    out[i] = (unsigned char) (bm->words[i / 8] >> (8 * (i % 8)));
}

int
bitset_deserialize (struct bitset *bm, const unsigned char *in, size_t len)
{
  size_t i;

  if (len != bitset_serialized_size (bm)) {
    errno = EINVAL;
    return -1;
  }
  if (len == 0)
    return 0;
  if (bm->nbits % 8 != 0 &&
      (in[len - 1] & ~((1u << (bm->nbits % 8)) - 1)) != 0) {
    errno = EINVAL;
    return -1;
  }

  /* All checks passed: now it is safe to modify bm. */
  bitset_clear_all (bm);
  for (i = 0; i < len; i++)
    bm->words[i / 8] |= (uint64_t) in[i] << (8 * (i % 8));
  return 0;
}

bool
bitset_test_atomic (const struct bitset *bm, uint64_t bit)
{
  uint64_t word = __atomic_load_n (&bm->words[bit / WORD_BITS],
                                   __ATOMIC_SEQ_CST);

  return (word >> (bit % WORD_BITS)) & 1;
}

void
bitset_set_range_atomic (struct bitset *bm, uint64_t first, uint64_t n)
{
  range_do (bm, first, n, RANGE_SET_ATOMIC);
}

void
bitset_clear_range_atomic (struct bitset *bm, uint64_t first, uint64_t n)
{
  range_do (bm, first, n, RANGE_CLEAR_ATOMIC);
}
