/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * The destination of a backup job (job-dest.h).
 *
 * File: one descriptor, pwrite/fallocate from any thread (the kernel
 * serialises nothing we need).
 *
 * NBD: one libnbd connection, because an export such as qemu-nbd's
 * (shared=1 by default) accepts one client, and because writes on
 * several connections are only flushed together when the server
 * advertises multi-conn.  Several requests are in flight on it at once:
 * each worker submits its own request with the aio API and then waits
 * for it.  Waiting uses a leader/follower scheme so that exactly one
 * thread at a time drives the connection with nbd_poll (libnbd holds
 * its handle lock inside nbd_poll, and completion callbacks run in
 * that thread):
 *
 * lock (mutex) protects polling and dead, and goes with cond.
 *   polling: a thread is inside nbd_poll; the others wait on cond and
 *     are woken (broadcast) each time nbd_poll returns.
 *   dead: the connection failed (the message), every request fails.
 * A request's own done flag is written by its completion callback
 * (in the polling thread, with libnbd's lock held, so it must not take
 * lock: worker threads hold lock while they call no libnbd function,
 * and call libnbd functions without lock) and read atomically.  The
 * poller broadcasts after nbd_poll returns, under lock, so a waiter
 * that saw done == 0 under lock cannot miss the wake-up.
 *
 * The number of requests in flight is bounded by the number of
 * workers, and each request by the job's piece size.
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <libnbd.h>

#include "errors.h"
#include "job-dest.h"

/* Longest time to connect to an NBD target at backup-start. */
#define CONNECT_TIMEOUT_MS 10000
/* Largest single zero request (NBD servers limit them; files do not
 * care).
 */
#define ZERO_PIECE (32 * 1024 * 1024)

struct job_dest {
  char *target;                 /* as given, for messages */
  bool nbd;
  bool zeroed;                  /* reads as zeroes before the job */

  /* File. */
  int fd;
  bool created;                 /* dest_open created it */
  bool punch;                   /* try FALLOC_FL_PUNCH_HOLE */

  /* NBD. */
  struct nbd_handle *h;
  bool can_zero, can_flush;
  pthread_mutex_t lock;
  pthread_cond_t cond;
  bool polling;                 /* see lock */
  bool dead;                    /* see lock */
  char dead_why[256];           /* set with dead */
};

bool
dest_is_uri (const char *target)
{
  static const char *const schemes[] = {
    "nbd://", "nbds://", "nbd+unix://", "nbds+unix://", NULL
  };
  size_t i;

  for (i = 0; schemes[i]; i++)
    if (strncmp (target, schemes[i], strlen (schemes[i])) == 0)
      return true;
  return false;
}

static struct job_dest *
dest_new (const char *target, bool nbd)
{
  struct job_dest *d = calloc (1, sizeof *d);

  if (d == NULL)
    return NULL;
  d->target = strdup (target);
  if (d->target == NULL) {
    free (d);
    return NULL;
  }
  d->nbd = nbd;
  d->fd = -1;
  d->punch = true;
  pthread_mutex_init (&d->lock, NULL);
  pthread_cond_init (&d->cond, NULL);
  return d;
}

static int
open_file (struct job_dest *d, bool full, uint64_t size, char **errmsg)
{
  const char *path = d->target;
  char *dir, *slash;
  struct stat st;

  if (path[0] != '/')
    return fleece_errorf (errmsg, "target=%s: give an absolute path (nbdkit "
                          "does not run in your working directory) or an "
                          "NBD URI (nbd://, nbd+unix://...)", path);
  /* Name the missing directory rather than the file. */
  dir = strdup (path);
  if (dir == NULL)
    return fleece_errorf (errmsg, "out of memory");
  slash = strrchr (dir, '/');
  if (slash == dir)
    slash[1] = '\0';
  else
    *slash = '\0';
  if (stat (dir, &st) == -1 || !S_ISDIR (st.st_mode)) {
    fleece_errorf (errmsg, "target=%s: directory %s does not exist; "
                   "create it first", path, dir);
    free (dir);
    return -1;
  }
  free (dir);

  if (full) {
    d->fd = open (path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
                  0600);
    if (d->fd >= 0)
      d->created = true;
    else if (errno == EEXIST)
      d->fd = open (path, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
  }
  else
    d->fd = open (path, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
  if (d->fd == -1) {
    if (errno == ELOOP)
      return fleece_errorf (errmsg, "target=%s is a symbolic link; backups "
                            "are never written through one, give the real "
                            "path", path);
    if (errno == ENOENT && !full)
      return fleece_errorf (errmsg, "target=%s does not exist; an "
                            "incremental backup updates the previous "
                            "backup in place (give its path, or use "
                            "sync=full)", path);
    return fleece_errorf (errmsg, "target=%s: %s", path, strerror (errno));
  }
  if (fstat (d->fd, &st) == -1)
    return fleece_errorf (errmsg, "target=%s: fstat: %s", path,
                          strerror (errno));
  if (!S_ISREG (st.st_mode))
    return fleece_errorf (errmsg, "target=%s is not a regular file; give a "
                          "file or an NBD URI", path);
  if (!full && (uint64_t) st.st_size < size)
    return fleece_errorf (errmsg, "target=%s holds %" PRIu64 " bytes, less "
                          "than the disk's %" PRIu64 "; an incremental "
                          "backup updates the previous backup of this disk",
                          path, (uint64_t) st.st_size, size);
  return 0;
}

static int
open_nbd (struct job_dest *d, uint64_t size, char **errmsg)
{
  struct timespec t0, t;
  int64_t tsize;
  long ms;

  d->h = nbd_create ();
  if (d->h == NULL)
    return fleece_errorf (errmsg, "target=%s: %s", d->target,
                          nbd_get_error ());
  if (nbd_aio_connect_uri (d->h, d->target) == -1)
    return fleece_errorf (errmsg, "target=%s: %s", d->target,
                          nbd_get_error ());
  /* The control thread waits here: bounded, never for ever. */
  clock_gettime (CLOCK_MONOTONIC, &t0);
  while (!nbd_aio_is_ready (d->h)) {
    if (nbd_aio_is_dead (d->h) || nbd_aio_is_closed (d->h))
      return fleece_errorf (errmsg, "target=%s: cannot connect: %s",
                            d->target, nbd_get_error ());
    clock_gettime (CLOCK_MONOTONIC, &t);
    ms = CONNECT_TIMEOUT_MS - ((t.tv_sec - t0.tv_sec) * 1000 +
                               (t.tv_nsec - t0.tv_nsec) / 1000000);
    if (ms <= 0)
      return fleece_errorf (errmsg, "target=%s: the server did not finish "
                            "the handshake within %d s", d->target,
                            CONNECT_TIMEOUT_MS / 1000);
    if (nbd_poll (d->h, ms) == -1)
      return fleece_errorf (errmsg, "target=%s: cannot connect: %s",
                            d->target, nbd_get_error ());
  }
  if (nbd_is_read_only (d->h) != 0)
    return fleece_errorf (errmsg, "target=%s: the export is read-only",
                          d->target);
  tsize = nbd_get_size (d->h);
  if (tsize == -1)
    return fleece_errorf (errmsg, "target=%s: %s", d->target,
                          nbd_get_error ());
  if ((uint64_t) tsize < size)
    return fleece_errorf (errmsg, "target=%s: the export holds %" PRIi64
                          " bytes, less than the disk's %" PRIu64
                          "; make it at least as large", d->target,
                          tsize, size);
  d->can_zero = nbd_can_zero (d->h) == 1;
  d->can_flush = nbd_can_flush (d->h) == 1;
  return 0;
}

struct job_dest *
dest_open (const char *target, bool full, uint64_t size, char **errmsg)
{
  struct job_dest *d = dest_new (target, dest_is_uri (target));
  int r;

  if (d == NULL) {
    fleece_errorf (errmsg, "out of memory");
    return NULL;
  }
  r = d->nbd ? open_nbd (d, size, errmsg) : open_file (d, full, size, errmsg);
  if (r == -1) {
    dest_discard_created (d);
    dest_close (d);
    return NULL;
  }
  return d;
}

bool
dest_starts_zeroed (const struct job_dest *d)
{
  return d->zeroed;
}

void
dest_declare_zeroed (struct job_dest *d)
{
  d->zeroed = true;
}

int
dest_prepare_full (struct job_dest *d, uint64_t size, char **errmsg)
{
  if (d->nbd)
    return 0;
  if (ftruncate (d->fd, 0) == -1 || ftruncate (d->fd, size) == -1)
    return fleece_errorf (errmsg, "target %s: cannot truncate it to %"
                          PRIu64 " bytes: %s", d->target, size,
                          strerror (errno));
  d->zeroed = true;
  return 0;
}

/*----------------------------------------------------------------------
 * NBD requests.
 */

struct nbd_req {
  int done;                     /* atomic: set by the callback */
  int err;                      /* valid once done */
};

static int
req_done (void *opaque, int *error)
{
  struct nbd_req *r = opaque;

  r->err = *error;
  __atomic_store_n (&r->done, 1, __ATOMIC_RELEASE);
  return 1;                     /* retire the command */
}

/* Wait for r, driving the connection if no other thread does. */
static int
nbd_wait (struct job_dest *d, struct nbd_req *r, const char *what,
          uint64_t offset, char **errmsg)
{
  int pr;

  pthread_mutex_lock (&d->lock);
  while (!__atomic_load_n (&r->done, __ATOMIC_ACQUIRE) && !d->dead) {
    if (d->polling) {
      pthread_cond_wait (&d->cond, &d->lock);
      continue;
    }
    d->polling = true;
    pthread_mutex_unlock (&d->lock);
    pr = nbd_poll (d->h, 200);
    pthread_mutex_lock (&d->lock);
    d->polling = false;
    if ((pr == -1 || nbd_aio_is_dead (d->h) || nbd_aio_is_closed (d->h)) &&
        !d->dead && !__atomic_load_n (&r->done, __ATOMIC_ACQUIRE)) {
      d->dead = true;
      snprintf (d->dead_why, sizeof d->dead_why, "%s",
                nbd_get_error () ? nbd_get_error ()
                : "the connection was lost");
    }
    pthread_cond_broadcast (&d->cond);
  }
  pthread_mutex_unlock (&d->lock);

  if (__atomic_load_n (&r->done, __ATOMIC_ACQUIRE)) {
    if (r->err == 0)
      return 0;
    return fleece_errorf (errmsg, "target %s: %s at offset %" PRIu64
                          " failed: %s", d->target, what, offset,
                          strerror (r->err));
  }
  /* The connection died with r in flight; r is never touched again
   * (libnbd retires every command of a dead handle).
   */
  return fleece_errorf (errmsg, "target %s: %s at offset %" PRIu64
                        " failed: %s", d->target, what, offset, d->dead_why);
}

static int
nbd_submit_failed (struct job_dest *d, const char *what, uint64_t offset,
                   char **errmsg)
{
  return fleece_errorf (errmsg, "target %s: %s at offset %" PRIu64
                        " failed: %s", d->target, what, offset,
                        nbd_get_error ());
}

int
dest_write (struct job_dest *d, const void *buf, uint32_t count,
            uint64_t offset, char **errmsg)
{
  const char *p = buf;
  ssize_t n;

  if (d->nbd) {
    struct nbd_req r = { 0, 0 };
    nbd_completion_callback cb = { .callback = req_done, .user_data = &r };

    if (nbd_aio_pwrite (d->h, buf, count, offset, cb, 0) == -1)
      return nbd_submit_failed (d, "write", offset, errmsg);
    return nbd_wait (d, &r, "write", offset, errmsg);
  }
  const uint64_t start = offset;
  const uint32_t len = count;

  while (count > 0) {
    n = pwrite (d->fd, p, count, offset);
    if (n == -1 && errno == EINTR)
      continue;
    if (n <= 0)
      return fleece_errorf (errmsg, "target %s: write at offset %" PRIu64
                            " failed: %s", d->target, offset,
                            n == 0 ? "no progress" : strerror (errno));
    p += n;
    count -= n;
    offset += n;
  }
  /* Start writing the piece back now, without waiting: the job's final
   * fdatasync then finds little left to do, and the target's dirty
   * pages never pile up (nbdcopy does the same).  Best effort.
   */
  sync_file_range (d->fd, start, len, SYNC_FILE_RANGE_WRITE);
  return 0;
}

/* Zero data, for targets that cannot zero otherwise. */
static int
write_zeroes (struct job_dest *d, uint64_t count, uint64_t offset,
              char **errmsg)
{
  static const char zeroes[65536];
  uint32_t n;

  while (count > 0) {
    n = count < sizeof zeroes ? count : sizeof zeroes;
    if (dest_write (d, zeroes, n, offset, errmsg) == -1)
      return -1;
    count -= n;
    offset += n;
  }
  return 0;
}

int
dest_zero (struct job_dest *d, uint64_t count, uint64_t offset,
           char **errmsg)
{
  uint32_t n;

  while (count > 0) {
    n = count < ZERO_PIECE ? count : ZERO_PIECE;
    if (d->nbd && d->can_zero) {
      struct nbd_req r = { 0, 0 };
      nbd_completion_callback cb = { .callback = req_done, .user_data = &r };

      if (nbd_aio_zero (d->h, n, offset, cb, 0) == -1)
        return nbd_submit_failed (d, "zero", offset, errmsg);
      if (nbd_wait (d, &r, "zero", offset, errmsg) == -1)
        return -1;
    }
    else if (!d->nbd &&
             __atomic_load_n (&d->punch, __ATOMIC_RELAXED) &&
             fallocate (d->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                        offset, n) == 0)
      ;
    else {
      if (!d->nbd && (errno == EOPNOTSUPP || errno == ENOSYS))
        __atomic_store_n (&d->punch, false, __ATOMIC_RELAXED);
      if (write_zeroes (d, n, offset, errmsg) == -1)
        return -1;
    }
    count -= n;
    offset += n;
  }
  return 0;
}

int
dest_flush (struct job_dest *d, char **errmsg)
{
  if (d->nbd) {
    struct nbd_req r = { 0, 0 };
    nbd_completion_callback cb = { .callback = req_done, .user_data = &r };

    if (!d->can_flush)
      return 0;
    if (nbd_aio_flush (d->h, cb, 0) == -1)
      return nbd_submit_failed (d, "flush", 0, errmsg);
    return nbd_wait (d, &r, "flush", 0, errmsg);
  }
  if (fdatasync (d->fd) == -1)
    return fleece_errorf (errmsg, "target %s: fdatasync failed: %s",
                          d->target, strerror (errno));
  return 0;
}

void
dest_discard_created (struct job_dest *d)
{
  if (d && d->created) {
    unlink (d->target);
    d->created = false;
  }
}

void
dest_close (struct job_dest *d)
{
  if (d == NULL)
    return;
  if (d->fd >= 0)
    close (d->fd);
  if (d->h) {
    if (nbd_aio_is_ready (d->h))
      nbd_shutdown (d->h, 0);
    nbd_close (d->h);
  }
  pthread_mutex_destroy (&d->lock);
  pthread_cond_destroy (&d->cond);
  free (d->target);
  free (d);
}
