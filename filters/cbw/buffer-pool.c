/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * The chunk pool of cbw-buffer (see buffer-pool.h).
 *
 * Lock: lock protects free_chunk[0..nfree), warm_stop and resident.
 * Everything else is set by buffer_pool_new and never changes until
 * buffer_pool_free.  Invariant: free_chunk holds the index of every
 * chunk not handed out, each once; the most recently given back is on
 * top, so the chunks in use stay few and warm in the CPU caches.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include <nbdkit-filter.h>

#include "buffer-pool.h"

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23  /* Linux 5.14 */
#endif

/* Bytes made resident per madvise call: small enough that stopping is
 * quick and the thread yields the CPU between steps.
 */
#define WARM_STEP (2 * 1024 * 1024)

struct buffer_pool {
  char *base;
  size_t len;                   /* nchunks * unit */
  uint32_t unit;
  uint32_t nchunks;

  pthread_mutex_t lock;
  uint32_t *free_chunk;         /* stack of free chunk indexes */
  uint32_t nfree;
  bool warm_stop;               /* buffer_pool_free is waiting */
  size_t resident;              /* bytes the warm thread populated */
  bool warm_running;            /* warm thread started (joined by free) */
  pthread_t warm_thread;
};

struct buffer_pool *
buffer_pool_new (uint64_t bytes, uint32_t unit)
{
  struct buffer_pool *p;
  uint64_t n = bytes / unit;
  uint32_t i;

  if (n == 0 || n > UINT32_MAX || unit % 4096 != 0)
    return NULL;
  p = calloc (1, sizeof *p);
  if (p == NULL)
    return NULL;
  p->unit = unit;
  p->nchunks = n;
  p->len = (size_t) n * unit;
  p->free_chunk = malloc (n * sizeof *p->free_chunk);
  p->base = mmap (NULL, p->len, PROT_READ | PROT_WRITE,
                  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p->free_chunk == NULL || p->base == MAP_FAILED) {
    nbdkit_debug ("cbw-buffer: cannot map %" PRIu64 " bytes for the "
                  "buffer (%m); copies are allocated one by one", bytes);
    if (p->base != MAP_FAILED)
      munmap (p->base, p->len);
    free (p->free_chunk);
    free (p);
    return NULL;
  }
  /* Fewer page faults and TLB misses where the kernel allows it. */
  madvise (p->base, p->len, MADV_HUGEPAGE);
  /* Chunk 0 on top. */
  for (i = 0; i < n; i++)
    p->free_chunk[i] = n - 1 - i;
  p->nfree = n;
  pthread_mutex_init (&p->lock, NULL);
  return p;
}

static void *
warm_main (void *arg)
{
  struct buffer_pool *p = arg;
  size_t off;
  bool stop;

  for (off = 0; off < p->len; off += WARM_STEP) {
    size_t n = p->len - off < WARM_STEP ? p->len - off : WARM_STEP;

    pthread_mutex_lock (&p->lock);
    stop = p->warm_stop;
    pthread_mutex_unlock (&p->lock);
    if (stop)
      break;
    if (madvise (p->base + off, n, MADV_POPULATE_WRITE) == -1) {
      nbdkit_debug ("cbw-buffer: cannot make the buffer resident ahead "
                    "of use (%m); its pages are faulted in on first use");
      break;
    }
    pthread_mutex_lock (&p->lock);
    p->resident = off + n;
    pthread_mutex_unlock (&p->lock);
  }
  return NULL;
}

void
buffer_pool_warm (struct buffer_pool *p)
{
  int e;

  if (p == NULL || p->warm_running)
    return;
  e = pthread_create (&p->warm_thread, NULL, warm_main, p);
  if (e != 0)
    nbdkit_debug ("cbw-buffer: no thread to make the buffer resident "
                  "(%s); its pages are faulted in on first use",
                  strerror (e));
  else
    p->warm_running = true;
}

uint64_t
buffer_pool_resident (struct buffer_pool *p)
{
  uint64_t r;

  if (p == NULL)
    return 0;
  pthread_mutex_lock (&p->lock);
  r = p->resident;
  pthread_mutex_unlock (&p->lock);
  return r;
}

void *
buffer_pool_get (struct buffer_pool *p)
{
  void *r = NULL;

  if (p == NULL)
    return NULL;
  pthread_mutex_lock (&p->lock);
  if (p->nfree > 0)
    r = p->base + (size_t) p->free_chunk[--p->nfree] * p->unit;
  pthread_mutex_unlock (&p->lock);
  return r;
}

bool
buffer_pool_owns (const struct buffer_pool *p, const void *ptr)
{
  return p && (const char *) ptr >= p->base &&
    (const char *) ptr < p->base + p->len;
}

void
buffer_pool_put (struct buffer_pool *p, void *chunk)
{
  pthread_mutex_lock (&p->lock);
  p->free_chunk[p->nfree++] = ((char *) chunk - p->base) / p->unit;
  pthread_mutex_unlock (&p->lock);
}

void
buffer_pool_free (struct buffer_pool *p)
{
  if (p == NULL)
    return;
  if (p->warm_running) {
    pthread_mutex_lock (&p->lock);
    p->warm_stop = true;
    pthread_mutex_unlock (&p->lock);
    pthread_join (p->warm_thread, NULL);
  }
  munmap (p->base, p->len);
  free (p->free_chunk);
  pthread_mutex_destroy (&p->lock);
  free (p);
}
