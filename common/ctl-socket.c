/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * Creating and removing the control socket file (see ctl-socket.h).
 * No state of its own: called from ctl_server_new and
 * ctl_server_free.
 */

#include <config.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>

#include <nbdkit-filter.h>

#include "ctl-socket.h"
#include "errors.h"

#define CTL_BACKLOG 16

#define fail fleece_errorf       /* set *errmsg, return -1 */

/* Is there a live listener at path?  Returns 1 if so, 0 if the socket
 * is stale, -1 with *errmsg set if we cannot tell.
 */
static int
socket_is_live (const struct sockaddr_un *addr, const char *path,
                char **errmsg)
{
  int fd, r, err;

  fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd == -1)
    return fail (errmsg, "socket: %s", strerror (errno));
  do
    r = connect (fd, (const struct sockaddr *) addr, sizeof *addr);
  while (r == -1 && errno == EINTR);
  err = errno;
  close (fd);

  if (r == 0 || err == EAGAIN || err == EINPROGRESS)
    return 1;                   /* accepted, or backlog full: alive */
  if (err == ECONNREFUSED || err == ENOENT)
    return 0;                   /* nobody listening (or already gone) */
  return fail (errmsg, "cannot check existing control socket %s: %s",
               path, strerror (err));
}

/* Make path free for bind: fine if absent; a stale socket is removed;
 * anything else is an error.
 */
static int
clear_path (const struct sockaddr_un *addr, const char *path, char **errmsg)
{
  struct stat st;
  int live;

  if (lstat (path, &st) == -1) {
    if (errno == ENOENT)
      return 0;
    return fail (errmsg, "%s: %s", path, strerror (errno));
  }
  if (!S_ISSOCK (st.st_mode))
    return fail (errmsg, "%s exists and is not a socket; "
                 "refusing to replace it", path);
  live = socket_is_live (addr, path, errmsg);
  if (live == -1)
    return -1;
  if (live)
    return fail (errmsg, "control socket %s is in use by another process",
                 path);
  nbdkit_debug ("control: removing stale socket %s", path);
  if (unlink (path) == -1 && errno != ENOENT)
    return fail (errmsg, "cannot remove stale control socket %s: %s",
                 path, strerror (errno));
  return 0;
}

static int
make_addr (const char *path, struct sockaddr_un *addr, char **errmsg)
{
  size_t len = strlen (path);

  if (path[0] != '/')
    return fail (errmsg, "control socket path '%s' must be absolute", path);
  if (len >= sizeof addr->sun_path)
    return fail (errmsg, "control socket path %s is too long "
                 "(%zu bytes, limit %zu)", path, len,
                 sizeof addr->sun_path - 1);
  memset (addr, 0, sizeof *addr);
  addr->sun_family = AF_UNIX;
  memcpy (addr->sun_path, path, len + 1);
  return 0;
}

/* Bind fd to addr so that the socket file is mode 0600 from the
 * moment it appears: on Linux the socket inode's mode (set by fchmod
 * before bind) is used, and umask 077 covers other systems.  The
 * umask is process-wide, so it is changed only around bind.  Records
 * the file's identity in *id.
 */
static int
bind_private (const char *path, int fd, const struct sockaddr_un *addr,
              struct ctl_socket_id *id, char **errmsg)
{
  struct stat st;
  mode_t old_mask;
  int r, err;

  (void) fchmod (fd, 0600);     /* best effort, see above */
  old_mask = umask (077);
  r = bind (fd, (const struct sockaddr *) addr, sizeof *addr);
  err = errno;
  umask (old_mask);
  if (r == -1)
    return fail (errmsg, "bind %s: %s", path, strerror (err));

  if (chmod (path, 0600) == -1 || lstat (path, &st) == -1) {
    err = errno;
    unlink (path);
    return fail (errmsg, "%s: %s", path, strerror (err));
  }
  id->dev = st.st_dev;
  id->ino = st.st_ino;
  return 0;
}

int
ctl_socket_listen (const char *path, struct ctl_socket_id *id,
                   char **errmsg)
{
  struct sockaddr_un addr;
  int fd;

  if (make_addr (path, &addr, errmsg) == -1 ||
      clear_path (&addr, path, errmsg) == -1)
    return -1;

  fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd == -1)
    return fail (errmsg, "socket: %s", strerror (errno));
  if (bind_private (path, fd, &addr, id, errmsg) == -1) {
    close (fd);
    return -1;
  }
  if (listen (fd, CTL_BACKLOG) == -1) {
    int err = errno;

    close (fd);
    unlink (path);
    return fail (errmsg, "listen %s: %s", path, strerror (err));
  }
  return fd;
}

void
ctl_socket_remove (const char *path, const struct ctl_socket_id *id)
{
  struct stat st;

  if (lstat (path, &st) == 0 && S_ISSOCK (st.st_mode) &&
      st.st_dev == id->dev && st.st_ino == id->ino)
    unlink (path);
}
