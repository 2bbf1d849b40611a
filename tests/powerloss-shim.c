/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * LD_PRELOAD shim for the power-loss test (test-bitmap-powerloss.sh):
 * records, in the order they happen, every change nbdkit makes to the
 * bitmap file (and its PATH.tmp), every sync of them or of their
 * directory, every rename, and every data write, zero or trim issued
 * to the disk file.  One line per event, appended to $FLEECE_PL_LOG:
 *
 *   O id path        a matching file was opened as inode id (a dup
 *                    of its descriptor keeps the id)
 *   W id off hex     bytes written at off (logged after the write)
 *   S id             fsync/fdatasync of inode id returned
 *   R from to        rename returned
 *   SD               fsync of the directory returned
 *   D off len        a write/zero/trim of the disk, logged BEFORE it is
 *                    issued (so it may have reached the disk from then)
 *
 * Environment: FLEECE_PL_LOG, FLEECE_PL_BM (bitmap file path),
 * FLEECE_PL_DISK (disk path).  Test-only code.
 */

#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#define MAXFD 4096

enum kind { NONE, BM, DISK, DIR_ };

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static enum kind kinds[MAXFD];
static int ids[MAXFD];
static off_t pos[MAXFD];
static int next_id = 1;
static int log_fd = -2;
static const char *bm, *disk;
static char bmtmp[4096], bmdir[4096];

static ssize_t (*real_write) (int, const void *, size_t);
static ssize_t (*real_pwrite) (int, const void *, size_t, off_t);

/* Called with lock held, or before any thread: opens the log with the
 * real open, never through the wrappers below.
 */
static void
init (void)
{
  const char *l;
  char *c;
  int (*real_open) (const char *, int, ...);

  if (log_fd != -2)
    return;
  real_open = dlsym (RTLD_NEXT, "open");
  real_write = dlsym (RTLD_NEXT, "write");
  real_pwrite = dlsym (RTLD_NEXT, "pwrite");
  l = getenv ("FLEECE_PL_LOG");
  bm = getenv ("FLEECE_PL_BM");
  disk = getenv ("FLEECE_PL_DISK");
  log_fd = l ? real_open (l, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600) : -1;
  if (bm) {
    snprintf (bmtmp, sizeof bmtmp, "%s.tmp", bm);
    c = strdup (bm);
    snprintf (bmdir, sizeof bmdir, "%s", dirname (c));
    free (c);
  }
}

static void
ensure (void)
{
  if (__atomic_load_n (&log_fd, __ATOMIC_ACQUIRE) == -2) {
    pthread_mutex_lock (&lock);
    init ();
    pthread_mutex_unlock (&lock);
  }
}

/* One record, written with one write(2) under the lock. */
static void
rec (const char *fmt, ...)
{
  char small[256];
  va_list a;

  va_start (a, fmt);
  vsnprintf (small, sizeof small, fmt, a);
  va_end (a);
  if (log_fd >= 0)
    real_write (log_fd, small, strlen (small));
}

static void
rec_write (int id, off_t off, const void *buf, size_t n)
{
  static const char hx[] = "0123456789abcdef";
  char *line = malloc (n * 2 + 64);
  const unsigned char *p = buf;
  size_t i, k;

  if (line == NULL)
    abort ();
  k = sprintf (line, "W %d %lld ", id, (long long) off);
  for (i = 0; i < n; i++) {
    line[k++] = hx[p[i] >> 4];
    line[k++] = hx[p[i] & 15];
  }
  line[k++] = '\n';
  if (log_fd >= 0)
    real_write (log_fd, line, k);
  free (line);
}

static void
opened (int fd, const char *path)
{
  enum kind k = NONE;

  if (fd < 0 || fd >= MAXFD)
    return;
  pthread_mutex_lock (&lock);
  init ();
  if (bm && (strcmp (path, bm) == 0 || strcmp (path, bmtmp) == 0))
    k = BM;
  else if (disk && strcmp (path, disk) == 0)
    k = DISK;
  else if (bm && strcmp (path, bmdir) == 0)
    k = DIR_;
  kinds[fd] = k;
  pos[fd] = 0;
  if (k == BM) {
    ids[fd] = next_id++;
    rec ("O %d %s\n", ids[fd], path);
  }
  pthread_mutex_unlock (&lock);
}

#define OPEN_BODY(callreal)                             \
  mode_t mode = 0;                                      \
  int fd;                                               \
  if (flags & (O_CREAT | O_TMPFILE)) {                  \
    va_list a;                                          \
    va_start (a, flags);                                \
    mode = va_arg (a, mode_t);                          \
    va_end (a);                                         \
  }                                                     \
  fd = callreal;                                        \
  if (fd >= 0)                                          \
    opened (fd, path);                                  \
  return fd;

int
open (const char *path, int flags, ...)
{
  static int (*r) (const char *, int, ...);
  if (!r) r = dlsym (RTLD_NEXT, "open");
  OPEN_BODY (r (path, flags, mode))
}

int
open64 (const char *path, int flags, ...)
{
  static int (*r) (const char *, int, ...);
  if (!r) r = dlsym (RTLD_NEXT, "open64");
  OPEN_BODY (r (path, flags, mode))
}

int
openat (int dfd, const char *path, int flags, ...)
{
  static int (*r) (int, const char *, int, ...);
  if (!r) r = dlsym (RTLD_NEXT, "openat");
  OPEN_BODY (r (dfd, path, flags, mode))
}

int
__openat_2 (int dfd, const char *path, int flags)
{
  static int (*r) (int, const char *, int);
  int fd;

  if (!r) r = dlsym (RTLD_NEXT, "__openat_2");
  fd = r (dfd, path, flags);
  if (fd >= 0)
    opened (fd, path);
  return fd;
}

static enum kind
kind_of (int fd)
{
  return fd >= 0 && fd < MAXFD ? kinds[fd] : NONE;
}

ssize_t
write (int fd, const void *buf, size_t n)
{
  ssize_t r;

  if (kind_of (fd) == DISK) {
    pthread_mutex_lock (&lock);
    rec ("D %lld %zu\n", (long long) lseek (fd, 0, SEEK_CUR), n);
    pthread_mutex_unlock (&lock);
  }
  r = real_write (fd, buf, n);
  if (r > 0 && kind_of (fd) == BM) {
    pthread_mutex_lock (&lock);
    rec_write (ids[fd], pos[fd], buf, r);
    pos[fd] += r;
    pthread_mutex_unlock (&lock);
  }
  return r;
}

static ssize_t
do_pwrite (int fd, const void *buf, size_t n, off_t off)
{
  ssize_t r;

  ensure ();
  if (kind_of (fd) == DISK) {
    pthread_mutex_lock (&lock);
    rec ("D %lld %zu\n", (long long) off, n);
    pthread_mutex_unlock (&lock);
  }
  r = real_pwrite (fd, buf, n, off);
  if (r > 0 && kind_of (fd) == BM) {
    pthread_mutex_lock (&lock);
    rec_write (ids[fd], off, buf, r);
    pthread_mutex_unlock (&lock);
  }
  return r;
}

ssize_t
pwrite (int fd, const void *buf, size_t n, off_t off)
{
  return do_pwrite (fd, buf, n, off);
}

ssize_t
pwrite64 (int fd, const void *buf, size_t n, off_t off)
{
  return do_pwrite (fd, buf, n, off);
}

static int
do_fallocate (int fd, int mode, off_t off, off_t len)
{
  static int (*r) (int, int, off_t, off_t);

  if (!r) r = dlsym (RTLD_NEXT, "fallocate");
  ensure ();
  if (kind_of (fd) == DISK) {
    pthread_mutex_lock (&lock);
    rec ("D %lld %lld\n", (long long) off, (long long) len);
    pthread_mutex_unlock (&lock);
  }
  return r (fd, mode, off, len);
}

int
fallocate (int fd, int mode, off_t off, off_t len)
{
  return do_fallocate (fd, mode, off, len);
}

int
fallocate64 (int fd, int mode, off_t off, off_t len)
{
  return do_fallocate (fd, mode, off, len);
}

static void
synced (int fd)
{
  pthread_mutex_lock (&lock);
  if (kind_of (fd) == BM)
    rec ("S %d\n", ids[fd]);
  else if (kind_of (fd) == DIR_)
    rec ("SD\n");
  pthread_mutex_unlock (&lock);
}

/* fsync and fdatasync: the real one, then the record if it worked. */
static int
do_sync (int fd, const char *name, int (**real) (int))
{
  int e;

  if (!*real) *real = dlsym (RTLD_NEXT, name);
  ensure ();
  e = (*real) (fd);
  if (e == 0)
    synced (fd);
  return e;
}

int
fsync (int fd)
{
  static int (*r) (int);

  return do_sync (fd, "fsync", &r);
}

int
fdatasync (int fd)
{
  static int (*r) (int);

  return do_sync (fd, "fdatasync", &r);
}

int
rename (const char *from, const char *to)
{
  static int (*r) (const char *, const char *);
  int e;

  if (!r) r = dlsym (RTLD_NEXT, "rename");
  ensure ();
  e = r (from, to);
  if (e == 0 && bm && (strcmp (to, bm) == 0 || strcmp (from, bm) == 0)) {
    pthread_mutex_lock (&lock);
    rec ("R %s %s\n", from, to);
    pthread_mutex_unlock (&lock);
  }
  return e;
}

/* A duplicate is the same open file: same kind, same inode id. */
int
dup (int fd)
{
  static int (*r) (int);
  int nfd;

  if (!r) r = dlsym (RTLD_NEXT, "dup");
  nfd = r (fd);
  if (nfd >= 0 && nfd < MAXFD && fd >= 0 && fd < MAXFD) {
    pthread_mutex_lock (&lock);
    kinds[nfd] = kinds[fd];
    ids[nfd] = ids[fd];
    pos[nfd] = pos[fd];
    pthread_mutex_unlock (&lock);
  }
  return nfd;
}

int
close (int fd)
{
  static int (*r) (int);

  if (!r) r = dlsym (RTLD_NEXT, "close");
  if (fd >= 0 && fd < MAXFD) {
    pthread_mutex_lock (&lock);
    kinds[fd] = NONE;
    pthread_mutex_unlock (&lock);
  }
  return r (fd);
}
