/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * Fleecing targets: a local file (given, or an unlinked temporary
 * file) or an NBD server reached with libnbd.
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <libnbd.h>
#include <nbdkit-filter.h>

#include "cbw.h"
#include "errors.h"
#include "filelock.h"
#include "target.h"

/* File targets.  fd is set at start-up and never changes, and
 * pread/pwrite/fallocate on it are safe from many threads, so no lock.
 */
static int fd = -1;
static bool is_blockdev;
/* A regular-file target's PATH.lock (see filelock.h), held open for
 * the life of the process; -1 otherwise.  Set at start-up only.
 */
static int lock_fd = -1;

/* NBD targets: a small pool of handles so copies run in parallel.
 * pool_lock protects the slots' busy flags; a busy slot's handle
 * belongs to the thread that took it.  A handle whose command timed
 * out is closed (the reply may still come) and reconnected on next use.
 */
#define POOL_SIZE 4
static struct {
  struct nbd_handle *h;
  bool busy;
} pool[POOL_SIZE];
static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pool_cond;   /* CLOCK_MONOTONIC, see target_open */

static int wait_for_command (struct nbd_handle *h, int64_t cookie,
                             const struct timespec *deadline, int *err,
                             bool *broken);

static int
open_temp (void)
{
  const char *dir = getenv ("TMPDIR");
  char *path;

  if (dir == NULL || *dir == '\0')
    dir = "/var/tmp";
  if (asprintf (&path, "%s/nbdkit-cbw-XXXXXX", dir) == -1) {
    nbdkit_error ("asprintf: %m");
    return -1;
  }
  fd = mkostemp (path, O_CLOEXEC);
  if (fd == -1) {
    nbdkit_error ("cbw: cannot create a temporary fleecing target in %s "
                  "(set TMPDIR or cbw-target=): %m", dir);
    free (path);
    return -1;
  }
  unlink (path);
  nbdkit_debug ("cbw: temporary target in %s", dir);
  free (path);
  return 0;
}

static int
open_file (void)
{
  struct stat st;
  char *errmsg = NULL;

  fd = open (cbw_config.target, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd == -1) {
    nbdkit_error ("cbw-target=%s: %m", cbw_config.target);
    return -1;
  }
  if (fstat (fd, &st) == -1) {
    nbdkit_error ("cbw-target=%s: fstat: %m", cbw_config.target);
    return -1;
  }
  is_blockdev = S_ISBLK (st.st_mode);

  /* One server per target, for the life of the process: PATH.lock
   * records who holds a regular file (the kernel does not say), and
   * the target itself is locked too (also for block devices).
   */
  if (!is_blockdev) {
    lock_fd = filelock_side ("cbw-target", cbw_config.target,
                             "fleecing target", &errmsg);
    if (lock_fd == -1)
      goto refused;
  }
  if (filelock_fd ("cbw-target", cbw_config.target, fd, "fleecing target",
                   &errmsg) == -1)
    goto refused;
  return 0;

 refused:
  nbdkit_error ("%s", errmsg ? errmsg : "cbw-target: cannot lock it");
  free (errmsg);
  close (fd);
  fd = -1;
  return -1;
}

void
target_after_fork (void)
{
  /* nbdkit may have forked into the background: record the pid of the
   * process that serves.
   */
  if (lock_fd >= 0 && filelock_write_pid (lock_fd) == -1)
    nbdkit_debug ("cbw-target=%s: cannot write the pid into its lock "
                  "file: %m", cbw_config.target);
}

int
target_open (void)
{
  pthread_condattr_t attr;

  /* Waits for a free handle honour copy deadlines, which are
   * CLOCK_MONOTONIC times.
   */
  pthread_condattr_init (&attr);
  pthread_condattr_setclock (&attr, CLOCK_MONOTONIC);
  pthread_cond_init (&pool_cond, &attr);
  pthread_condattr_destroy (&attr);

  switch (cbw_config.target_kind) {
  case CBW_TARGET_TEMP: return open_temp ();
  case CBW_TARGET_FILE: return open_file ();
  case CBW_TARGET_NBD: return 0;
  }
  abort ();
}

static void
pool_close_all (void)
{
  size_t i;

  for (i = 0; i < POOL_SIZE; i++) {
    if (pool[i].h)
      nbd_close (pool[i].h);
    pool[i].h = NULL;
  }
}

void
target_close (void)
{
  if (fd >= 0)
    close (fd);
  fd = -1;
  if (lock_fd >= 0)
    close (lock_fd);
  lock_fd = -1;
  pool_close_all ();
}

/* Milliseconds until deadline: -1 if none, 0 if it has passed. */
static int
ms_left (const struct timespec *deadline)
{
  struct timespec now;
  int64_t ms;

  if (deadline == NULL)
    return -1;
  clock_gettime (CLOCK_MONOTONIC, &now);
  ms = (deadline->tv_sec - now.tv_sec) * 1000 +
    (deadline->tv_nsec - now.tv_nsec) / 1000000;
  if (ms <= 0)
    return 0;
  return ms > INT32_MAX ? INT32_MAX : ms;
}

/* now + cbw-timeout in *ts, returning ts; or NULL if there is no
 * timeout.
 */
static const struct timespec *
timeout_deadline (struct timespec *ts)
{
  if (cbw_config.timeout == 0)
    return NULL;
  clock_gettime (CLOCK_MONOTONIC, ts);
  ts->tv_sec += cbw_config.timeout;
  return ts;
}

/* Connect to the target, giving up at deadline (NULL: never).  A
 * server that accepts the connection but never answers the handshake
 * must not hold a copy past its deadline.
 */
static struct nbd_handle *
connect_nbd (const struct timespec *deadline, char **errmsg)
{
  struct nbd_handle *h = nbd_create ();
  const char *why = NULL;

  /* The URI comes from the administrator's command line, so let it
   * name local files such as tls-psk-file=.
   */
  if (h == NULL ||
      nbd_set_uri_allow_local_file (h, true) == -1 ||
      nbd_aio_connect_uri (h, cbw_config.target) == -1)
    goto fail;
  while (!nbd_aio_is_ready (h)) {
    int ms;

    if (nbd_aio_is_dead (h) || nbd_aio_is_closed (h))
      goto fail;
    ms = ms_left (deadline);
    if (ms == 0) {
      why = "timed out (cbw-timeout)";
      goto fail;
    }
    if (nbd_poll (h, ms) == -1)
      goto fail;
  }
  return h;

 fail:
  fleece_errorf (errmsg, "cbw-target=%s: cannot connect: %s",
                 cbw_config.target, why ? why : nbd_get_error ());
  if (h)
    nbd_close (h);
  return NULL;
}

/* Take a connected handle from the pool, waiting for a free slot and
 * connecting if needed, but not past deadline (NULL: no limit).
 */
static int
pool_get (const struct timespec *deadline, int *err)
{
  size_t i;
  char *msg = NULL;

  pthread_mutex_lock (&pool_lock);
  for (;;) {
    for (i = 0; i < POOL_SIZE; i++)
      if (!pool[i].busy)
        goto found;
    if (deadline == NULL)
      pthread_cond_wait (&pool_cond, &pool_lock);
    else if (pthread_cond_timedwait (&pool_cond, &pool_lock,
                                     deadline) == ETIMEDOUT) {
      pthread_mutex_unlock (&pool_lock);
      *err = ETIMEDOUT;
      return -1;
    }
  }
 found:
  pool[i].busy = true;
  pthread_mutex_unlock (&pool_lock);

  if (pool[i].h == NULL) {
    pool[i].h = connect_nbd (deadline, &msg);
    if (pool[i].h == NULL) {
      nbdkit_error ("%s", msg ? msg : "cbw-target: cannot connect");
      *err = msg && strstr (msg, "timed out") ? ETIMEDOUT : EIO;
      free (msg);
      pthread_mutex_lock (&pool_lock);
      pool[i].busy = false;
      pthread_cond_signal (&pool_cond);
      pthread_mutex_unlock (&pool_lock);
      return -1;
    }
  }
  return i;
}

static void
pool_put (int i, bool broken)
{
  if (broken) {
    nbd_close (pool[i].h);
    pool[i].h = NULL;
  }
  pthread_mutex_lock (&pool_lock);
  pool[i].busy = false;
  pthread_cond_signal (&pool_cond);
  pthread_mutex_unlock (&pool_lock);
}

/* The NBD target's size, set by begin_nbd (control thread). */
static uint64_t nbd_capacity;

static int
begin_nbd (uint64_t size, char **errmsg)
{
  struct timespec deadline;
  struct nbd_handle *h;
  int64_t tsize;

  pool_close_all ();            /* a fresh connection per snapshot */
  h = connect_nbd (timeout_deadline (&deadline), errmsg);
  if (h == NULL)
    return -1;
  tsize = nbd_get_size (h);
  if (tsize == -1 || nbd_is_read_only (h) != 0) {
    fleece_errorf (errmsg, "cbw-target=%s: %s", cbw_config.target,
                   tsize == -1 ? nbd_get_error () :
                   "the target export is read-only");
    nbd_close (h);
    return -1;
  }
  if ((uint64_t) tsize < size) {
    fleece_errorf (errmsg, "cbw-target=%s: the target holds %" PRIi64
                   " bytes but the disk has %" PRIu64 "; it must be at "
                   "least as large as the disk",
                   cbw_config.target, tsize, size);
    nbd_close (h);
    return -1;
  }
  pool[0].h = h;
  nbd_capacity = tsize;
  return 0;
}

uint64_t
target_capacity (void)
{
  off_t end;

  if (cbw_config.target_kind == CBW_TARGET_NBD)
    return nbd_capacity;
  if (!is_blockdev)
    return UINT64_MAX;
  end = lseek (fd, 0, SEEK_END);
  return end == -1 ? 0 : (uint64_t) end;
}

int
target_begin (uint64_t size, char **errmsg)
{
  if (cbw_config.target_kind == CBW_TARGET_NBD)
    return begin_nbd (size, errmsg);

  if (!is_blockdev) {
    /* Empty, then sparse at the disk's size. */
    if (ftruncate (fd, 0) == -1 || ftruncate (fd, size) == -1) {
      fleece_errorf (errmsg, "cbw-target: cannot size the target file to "
                     "%" PRIu64 " bytes: %s", size, strerror (errno));
      return -1;
    }
  }
  else {
    off_t end = lseek (fd, 0, SEEK_END);

    if (end == -1 || (uint64_t) end < size) {
      fleece_errorf (errmsg, "cbw-target=%s: the block device is smaller "
                     "than the disk (%" PRIu64 " bytes)",
                     cbw_config.target, size);
      return -1;
    }
  }
  return 0;
}

void
target_end (void)
{
  size_t i;

  switch (cbw_config.target_kind) {
  case CBW_TARGET_NBD:
    /* Give the space back if the server can (not waiting longer than
     * cbw-timeout for it), then disconnect.
     */
    for (i = 0; i < POOL_SIZE; i++) {
      if (pool[i].h && nbd_aio_is_ready (pool[i].h)) {
        struct timespec deadline;
        int64_t size = nbd_get_size (pool[i].h);
        int err;
        bool broken;

        if (size > 0 && nbd_can_trim (pool[i].h) == 1)
          wait_for_command (pool[i].h,
                    nbd_aio_trim (pool[i].h, size, 0,
                                  NBD_NULL_COMPLETION, 0),
                    timeout_deadline (&deadline), &err, &broken);
        break;
      }
    }
    pool_close_all ();
    break;
  case CBW_TARGET_FILE:
  case CBW_TARGET_TEMP:
    if (!is_blockdev) {
      if (ftruncate (fd, 0) == -1)
        nbdkit_debug ("cbw: truncating the target: %m");
    }
    else {
      off_t end = lseek (fd, 0, SEEK_END);

      if (end > 0)
        target_release (0, end);
    }
    break;
  }
}

/* Run one command on an NBD handle until it completes or the deadline
 * passes.  Returns 0, or -1 with *err (ETIMEDOUT on timeout) and
 * *broken set if the handle must not be used again.
 */
static int
wait_for_command (struct nbd_handle *h, int64_t cookie,
          const struct timespec *deadline, int *err, bool *broken)
{
  int r;

  if (cookie == -1)
    goto fail;
  while ((r = nbd_aio_command_completed (h, cookie)) == 0) {
    int ms = ms_left (deadline);

    if (ms == 0) {
      *err = ETIMEDOUT;
      *broken = true;
      return -1;
    }
    if (nbd_poll (h, ms) == -1)
      goto fail;
  }
  if (r == 1)
    return 0;
 fail:
  *err = nbd_get_errno () ? nbd_get_errno () : EIO;
  nbdkit_debug ("cbw: target: %s", nbd_get_error ());
  /* A dead connection is reconnected on next use. */
  *broken = !nbd_aio_is_ready (h) && !nbd_aio_is_processing (h);
  return -1;
}

int
target_write (const void *buf, uint32_t count, uint64_t offset,
              const struct timespec *deadline, int *err)
{
  if (cbw_config.target_kind == CBW_TARGET_NBD) {
    bool broken = false;
    int i, r;

    i = pool_get (deadline, err);
    if (i == -1)
      return -1;
    r = wait_for_command (pool[i].h,
                  nbd_aio_pwrite (pool[i].h, buf, count, offset,
                                  NBD_NULL_COMPLETION, 0),
                  deadline, err, &broken);
    pool_put (i, broken);
    return r;
  }

  while (count > 0) {
    ssize_t n = pwrite (fd, buf, count, offset);

    if (n == -1) {
      *err = errno;
      return -1;
    }
    buf = (const char *) buf + n;
    count -= n;
    offset += n;
  }
  if (ms_left (deadline) == 0) {
    *err = ETIMEDOUT;
    return -1;
  }
  return 0;
}

int
target_read (void *buf, uint32_t count, uint64_t offset, int *err)
{
  if (cbw_config.target_kind == CBW_TARGET_NBD) {
    struct timespec deadline;
    /* cbw-timeout bounds reads too: a hung target must not hold the
     * snapshot (and so snapshot-end) forever.
     */
    const struct timespec *dl = timeout_deadline (&deadline);
    bool broken = false;
    int i, r;

    i = pool_get (dl, err);
    if (i == -1)
      return -1;
    r = wait_for_command (pool[i].h,
                  nbd_aio_pread (pool[i].h, buf, count, offset,
                                 NBD_NULL_COMPLETION, 0),
                  dl, err, &broken);
    pool_put (i, broken);
    return r;
  }

  while (count > 0) {
    ssize_t n = pread (fd, buf, count, offset);

    if (n == -1) {
      *err = errno;
      return -1;
    }
    if (n == 0) {               /* past the end: a hole */
      memset (buf, 0, count);
      break;
    }
    buf = (char *) buf + n;
    count -= n;
    offset += n;
  }
  return 0;
}

void
target_release (uint64_t offset, uint64_t count)
{
  if (cbw_config.target_kind == CBW_TARGET_NBD) {
    struct timespec deadline;
    const struct timespec *dl = timeout_deadline (&deadline);
    int err, i = pool_get (dl, &err);
    bool broken = false;

    if (i == -1)
      return;
    if (nbd_can_trim (pool[i].h) == 1)
      wait_for_command (pool[i].h,
                nbd_aio_trim (pool[i].h, count, offset,
                              NBD_NULL_COMPLETION, 0),
                dl, &err, &broken);
    pool_put (i, broken);
    return;
  }
  if (fallocate (fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                 offset, count) == -1)
    nbdkit_debug ("cbw: releasing target space: %m");
}
