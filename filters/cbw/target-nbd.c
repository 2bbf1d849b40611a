/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * NBD targets (see target-ops.h): cbw-target=URI, reached with libnbd
 * (TLS and TLS-PSK as the URI says).  Nothing connects before begin,
 * so the target server may start after us.  Every wait on the server
 * (connecting, each command, a free handle) gives up at the deadline
 * target.c passes, so a hung server costs at most cbw-timeout.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libnbd.h>
#include <nbdkit-filter.h>

#include "errors.h"
#include "target-ops.h"

/* A pool of handles, so that copies run in parallel: as many as
 * nbdkit's default worker threads per connection (16), since each
 * handle carries one command at a time.  With 4, sixteen guest writes
 * in flight that each need a copy queued behind four 5 ms target
 * writes (docs/performance.md).  Handles connect on first use.
 */
#define POOL_SIZE 16

/* Lock: lock protects the slots' busy flags.
 * Invariants: a busy slot's handle belongs to the thread that took it
 * (only that thread uses, closes or connects it); a free slot's handle
 * is NULL (connected on next use) or one its last user left usable.
 * A handle whose command timed out (the reply may still come) or whose
 * connection died is closed when it is given back.  begin and end run
 * with no command in flight (target.h), so they use the handles
 * without taking slots.
 */
struct nbd_target {
  struct target t;              /* first: a struct target * is one of us */
  const char *uri;              /* cbw-target=URI (not ours) */
  pthread_mutex_t lock;
  pthread_cond_t cond;          /* a slot became free; CLOCK_MONOTONIC */
  struct {
    struct nbd_handle *h;
    bool busy;
  } pool[POOL_SIZE];
  uint64_t size;                /* the export's size, set by begin */
};

static const struct target_ops nbd_ops;

/*----------------------------------------------------------------------
 * Waiting for the server.
 */

enum wait_result { WAIT_DONE, WAIT_FAILED, WAIT_TIMEDOUT };

/* Whether what we wait for happened: 1 yes, -1 never will, 0 not yet. */
typedef int wait_done_fn (struct nbd_handle *h, int64_t cookie);

static int
connected (struct nbd_handle *h, int64_t unused)
{
  if (nbd_aio_is_ready (h))
    return 1;
  if (nbd_aio_is_dead (h) || nbd_aio_is_closed (h))
    return -1;
  return 0;
}

static int
completed (struct nbd_handle *h, int64_t cookie)
{
  return nbd_aio_command_completed (h, cookie);
}

/* Drive h until done says so or the deadline passes.  On WAIT_FAILED
 * libnbd's error says why.
 */
static enum wait_result
wait_until (struct nbd_handle *h, wait_done_fn *done, int64_t cookie,
            const struct timespec *deadline)
{
  int r;

  while ((r = done (h, cookie)) == 0) {
    int ms = target_ms_left (deadline);

    if (ms == 0)
      return WAIT_TIMEDOUT;
    if (nbd_poll (h, ms) == -1)
      return WAIT_FAILED;
  }
  return r == 1 ? WAIT_DONE : WAIT_FAILED;
}

/* Connect to the target, giving up at deadline.  A server that
 * accepts the connection but never answers the handshake must not
 * hold a copy past its deadline.  Returns NULL with *err (ETIMEDOUT,
 * or EIO: a target we cannot reach is an I/O error to the guest) and
 * *errmsg saying why.
 */
static struct nbd_handle *
connect_nbd (struct nbd_target *nt, const struct timespec *deadline,
             int *err, char **errmsg)
{
  struct nbd_handle *h = nbd_create ();
  enum wait_result w = WAIT_FAILED;

  /* The URI comes from the administrator's command line, so let it
   * name local files such as tls-psk-file=.
   */
  if (h != NULL &&
      nbd_set_uri_allow_local_file (h, true) != -1 &&
      nbd_aio_connect_uri (h, nt->uri) != -1) {
    w = wait_until (h, connected, 0, deadline);
    if (w == WAIT_DONE)
      return h;
  }
  *err = w == WAIT_TIMEDOUT ? ETIMEDOUT : EIO;
  fleece_errorf (errmsg, "cbw-target=%s: cannot connect: %s", nt->uri,
                 w == WAIT_TIMEDOUT ? "timed out (cbw-timeout)" :
                 nbd_get_error ());
  if (h)
    nbd_close (h);
  return NULL;
}

/*----------------------------------------------------------------------
 * Commands.
 */

/* One command: what to send and where. */
struct cmd {
  enum { CMD_WRITE, CMD_READ, CMD_TRIM } kind;
  const void *src;              /* CMD_WRITE */
  void *dst;                    /* CMD_READ */
  uint64_t count;
  uint64_t offset;
};

static int64_t
issue (struct nbd_handle *h, const struct cmd *c)
{
  switch (c->kind) {
  case CMD_WRITE:
    return nbd_aio_pwrite (h, c->src, c->count, c->offset,
                           NBD_NULL_COMPLETION, 0);
  case CMD_READ:
    return nbd_aio_pread (h, c->dst, c->count, c->offset,
                          NBD_NULL_COMPLETION, 0);
  case CMD_TRIM:
    return nbd_aio_trim (h, c->count, c->offset, NBD_NULL_COMPLETION, 0);
  }
  abort ();
}

/* Run c on h until it completes or the deadline passes.  Returns 0,
 * or -1 with *err (ETIMEDOUT on timeout, else the server's or the
 * connection's errno); *broken says whether h must be closed.  A trim
 * the server does not offer does nothing and succeeds.
 */
static int
run_on (struct nbd_handle *h, const struct cmd *c,
        const struct timespec *deadline, int *err, bool *broken)
{
  int64_t cookie;
  enum wait_result w = WAIT_FAILED;

  *broken = false;
  if (c->kind == CMD_TRIM && nbd_can_trim (h) != 1)
    return 0;
  cookie = issue (h, c);
  if (cookie != -1)
    w = wait_until (h, completed, cookie, deadline);
  switch (w) {
  case WAIT_DONE:
    return 0;
  case WAIT_TIMEDOUT:
    *err = ETIMEDOUT;
    *broken = true;
    return -1;
  case WAIT_FAILED:
    break;
  }
  *err = nbd_get_errno () ? nbd_get_errno () : EIO;
  nbdkit_debug ("cbw: target: %s", nbd_get_error ());
  /* A dead connection is reconnected on next use. */
  *broken = !nbd_aio_is_ready (h) && !nbd_aio_is_processing (h);
  return -1;
}

/*----------------------------------------------------------------------
 * The pool.
 */

static void
pool_close_all (struct nbd_target *nt)
{
  size_t i;

  for (i = 0; i < POOL_SIZE; i++) {
    if (nt->pool[i].h)
      nbd_close (nt->pool[i].h);
    nt->pool[i].h = NULL;
  }
}

static void
pool_put (struct nbd_target *nt, size_t i, bool broken)
{
  if (broken && nt->pool[i].h) {
    nbd_close (nt->pool[i].h);
    nt->pool[i].h = NULL;
  }
  pthread_mutex_lock (&nt->lock);
  nt->pool[i].busy = false;
  pthread_cond_signal (&nt->cond);
  pthread_mutex_unlock (&nt->lock);
}

/* Take a connected handle from the pool, waiting for a free slot and
 * connecting if needed, but not past deadline.  Returns the slot, or
 * -1 with *err.
 */
static int
pool_get (struct nbd_target *nt, const struct timespec *deadline, int *err)
{
  size_t i;
  char *msg = NULL;

  pthread_mutex_lock (&nt->lock);
  for (;;) {
    for (i = 0; i < POOL_SIZE; i++)
      if (!nt->pool[i].busy)
        goto found;
    if (deadline == NULL)
      pthread_cond_wait (&nt->cond, &nt->lock);
    else if (pthread_cond_timedwait (&nt->cond, &nt->lock,
                                     deadline) == ETIMEDOUT) {
      pthread_mutex_unlock (&nt->lock);
      *err = ETIMEDOUT;
      return -1;
    }
  }
 found:
  nt->pool[i].busy = true;
  pthread_mutex_unlock (&nt->lock);

  if (nt->pool[i].h == NULL) {
    nt->pool[i].h = connect_nbd (nt, deadline, err, &msg);
    if (nt->pool[i].h == NULL) {
      nbdkit_error ("%s", msg ? msg : "cbw-target: cannot connect");
      free (msg);
      pool_put (nt, i, false);
      return -1;
    }
  }
  return i;
}

/* The one sequence every I/O takes: a handle from the pool, the
 * command, the handle back (closed if it broke).
 */
static int
run_pooled (struct nbd_target *nt, const struct cmd *c,
            const struct timespec *deadline, int *err)
{
  bool broken;
  int i, r;

  i = pool_get (nt, deadline, err);
  if (i == -1)
    return -1;
  r = run_on (nt->pool[i].h, c, deadline, err, &broken);
  pool_put (nt, i, broken);
  return r;
}

/*----------------------------------------------------------------------
 * The ops.
 */

struct target *
target_nbd_open (const char *uri)
{
  struct nbd_target *nt = calloc (1, sizeof *nt);
  pthread_condattr_t attr;

  if (nt == NULL) {
    nbdkit_error ("calloc: %m");
    return NULL;
  }
  nt->t.ops = &nbd_ops;
  nt->uri = uri;
  pthread_mutex_init (&nt->lock, NULL);
  /* Waits for a free handle honour deadlines, which are
   * CLOCK_MONOTONIC times.
   */
  pthread_condattr_init (&attr);
  pthread_condattr_setclock (&attr, CLOCK_MONOTONIC);
  pthread_cond_init (&nt->cond, &attr);
  pthread_condattr_destroy (&attr);
  return &nt->t;
}

static void
nbd_target_close (struct target *t)
{
  struct nbd_target *nt = (struct nbd_target *) t;

  pool_close_all (nt);
  pthread_cond_destroy (&nt->cond);
  pthread_mutex_destroy (&nt->lock);
  free (nt);
}

static int
nbd_target_begin (struct target *t, uint64_t size,
                  const struct timespec *deadline, char **errmsg)
{
  struct nbd_target *nt = (struct nbd_target *) t;
  struct nbd_handle *h;
  int64_t tsize;
  int err;

  pool_close_all (nt);          /* a fresh connection per snapshot */
  h = connect_nbd (nt, deadline, &err, errmsg);
  if (h == NULL)
    return -1;
  tsize = nbd_get_size (h);
  if (tsize == -1 || nbd_is_read_only (h) != 0) {
    fleece_errorf (errmsg, "cbw-target=%s: %s", nt->uri,
                   tsize == -1 ? nbd_get_error () :
                   "the target export is read-only");
    nbd_close (h);
    return -1;
  }
  if ((uint64_t) tsize < size) {
    fleece_errorf (errmsg, "cbw-target=%s: the target holds %" PRIi64
                   " bytes but the disk has %" PRIu64 "; it must be at "
                   "least as large as the disk", nt->uri, tsize, size);
    nbd_close (h);
    return -1;
  }
  nt->pool[0].h = h;
  nt->size = tsize;
  return 0;
}

static uint64_t
nbd_target_capacity (struct target *t)
{
  return ((struct nbd_target *) t)->size;
}

static void
nbd_target_end (struct target *t, const struct timespec *deadline)
{
  struct nbd_target *nt = (struct nbd_target *) t;
  size_t i;

  /* Give the space back if the server can, through the first handle
   * still connected, then disconnect.
   */
  for (i = 0; i < POOL_SIZE; i++) {
    struct nbd_handle *h = nt->pool[i].h;

    if (h && nbd_aio_is_ready (h)) {
      int64_t size = nbd_get_size (h);
      struct cmd c = { .kind = CMD_TRIM, .count = size, .offset = 0 };
      bool broken;
      int err;

      if (size > 0)
        run_on (h, &c, deadline, &err, &broken);
      break;
    }
  }
  pool_close_all (nt);
}

static int
nbd_target_write (struct target *t, const void *buf, uint32_t count,
                  uint64_t offset, const struct timespec *deadline, int *err)
{
  struct cmd c = { .kind = CMD_WRITE, .src = buf, .count = count,
                   .offset = offset };

  return run_pooled ((struct nbd_target *) t, &c, deadline, err);
}

static int
nbd_target_read (struct target *t, void *buf, uint32_t count,
                 uint64_t offset, const struct timespec *deadline, int *err)
{
  struct cmd c = { .kind = CMD_READ, .dst = buf, .count = count,
                   .offset = offset };

  return run_pooled ((struct nbd_target *) t, &c, deadline, err);
}

static int
nbd_target_release (struct target *t, uint64_t offset, uint64_t count,
                    const struct timespec *deadline, int *err)
{
  struct cmd c = { .kind = CMD_TRIM, .count = count, .offset = offset };

  return run_pooled ((struct nbd_target *) t, &c, deadline, err);
}

static const struct target_ops nbd_ops = {
  .name = "nbd",
  .capacity = nbd_target_capacity,
  .close = nbd_target_close,
  .begin = nbd_target_begin,
  .end = nbd_target_end,
  .write = nbd_target_write,
  .read = nbd_target_read,
  .release = nbd_target_release,
};
