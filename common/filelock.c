/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * Exclusive whole-file OFD locks with the holder's pid in a side file.
 * See filelock.h.  No shared state: every function works on the
 * descriptors and paths it is given.
 */

#include <config.h>

#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "errors.h"
#include "filelock.h"

/* Take a write lock on the whole of fd without waiting.  0, or -1 with
 * errno (EAGAIN: someone else holds a lock on it).
 */
static int
lock_whole (int fd)
{
  struct flock fl;

  memset (&fl, 0, sizeof fl);
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  fl.l_start = 0;
  fl.l_len = 0;                 /* to the end, however it grows */
  fl.l_pid = 0;                 /* must be 0 for OFD locks */
  if (fcntl (fd, F_OFD_SETLK, &fl) == -1) {
    if (errno == EACCES)
      errno = EAGAIN;
    return -1;
  }
  return 0;
}

static char *
lock_path (const char *path)
{
  char *p;

  if (asprintf (&p, "%s.lock", path) == -1)
    return NULL;
  return p;
}

long
filelock_holder (const char *path)
{
  char *lp = lock_path (path);
  char buf[32];
  ssize_t n;
  long pid;
  char *end;
  int fd;

  if (lp == NULL)
    return -1;
  fd = open (lp, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  free (lp);
  if (fd == -1)
    return -1;
  n = read (fd, buf, sizeof buf - 1);
  close (fd);
  if (n <= 0)
    return -1;
  buf[n] = '\0';
  errno = 0;
  pid = strtol (buf, &end, 10);
  if (errno != 0 || end == buf || (*end != '\n' && *end != '\0') ||
      pid <= 0)
    return -1;
  return pid;
}

/* The refusal, one line. */
static int
in_use (const char *what, const char *path, const char *thing,
        bool own_file, char **errmsg)
{
  long pid = filelock_holder (path);

  /* For the file's own lock (own_file), our pid in PATH.lock means we
   * hold PATH.lock and something else holds the file: who is unknown.
   */
  if (pid > 0 && !(own_file && pid == (long) getpid ()))
    return fleece_errorf (errmsg, "%s=%s: in use by another nbdkit (pid %ld); "
                          "two servers must never share a %s",
                          what, path, pid, thing);
  return fleece_errorf (errmsg, "%s=%s: in use by another process (it holds "
                        "a lock on the file; its pid is not recorded); two "
                        "servers must never share a %s", what, path, thing);
}

int
filelock_write_pid (int lockfd)
{
  char buf[32];
  int len = snprintf (buf, sizeof buf, "%ld\n", (long) getpid ());

  if (ftruncate (lockfd, 0) == -1 ||
      pwrite (lockfd, buf, len, 0) != len)
    return -1;
  return 0;
}

int
filelock_side (const char *what, const char *path, const char *thing,
               char **errmsg)
{
  char *lp = lock_path (path);
  struct stat st;
  int fd;

  if (lp == NULL)
    return fleece_errorf (errmsg, "%s=%s: out of memory", what, path);
  /* O_NOFOLLOW: never a lock through a symlink someone planted;
   * O_NONBLOCK: a FIFO in its place must not hang start-up.
   */
  fd = open (lp, O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC,
             0600);
  if (fd == -1) {
    int e = errno;

    fleece_errorf (errmsg, "%s=%s: cannot open the lock file %s: %s%s",
                   what, path, lp, strerror (e),
                   e == ELOOP ? " (it is a symlink: remove it)" : "");
    free (lp);
    return -1;
  }
  if (fstat (fd, &st) == -1 || !S_ISREG (st.st_mode)) {
    fleece_errorf (errmsg, "%s=%s: the lock file %s is not a regular "
                   "file: remove it", what, path, lp);
    goto fail;
  }
  if (lock_whole (fd) == -1) {
    if (errno == EAGAIN)
      in_use (what, path, thing, false, errmsg);
    else
      fleece_errorf (errmsg, "%s=%s: cannot lock %s: %s", what, path, lp,
                     strerror (errno));
    goto fail;
  }
  if (filelock_write_pid (fd) == -1) {
    fleece_errorf (errmsg, "%s=%s: cannot write to the lock file %s: %s",
                   what, path, lp, strerror (errno));
    goto fail;
  }
  free (lp);
  return fd;

 fail:
  close (fd);
  free (lp);
  return -1;
}

int
filelock_fd (const char *what, const char *path, int fd, const char *thing,
             char **errmsg)
{
  if (lock_whole (fd) == 0)
    return 0;
  if (errno == EAGAIN)
    return in_use (what, path, thing, true, errmsg);
  return fleece_errorf (errmsg, "%s=%s: cannot lock it: %s", what, path,
                        strerror (errno));
}
