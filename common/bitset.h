/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * A plain bitmap of clusters (or granules).  Bit i stands for cluster i.
 *
 * Locking: none inside.  The owner of a bitmap documents which lock
 * protects it.  The *_atomic functions may be used on words that other
 * threads read or modify with the *_atomic functions at the same time;
 * the plain functions must not race with anything.
 */

#ifndef FLEECE_BITSET_H
#define FLEECE_BITSET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct bitset {
  uint64_t nbits;               /* number of valid bits */
  uint64_t *words;              /* (nbits + 63) / 64 words; bits past nbits are 0 */
};

#define BITSET_INIT { 0, NULL }

/* Allocate a bitmap of nbits bits, all clear.  Returns 0, or -1 with
 * errno set (ENOMEM, or EINVAL if nbits is too large to allocate).
 * nbits == 0 is allowed (words stays NULL).
 */
extern int bitset_init (struct bitset *bm, uint64_t nbits);
extern void bitset_free (struct bitset *bm);
/* Grow (new bits clear) or shrink to nbits.  0, or -1 with errno (the
 * bitmap is then unchanged).
 */
extern int bitset_resize (struct bitset *bm, uint64_t nbits);

/* Make dst an independent copy of src (dst must not be initialised). */
extern int bitset_copy (struct bitset *dst, const struct bitset *src);

/* Single bits.  bit must be < nbits. */
extern bool bitset_test (const struct bitset *bm, uint64_t bit);
extern void bitset_set (struct bitset *bm, uint64_t bit);
extern void bitset_clear (struct bitset *bm, uint64_t bit);

/* Ranges [first, first+n).  The range is clipped to nbits. */
extern void bitset_set_range (struct bitset *bm, uint64_t first, uint64_t n);
extern void bitset_clear_range (struct bitset *bm, uint64_t first, uint64_t n);
extern void bitset_set_all (struct bitset *bm);
extern void bitset_clear_all (struct bitset *bm);

/* Index of the first set (clear) bit >= from, or nbits if there is none. */
extern uint64_t bitset_next_set (const struct bitset *bm, uint64_t from);
extern uint64_t bitset_next_clear (const struct bitset *bm, uint64_t from);

/* Number of set bits in the whole map, or in [first, first+n) (clipped). */
extern uint64_t bitset_count (const struct bitset *bm);
extern uint64_t bitset_count_range (const struct bitset *bm,
                                    uint64_t first, uint64_t n);

/* True if any bit of [first, first+n) is set (clipped). */
extern bool bitset_any_in_range (const struct bitset *bm,
                                 uint64_t first, uint64_t n);

/* dst |= src.  Both must have the same nbits, else -1 with errno EINVAL. */
extern int bitset_merge (struct bitset *dst, const struct bitset *src);

/* Serialised form: (nbits + 7) / 8 bytes; bit i is bit (i % 8) of byte
 * i / 8 (least significant first), independent of host endianness.
 * Padding bits of the last byte are zero.
 */
extern size_t bitset_serialized_size (const struct bitset *bm);
extern void bitset_serialize (const struct bitset *bm, unsigned char *out);
/* Load bits into an initialised bitmap.  len must equal
 * bitset_serialized_size (bm) and padding bits must be zero, else -1
 * with errno EINVAL and bm unchanged.
 */
extern int bitset_deserialize (struct bitset *bm,
                               const unsigned char *in, size_t len);

/* Lock-free variants for bitmaps shared between threads without a
 * lock.  They use sequentially consistent atomic operations on whole
 * words, so a concurrent bitset_test_atomic sees each bit either
 * before or after the change, never a torn word.
 */
extern bool bitset_test_atomic (const struct bitset *bm, uint64_t bit);
extern void bitset_set_range_atomic (struct bitset *bm,
                                     uint64_t first, uint64_t n);
extern void bitset_clear_range_atomic (struct bitset *bm,
                                       uint64_t first, uint64_t n);

#endif /* FLEECE_BITSET_H */
