/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * The memory of cbw-buffer (target-buffer.c) as a pool of equal
 * chunks, mapped once and made resident by a thread in the
 * background, so that queuing a copy is a memcpy into memory that is
 * already there rather than into fresh heap pages (page faults on the
 * guest's path: docs/performance.md).
 */

#ifndef FLEECE_CBW_BUFFER_POOL_H
#define FLEECE_CBW_BUFFER_POOL_H

#include <stdbool.h>
#include <stdint.h>

struct buffer_pool;

/* A pool of bytes / unit chunks of unit bytes (a multiple of the page
 * size), page-aligned.  Maps the memory but touches nothing.  Returns
 * NULL (and says why with nbdkit_debug) when the memory cannot be
 * mapped: callers then allocate as before.
 */
extern struct buffer_pool *buffer_pool_new (uint64_t bytes, uint32_t unit);

/* Start making the pool resident in the background (MADV_POPULATE_WRITE
 * in steps; chunks may be taken and filled meanwhile: populating does
 * not change their contents).  Without kernel support (Linux < 5.14)
 * the chunks are made resident by their first use instead.
 */
extern void buffer_pool_warm (struct buffer_pool *p);

/* Bytes of the pool made resident ahead of use so far (0 for a NULL
 * pool, or when the kernel cannot do it).
 */
extern uint64_t buffer_pool_resident (struct buffer_pool *p);

/* A free chunk, or NULL when every chunk is taken. */
extern void *buffer_pool_get (struct buffer_pool *p);

/* Is ptr a chunk of p (as buffer_pool_get returned it)? */
extern bool buffer_pool_owns (const struct buffer_pool *p, const void *ptr);

/* Give back a chunk from buffer_pool_get. */
extern void buffer_pool_put (struct buffer_pool *p, void *chunk);

/* Stop the warming thread and unmap.  No chunk may be in use. */
extern void buffer_pool_free (struct buffer_pool *p);

#endif /* FLEECE_CBW_BUFFER_POOL_H */
