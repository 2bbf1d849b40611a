/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * Fine bits: a bitmap mirrored in a region of a file, written in place
 * a page (BMFILE_PAGE bytes) at a time into the page cache, never
 * synced here.  Used for the granule bits of write-ahead tracking
 * (dirty-bitmap, bitmap-sync=write-ahead), whose durability against a
 * power loss comes from the intent map (durable-bits.h): a bit set
 * here survives a crash of the process (the page cache keeps it), and
 * reaches the disk with the next sync of the file.
 *
 * Within an era (one file region, from fine_bits_attach or
 * fine_bits_switch_end to the next switch) bits only ever go from 0 to
 * 1, and the writes of one page are serialised and each holds every
 * bit set before it: the region never goes back to fewer bits, and a
 * page write torn at any sector leaves each bit as it was or set.
 *
 * Locks: f->lock (a mutex) protects everything but the words of
 * f->written, which only holders of f->lock change, with atomic
 * stores, and which anyone may read with atomic loads (fine_bits_test)
 * without it.  A bit set in f->written is in the current era's file
 * region (page cache at least), or in the initial bits of the era
 * (which the caller made durable with the file).  f->lock is a leaf.
 *
 * The caller guarantees that fine_bits_switch_begin runs while no
 * thread is in fine_bits_set_write or fine_bits_test.
 */

#ifndef FLEECE_FINE_BITS_H
#define FLEECE_FINE_BITS_H

#include <stdbool.h>
#include <stdint.h>

struct fine_bits;

/* A new object with no file.  NULL with errno on failure. */
extern struct fine_bits *fine_bits_new (void);
extern void fine_bits_free (struct fine_bits *f);

/* Start an era: the bits live at [offset, offset + (nbits + 7) / 8) of
 * fd, holding initial (serialised).  fd is duplicated (the caller
 * keeps its own).  0, or -1 with errno.
 */
extern int fine_bits_attach (struct fine_bits *f, int fd, uint64_t offset,
                             uint64_t nbits, const unsigned char *initial);

/* A new era is coming in another file: the bits become nbits long,
 * holding initial; writers of new bits wait until fine_bits_switch_end.
 * 0, or -1 with errno (nothing changed).
 */
extern int fine_bits_switch_begin (struct fine_bits *f, uint64_t nbits,
                                   const unsigned char *initial);

/* End the switch.  fd >= 0 (duplicated): the new file is in place,
 * its region at offset holding the initial bits.  fd == -1: go on in
 * the old file, whose region gets the old era's bits and the new
 * ones (bit numbers equal, else every writer fails until the next
 * era).
 */
extern void fine_bits_switch_end (struct fine_bits *f, int fd,
                                  uint64_t offset);

/* True if every bit of [first, first + n) is written (lock-free). */
extern bool fine_bits_test (const struct fine_bits *f,
                            uint64_t first, uint64_t n);

/* Set bits [first, first + n) and write their pages in place, without
 * a sync: 0 once they are in the file, or -1 with errno (the error
 * stays until the next era).  Bits past the end are ignored.
 */
extern int fine_bits_set_write (struct fine_bits *f,
                                uint64_t first, uint64_t n);

/* Page writes so far (for status). */
extern uint64_t fine_bits_pages_written (struct fine_bits *f);

#endif /* FLEECE_FINE_BITS_H */
