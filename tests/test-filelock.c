/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * Unit tests for common/filelock.c.  Two descriptors opened separately
 * are two open file descriptions, whose OFD locks conflict even in one
 * process, so two "servers" can be played in-process: the second is
 * refused with the first one's pid, the lock survives a fork of the
 * holder and is gone when its descriptor closes, PATH.lock is never
 * followed through a symlink, and a file's own lock (filelock_fd)
 * conflicts the same way.
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "filelock.h"
#include "unit.h"

static char dir[] = "/tmp/test-filelock.XXXXXX";

static char *
path_in_dir (const char *name)
{
  char *p;

  if (asprintf (&p, "%s/%s", dir, name) == -1)
    abort ();
  return p;
}

static char *
slurp (const char *path)
{
  static char buf[256];
  int fd = open (path, O_RDONLY);
  ssize_t n;

  if (fd == -1)
    return NULL;
  n = read (fd, buf, sizeof buf - 1);
  close (fd);
  buf[n < 0 ? 0 : n] = '\0';
  return buf;
}

int
main (void)
{
  char *bm, *bmlock, *target, *link_target, *evil, *evil_lock, *other;
  char *errmsg = NULL, want[64], *s;
  int a, b, t1, t2, r, status;
  struct stat st;
  pid_t child;

  if (mkdtemp (dir) == NULL) {
    perror ("mkdtemp");
    exit (EXIT_FAILURE);
  }
  bm = path_in_dir ("d.bitmaps");
  bmlock = path_in_dir ("d.bitmaps.lock");
  target = path_in_dir ("t.fleece");
  link_target = path_in_dir ("elsewhere");
  evil = path_in_dir ("evil");
  evil_lock = path_in_dir ("evil.lock");
  other = path_in_dir ("other.bitmaps");

  /* First holder: PATH.lock created 0600 with our pid. */
  a = filelock_side ("bitmap-file", bm, "bitmap file", &errmsg);
  CHECK (a >= 0);
  CHECK (stat (bmlock, &st) == 0 && S_ISREG (st.st_mode) &&
         (st.st_mode & 0777) == 0600);
  snprintf (want, sizeof want, "%ld\n", (long) getpid ());
  s = slurp (bmlock);
  CHECK (s && strcmp (s, want) == 0);
  CHECK (filelock_holder (bm) == (long) getpid ());
  /* The bitmap file itself is not needed nor created. */
  CHECK (stat (bm, &st) == -1 && errno == ENOENT);

  /* Second holder: refused, one line with the parameter, file, pid. */
  b = filelock_side ("bitmap-file", bm, "bitmap file", &errmsg);
  CHECK (b == -1);
  CHECK (errmsg != NULL);
  if (errmsg) {
    snprintf (want, sizeof want, "(pid %ld)", (long) getpid ());
    fprintf (stderr, "refused as expected: %s\n", errmsg);
    CHECK (strncmp (errmsg, "bitmap-file=", 12) == 0);
    CHECK (strstr (errmsg, bm) != NULL);
    CHECK (strstr (errmsg, want) != NULL);
    CHECK (strstr (errmsg, "never share a bitmap file") != NULL);
    CHECK (strchr (errmsg, '\n') == NULL);
  }
  free (errmsg);
  errmsg = NULL;
  /* The refusal did not change the holder's pid file. */
  CHECK (filelock_holder (bm) == (long) getpid ());

  /* Another file is independent. */
  b = filelock_side ("bitmap-file", other, "bitmap file", &errmsg);
  CHECK (b >= 0);
  if (b >= 0)
    close (b);

  /* A forked child shares the lock (same open file description): a
   * new description still conflicts in it, and it may rewrite the pid
   * (as nbdkit's background process does after its fork).
   */
  child = fork ();
  if (child == 0) {
    int fd2;
    char *e = NULL;

    filelock_write_pid (a);
    fd2 = filelock_side ("bitmap-file", bm, "bitmap file", &e);
    _exit (fd2 == -1 && filelock_holder (bm) == (long) getpid () ? 0 : 1);
  }
  CHECK (child > 0);
  CHECK (waitpid (child, &status, 0) == child);
  CHECK (WIFEXITED (status) && WEXITSTATUS (status) == 0);
  filelock_write_pid (a);

  /* Closing the holder's descriptor releases it; the file stays. */
  close (a);
  b = filelock_side ("bitmap-file", bm, "bitmap file", &errmsg);
  CHECK (b >= 0);
  CHECK (stat (bmlock, &st) == 0);

  /* Never through a symlink, never onto a non-regular file. */
  CHECK (symlink (link_target, evil_lock) == 0);
  r = filelock_side ("bitmap-file", evil, "bitmap file", &errmsg);
  CHECK (r == -1);
  CHECK (errmsg && strstr (errmsg, "symlink") != NULL);
  free (errmsg);
  errmsg = NULL;
  CHECK (stat (link_target, &st) == -1 && errno == ENOENT);
  unlink (evil_lock);
  CHECK (mkfifo (evil_lock, 0600) == 0);
  r = filelock_side ("bitmap-file", evil, "bitmap file", &errmsg);
  CHECK (r == -1);
  CHECK (errmsg && strstr (errmsg, "not a regular file") != NULL);
  free (errmsg);
  errmsg = NULL;
  unlink (evil_lock);

  /* A file's own lock: two descriptors of it conflict; with a side
   * lock file the pid is named, without it the message says so.
   */
  t1 = open (target, O_RDWR | O_CREAT, 0600);
  t2 = open (target, O_RDWR);
  CHECK (t1 >= 0 && t2 >= 0);
  CHECK (filelock_fd ("cbw-target", target, t1, "fleecing target",
                      &errmsg) == 0);
  CHECK (filelock_fd ("cbw-target", target, t2, "fleecing target",
                      &errmsg) == -1);
  CHECK (errmsg && strstr (errmsg, "cbw-target=") == errmsg &&
         strstr (errmsg, "pid is not recorded") != NULL &&
         strstr (errmsg, "fleecing target") != NULL);
  free (errmsg);
  errmsg = NULL;
  /* Another process holding PATH.lock is named by its pid. */
  {
    int go[2], done[2];
    char c = 0;

    CHECK (pipe (go) == 0 && pipe (done) == 0);
    child = fork ();
    if (child == 0) {
      char *e = NULL;
      int l = filelock_side ("cbw-target", target, "fleecing target", &e);

      if (write (go[1], l >= 0 ? "y" : "n", 1) != 1 ||
          read (done[0], &c, 1) != 1)
        _exit (1);
      _exit (0);
    }
    CHECK (read (go[0], &c, 1) == 1 && c == 'y');
    CHECK (filelock_fd ("cbw-target", target, t2, "fleecing target",
                        &errmsg) == -1);
    snprintf (want, sizeof want, "(pid %ld)", (long) child);
    CHECK (errmsg && strstr (errmsg, want) != NULL);
    if (errmsg)
      fprintf (stderr, "refused as expected: %s\n", errmsg);
    free (errmsg);
    errmsg = NULL;
    CHECK (write (done[1], "x", 1) == 1);
    CHECK (waitpid (child, &status, 0) == child);
    CHECK (WIFEXITED (status) && WEXITSTATUS (status) == 0);
  }
  /* Our own pid in PATH.lock does not make us the file's holder. */
  a = filelock_side ("cbw-target", target, "fleecing target", &errmsg);
  CHECK (a >= 0);
  CHECK (filelock_fd ("cbw-target", target, t2, "fleecing target",
                      &errmsg) == -1);
  CHECK (errmsg && strstr (errmsg, "pid is not recorded") != NULL);
  free (errmsg);
  errmsg = NULL;
  close (t1);
  CHECK (filelock_fd ("cbw-target", target, t2, "fleecing target",
                      &errmsg) == 0);
  close (t2);
  close (a);
  close (b);

  /* Clean up. */
  unlink (bmlock);
  unlink (target);
  s = path_in_dir ("t.fleece.lock");
  unlink (s);
  free (s);
  s = path_in_dir ("other.bitmaps.lock");
  unlink (s);
  free (s);
  rmdir (dir);
  free (bm); free (bmlock); free (target); free (link_target);
  free (evil); free (evil_lock); free (other);
  UNIT_EXIT ();
}
