/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * Durable bits: a bitmap mirrored in a region of a file, where a bit
 * may be waited for until it is durable (written in place and
 * fdatasync'ed).  Used for write-ahead change tracking (dirty-bitmap,
 * bitmap-sync=write-ahead) and meant for any map whose bits must reach
 * stable storage before the I/O they describe (the stream filter's
 * populated-cluster map).
 *
 * The region holds the bits serialised as in bitset_serialize (bit i
 * is bit i % 8 of byte i / 8).  Within an era (one file region, from
 * durable_bits_attach or durable_bits_switch_end to the next switch)
 * bits only ever go from 0 to 1, and the region is written a page
 * (BMFILE_PAGE bytes) at a time, every page write holding every bit
 * already made durable in it.  So a page write torn at any sector
 * boundary (or any bit) leaves each bit either as it was or set: it
 * can lose only bits that were not yet durable, whose waiters have
 * not returned.
 *
 * Commits are batched: one thread writes every page changed since its
 * last commit and syncs once, then wakes every waiter whose bits are
 * now durable, so all the writers waiting at one moment share one
 * fdatasync.
 *
 * Locks: d->lock (a mutex) protects everything but the words of
 * d->durable, which only the commit thread and the switch functions
 * change, with atomic stores, and which anyone may read with atomic
 * loads (durable_bits_test) without the lock.  A bit set in
 * d->durable is durable in the current era's file region.
 *
 * The caller guarantees that durable_bits_switch_begin runs while no
 * thread is in durable_bits_set_wait or durable_bits_test (e.g. under
 * the write side of its own gate, which those hold for reading).
 */

#ifndef FLEECE_DURABLE_BITS_H
#define FLEECE_DURABLE_BITS_H

#include <stdbool.h>
#include <stdint.h>

struct durable_bits;

/* Counters for status and benchmarks (read with the lock held). */
struct durable_bits_stats {
  uint64_t syncs;               /* fdatasync calls */
  uint64_t pages_written;       /* page writes */
  uint64_t waits;               /* calls of set_wait that had to wait */
};

/* A new object with no file: waiters wait until a file is attached.
 * NULL with errno on failure.
 */
extern struct durable_bits *durable_bits_new (void);

/* Stop the commit thread, close the file, free everything. */
extern void durable_bits_free (struct durable_bits *d);

/* Start an era: the bits live at [offset, offset + (nbits + 7) / 8) of
 * fd, whose contents there are initial (serialised, all durable).  d
 * takes fd.  0, or -1 with errno.
 */
extern int durable_bits_attach (struct durable_bits *d, int fd,
                                uint64_t offset, uint64_t nbits,
                                const unsigned char *initial);

/* A new era is coming in another file (rewritten whole, elsewhere):
 * from now on the bits are nbits long and hold initial (serialised);
 * nothing is committed until durable_bits_switch_end.  The current
 * era is kept, in case the new file cannot be written.  See above for
 * when it may be called.  0, or -1 with errno (nothing changed).
 */
extern int durable_bits_switch_begin (struct durable_bits *d, uint64_t nbits,
                                      const unsigned char *initial);

/* End the switch.  fd >= 0: the new file is in place, its region at
 * offset holds the initial bits of switch_begin; d takes fd and closes
 * the old era's.  fd == -1: the new file could not be written; go on
 * in the old era's region, which then gets the old era's bits and
 * every bit asked for since switch_begin (bit numbers as in the new
 * era, which the caller keeps equal: a switch that cannot be undone
 * this way must not be begun).  Waiters are woken either way.
 */
extern void durable_bits_switch_end (struct durable_bits *d, int fd,
                                     uint64_t offset);

/* True if every bit of [first, first + n) is durable (lock-free). */
extern bool durable_bits_test (const struct durable_bits *d,
                               uint64_t first, uint64_t n);

/* Make bits [first, first + n) durable and return when they are: 0,
 * or -1 with errno (EIO: the file could not be written or synced; the
 * error stays until the next era).  Bits past the end are ignored.
 */
extern int durable_bits_set_wait (struct durable_bits *d,
                                  uint64_t first, uint64_t n);

/* Ask for bits [first, first + n) to be made durable, without
 * waiting: they go into the next commit (bits past the end are
 * ignored).  For bits that will probably be waited for soon.
 */
extern void durable_bits_ask (struct durable_bits *d,
                              uint64_t first, uint64_t n);

extern void durable_bits_get_stats (struct durable_bits *d,
                                    struct durable_bits_stats *s);

#endif /* FLEECE_DURABLE_BITS_H */
