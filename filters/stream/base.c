/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * Connections to stream-base: a small pool of libnbd handles, each
 * used by one thread at a time, (re)connected on demand.  TLS and
 * everything else come from the URI (nbds://..., ?tls-certificates=,
 * ?tls-psk-file=).  A handle that fails is closed; the next request
 * connects again, so a base that comes back is used again.
 *
 * Lock: pool_lock protects pool[] (h and busy), connected, shut and
 * the log-once flags; a handle marked busy belongs to the thread that
 * took it, which does its I/O without the lock.  Invariant: a handle
 * is either NULL, idle (!busy) or in use by exactly one thread.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>
#include <nbdkit-filter.h>

#include "stream.h"

#define NR_CONNS 4
/* Largest single NBD request sent to the base. */
#define MAX_REQUEST (16 * 1024 * 1024)

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pool_cond = PTHREAD_COND_INITIALIZER;
static struct {
  struct nbd_handle *h;
  bool busy;
} pool[NR_CONNS];
static bool connected;          /* the last attempt reached the base */
static bool shut;               /* base_shutdown was called */
static bool too_small;          /* the base is smaller than the disk */
static char *uri;
static uint64_t disk_size;

int
base_init (const char *u, uint64_t size)
{
  uri = strdup (u);
  if (uri == NULL) {
    nbdkit_error ("stream-base: strdup: %m");
    return -1;
  }
  disk_size = size;
  return 0;
}

/* A new connection, or NULL with *err and a log line. */
static struct nbd_handle *
connect_base (int *err)
{
  struct nbd_handle *h = nbd_create ();
  int64_t size;
  bool was;

  if (h == NULL ||
      nbd_set_uri_allow_local_file (h, true) == -1 ||
      /* A failed read's buffer is never used: libnbd need not clear
       * every buffer first (a memset of all the data copied, 16% of
       * the server's CPU time while populating at full speed).
       */
      nbd_set_pread_initialize (h, false) == -1 ||
      nbd_add_meta_context (h, LIBNBD_CONTEXT_BASE_ALLOCATION) == -1 ||
      nbd_connect_uri (h, uri) == -1) {
    *err = nbd_get_errno () ? nbd_get_errno () : EIO;
    pthread_mutex_lock (&pool_lock);
    was = connected;
    connected = false;
    pthread_mutex_unlock (&pool_lock);
    if (was)
      nbdkit_error ("stream-base=%s: lost the base: %s; clusters not yet "
                    "populated cannot be read until it is back", uri,
                    nbd_get_error ());
    else
      nbdkit_debug ("stream-base=%s: cannot connect: %s", uri,
                    nbd_get_error ());
    if (h)
      nbd_close (h);
    *err = EIO;
    return NULL;
  }
  size = nbd_get_size (h);
  if (size == -1 || (uint64_t) size < disk_size) {
    if (size == -1)
      nbdkit_error ("stream-base=%s: cannot get the size: %s",
                    uri, nbd_get_error ());
    else {
      nbdkit_error ("stream-base=%s is smaller than the disk (%" PRIi64
                    " < %" PRIu64 " bytes): it cannot be the base of this "
                    "disk; give a base at least as large", uri, size,
                    disk_size);
      pthread_mutex_lock (&pool_lock);
      too_small = true;
      pthread_mutex_unlock (&pool_lock);
    }
    nbd_close (h);
    *err = EIO;
    return NULL;
  }
  pthread_mutex_lock (&pool_lock);
  was = connected;
  connected = true;
  pthread_mutex_unlock (&pool_lock);
  if (!was)
    nbdkit_debug ("stream-base=%s: connected", uri);
  return h;
}

int
base_probe (void)
{
  struct nbd_handle *h;
  int err;

  h = connect_base (&err);
  if (h) {
    pthread_mutex_lock (&pool_lock);
    pool[0].h = h;
    pthread_mutex_unlock (&pool_lock);
    return 1;
  }
  if (too_small)
    return -1;
  nbdkit_error ("stream-base=%s: the base cannot be reached now; the "
                "server starts anyway, serves populated clusters and waits "
                "for the base (\"waiting-for-base\" in status)", uri);
  return 0;
}

/* Take a handle (connecting if needed); -1 with *err. */
static int
get (int *err)
{
  size_t i;

  pthread_mutex_lock (&pool_lock);
  for (;;) {
    if (shut || too_small) {
      pthread_mutex_unlock (&pool_lock);
      *err = EIO;
      return -1;
    }
    /* Prefer a connected idle handle. */
    for (i = 0; i < NR_CONNS; i++)
      if (!pool[i].busy && pool[i].h)
        goto found;
    for (i = 0; i < NR_CONNS; i++)
      if (!pool[i].busy)
        goto found;
    pthread_cond_wait (&pool_cond, &pool_lock);
  }
 found:
  pool[i].busy = true;
  pthread_mutex_unlock (&pool_lock);
  if (pool[i].h == NULL) {
    struct nbd_handle *h = connect_base (err);

    if (h == NULL) {
      pthread_mutex_lock (&pool_lock);
      pool[i].busy = false;
      pthread_cond_broadcast (&pool_cond);
      pthread_mutex_unlock (&pool_lock);
      return -1;
    }
    pool[i].h = h;              /* busy: ours */
  }
  return i;
}

static void
put (int i, bool failed)
{
  struct nbd_handle *dead = NULL;
  bool was;

  pthread_mutex_lock (&pool_lock);
  if (failed && !nbd_aio_is_ready (pool[i].h)) {
    dead = pool[i].h;
    pool[i].h = NULL;
  }
  was = connected;
  if (dead)
    connected = false;
  pool[i].busy = false;
  pthread_cond_broadcast (&pool_cond);
  pthread_mutex_unlock (&pool_lock);
  if (dead) {
    if (was)
      nbdkit_error ("stream-base=%s: the connection to the base failed; "
                    "clusters not yet populated cannot be read until it is "
                    "back", uri);
    nbd_close (dead);
  }
}

int
base_pread (void *buf, uint64_t count, uint64_t offset, int *err)
{
  int i = get (err);
  char *p = buf;

  if (i == -1)
    return -1;
  while (count > 0) {
    uint64_t n = count > MAX_REQUEST ? MAX_REQUEST : count;

    if (nbd_pread (pool[i].h, p, n, offset, 0) == -1) {
      *err = EIO;
      nbdkit_debug ("stream-base: read at %" PRIu64 ": %s", offset,
                    nbd_get_error ());
      put (i, true);
      return -1;
    }
    p += n;
    offset += n;
    count -= n;
  }
  put (i, false);
  return 0;
}

struct zr {
  base_zero_run_fn *fn;
  void *opaque;
  uint64_t next_offset;         /* where the next extent starts */
  uint64_t end;
};

static int
extent_cb (void *vp, const char *metacontext, uint64_t offset,
           uint32_t *entries, size_t nr_entries, int *error)
{
  struct zr *z = vp;
  size_t j;

  if (strcmp (metacontext, LIBNBD_CONTEXT_BASE_ALLOCATION) != 0)
    return 0;
  for (j = 0; j + 1 < nr_entries; j += 2) {
    uint64_t len = entries[j];

    if (offset + len > z->end)
      len = z->end - offset;
    if ((entries[j + 1] & LIBNBD_STATE_ZERO) && len > 0)
      z->fn (offset, len, z->opaque);
    offset += len;
    if (offset >= z->end)
      break;
  }
  z->next_offset = offset;
  return 0;
}

int
base_zero_runs (uint64_t count, uint64_t offset, base_zero_run_fn *fn,
                void *opaque, int *err)
{
  struct zr z = { .fn = fn, .opaque = opaque, .end = offset + count };
  int i = get (err);

  if (i == -1)
    return -1;
  if (nbd_can_meta_context (pool[i].h, LIBNBD_CONTEXT_BASE_ALLOCATION) != 1) {
    put (i, false);
    return 0;
  }
  while (offset < z.end) {
    uint64_t n = z.end - offset > (UINT32_C (1) << 30)
      ? (UINT32_C (1) << 30) : z.end - offset;

    z.next_offset = offset;
    if (nbd_block_status (pool[i].h, n, offset,
                          (nbd_extent_callback) { .callback = extent_cb,
                                                  .user_data = &z },
                          0) == -1) {
      *err = EIO;
      nbdkit_debug ("stream-base: block status at %" PRIu64 ": %s", offset,
                    nbd_get_error ());
      put (i, true);
      return -1;
    }
    if (z.next_offset <= offset)
      break;                    /* no progress: treat the rest as data */
    offset = z.next_offset;
  }
  put (i, false);
  return 0;
}

bool
base_connected (void)
{
  bool r;

  pthread_mutex_lock (&pool_lock);
  r = connected && !shut;
  pthread_mutex_unlock (&pool_lock);
  return r;
}

void
base_shutdown (void)
{
  size_t i;

  pthread_mutex_lock (&pool_lock);
  shut = true;
  /* Wait for the handles in use to come back, then close them all. */
  for (;;) {
    bool any = false;

    for (i = 0; i < NR_CONNS; i++)
      any |= pool[i].busy;
    if (!any)
      break;
    pthread_cond_wait (&pool_cond, &pool_lock);
  }
  for (i = 0; i < NR_CONNS; i++) {
    if (pool[i].h) {
      nbd_shutdown (pool[i].h, 0);
      nbd_close (pool[i].h);
      pool[i].h = NULL;
    }
  }
  connected = false;
  pthread_mutex_unlock (&pool_lock);
}
