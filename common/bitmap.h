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

#ifndef FLEECE_BITMAP_H
#define FLEECE_BITMAP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct bitmap {
  uint64_t nbits;               /* number of valid bits */
  uint64_t *words;              /* (nbits + 63) / 64 words; bits past nbits are 0 */
};

#define BITMAP_INIT { 0, NULL }

/* Allocate a bitmap of nbits bits, all clear.  Returns 0, or -1 with
 * errno set (ENOMEM, or EINVAL if nbits is too large to allocate).
 * nbits == 0 is allowed (words stays NULL).
 */
extern int bitmap_init (struct bitmap *bm, uint64_t nbits);
extern void bitmap_free (struct bitmap *bm);
/* Grow (new bits clear) or shrink to nbits.  0, or -1 with errno (the
 * bitmap is then unchanged).
 */
extern int bitmap_resize (struct bitmap *bm, uint64_t nbits);

/* Make dst an independent copy of src (dst must not be initialised). */
extern int bitmap_copy (struct bitmap *dst, const struct bitmap *src);

/* Single bits.  bit must be < nbits. */
extern bool bitmap_test (const struct bitmap *bm, uint64_t bit);
extern void bitmap_set (struct bitmap *bm, uint64_t bit);
extern void bitmap_clear (struct bitmap *bm, uint64_t bit);

/* Ranges [first, first+n).  The range is clipped to nbits. */
extern void bitmap_set_range (struct bitmap *bm, uint64_t first, uint64_t n);
extern void bitmap_clear_range (struct bitmap *bm, uint64_t first, uint64_t n);
extern void bitmap_set_all (struct bitmap *bm);
extern void bitmap_clear_all (struct bitmap *bm);

/* Index of the first set (clear) bit >= from, or nbits if there is none. */
extern uint64_t bitmap_next_set (const struct bitmap *bm, uint64_t from);
extern uint64_t bitmap_next_clear (const struct bitmap *bm, uint64_t from);

/* Number of set bits in the whole map, or in [first, first+n) (clipped). */
extern uint64_t bitmap_count (const struct bitmap *bm);
extern uint64_t bitmap_count_range (const struct bitmap *bm,
                                    uint64_t first, uint64_t n);

/* True if any bit of [first, first+n) is set (clipped). */
extern bool bitmap_any_in_range (const struct bitmap *bm,
                                 uint64_t first, uint64_t n);

/* dst |= src.  Both must have the same nbits, else -1 with errno EINVAL. */
extern int bitmap_merge (struct bitmap *dst, const struct bitmap *src);

/* Serialised form: (nbits + 7) / 8 bytes; bit i is bit (i % 8) of byte
 * i / 8 (least significant first), independent of host endianness.
 * Padding bits of the last byte are zero.
 */
extern size_t bitmap_serialized_size (const struct bitmap *bm);
extern void bitmap_serialize (const struct bitmap *bm, unsigned char *out);
/* Load bits into an initialised bitmap.  len must equal
 * bitmap_serialized_size (bm) and padding bits must be zero, else -1
 * with errno EINVAL and bm unchanged.
 */
extern int bitmap_deserialize (struct bitmap *bm,
                               const unsigned char *in, size_t len);

/* Lock-free variants for bitmaps shared between threads without a
 * lock.  They use sequentially consistent atomic operations on whole
 * words, so a concurrent bitmap_test_atomic sees each bit either
 * before or after the change, never a torn word.
 */
extern bool bitmap_test_atomic (const struct bitmap *bm, uint64_t bit);
extern void bitmap_set_range_atomic (struct bitmap *bm,
                                     uint64_t first, uint64_t n);
extern void bitmap_clear_range_atomic (struct bitmap *bm,
                                       uint64_t first, uint64_t n);

#endif /* FLEECE_BITMAP_H */
