/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * Control socket client: connect to the Unix socket, send one line,
 * read one line of JSON back, all within a deadline, then close.  A
 * new connection per request keeps the tool stateless: a server
 * restart between two polls costs nothing.
 */

#include <config.h>

#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "fleecectl.h"

/* Longest reply accepted (a status with many checkpoints and jobs is
 * a few KiB).
 */
#define MAX_REPLY (16 * 1024 * 1024)

/* Milliseconds left until deadline (fleece_now_mono seconds), at least 0. */
static int
left_ms (double deadline)
{
  double d = (deadline - fleece_now_mono ()) * 1000;
  return d <= 0 ? 0 : d > 1e9 ? 1000000000 : (int) d + 1;
}

/* Wait for events on fd until the deadline.  0, or -1 with errno
 * (ETIMEDOUT when it passed).
 */
static int
wait_fd (int fd, short events, double deadline)
{
  struct pollfd pfd = { .fd = fd, .events = events };
  int r, ms;

  for (;;) {
    ms = left_ms (deadline);
    if (ms == 0) {
      errno = ETIMEDOUT;
      return -1;
    }
    r = poll (&pfd, 1, ms);
    if (r > 0)
      return 0;
    if (r == 0) {
      errno = ETIMEDOUT;
      return -1;
    }
    if (errno != EINTR)
      return -1;
  }
}

char *
ctl_request (const char *path, const char *line, int timeout_ms,
             char *err, size_t errlen)
{
  struct sockaddr_un addr = { .sun_family = AF_UNIX };
  double deadline;
  int fd = -1;
  char *out = NULL, *nl;
  size_t len = 0, cap = 0, sent = 0, linelen;
  char *msg = NULL;
  ssize_t r;

  if (timeout_ms <= 0)
    timeout_ms = 30000;
  deadline = fleece_now_mono () + timeout_ms / 1000.0;

  if (strlen (path) >= sizeof addr.sun_path) {
    snprintf (err, errlen, "control socket %s: path too long", path);
    return NULL;
  }
  strcpy (addr.sun_path, path);

  fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd == -1) {
    snprintf (err, errlen, "socket: %m");
    return NULL;
  }
  if (connect (fd, (struct sockaddr *) &addr, sizeof addr) == -1) {
    /* A full backlog of a listening socket: wait for room. */
    if (errno == EAGAIN || errno == EINPROGRESS) {
      int soerr = 0;
      socklen_t sl = sizeof soerr;

      if (wait_fd (fd, POLLOUT, deadline) == -1 ||
          getsockopt (fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == -1)
        goto sys_err;
      if (soerr) {
        errno = soerr;
        goto sys_err;
      }
    }
    else {
      snprintf (err, errlen,
                "cannot connect to the control socket %s: %m "
                "(is nbdkit running with control=%s?)", path, path);
      close (fd);
      return NULL;
    }
  }

  /* The line, ending in exactly one newline. */
  linelen = strlen (line);
  if (asprintf (&msg, "%s\n", line) == -1) {
    msg = NULL;
    goto sys_err;
  }
  while (sent < linelen + 1) {
    r = send (fd, msg + sent, linelen + 1 - sent, MSG_NOSIGNAL);
    if (r > 0) {
      sent += r;
      continue;
    }
    if (r == -1 && errno == EINTR)
      continue;
    if (r == -1 && errno == EAGAIN) {
      if (wait_fd (fd, POLLOUT, deadline) == -1)
        goto sys_err;
      continue;
    }
    goto sys_err;
  }

  /* The reply: up to the first newline. */
  for (;;) {
    if (cap - len < 4096 + 1) {
      char *n;

      if (cap >= MAX_REPLY) {
        snprintf (err, errlen, "control socket %s: reply longer than %d "
                  "bytes", path, MAX_REPLY);
        goto out;
      }
      cap = cap ? cap * 2 : 8192;
      n = realloc (out, cap);
      if (n == NULL)
        goto sys_err;
      out = n;
    }
    r = recv (fd, out + len, cap - len - 1, 0);
    if (r > 0) {
      len += r;
      out[len] = '\0';
      nl = memchr (out, '\n', len);
      if (nl) {
        *nl = '\0';
        free (msg);
        close (fd);
        return out;
      }
      continue;
    }
    if (r == 0) {
      if (len > 0) {            /* a last line without its newline */
        out[len] = '\0';
        free (msg);
        close (fd);
        return out;
      }
      snprintf (err, errlen, "control socket %s: the server closed the "
                "connection without a reply", path);
      goto out;
    }
    if (errno == EINTR)
      continue;
    if (errno == EAGAIN) {
      if (wait_fd (fd, POLLIN, deadline) == -1)
        goto sys_err;
      continue;
    }
    goto sys_err;
  }

 sys_err:
  if (errno == ETIMEDOUT)
    snprintf (err, errlen, "control socket %s: no reply within %d ms "
              "(use --timeout to wait longer)", path, timeout_ms);
  else
    snprintf (err, errlen, "control socket %s: %m", path);
 out:
  free (msg);
  free (out);
  close (fd);
  return NULL;
}

struct jval *
ctl_call (const char *path, const char *line, int timeout_ms, char **raw,
          char *err, size_t errlen)
{
  char *text;
  struct jval *v;
  const char *why;
  size_t off;

  if (raw)
    *raw = NULL;
  text = ctl_request (path, line, timeout_ms, err, errlen);
  if (text == NULL)
    return NULL;
  v = jv_parse (text, strlen (text), &why, &off);
  if (v == NULL || v->type != JV_OBJECT) {
    if (v)
      why = "not an object", off = 0;
    snprintf (err, errlen, "control socket %s: the reply to '%s' is not "
              "valid JSON (%s at byte %zu): %.200s",
              path, line, why, off, text);
    jv_free (v);
    free (text);
    return NULL;
  }
  if (raw)
    *raw = text;
  else
    free (text);
  return v;
}

bool
ctl_word_ok (const char *str)
{
  const unsigned char *p;

  if (*str == '\0')
    return false;
  for (p = (const unsigned char *) str; *p; p++)
    if (*p <= ' ' || *p == 0x7f)
      return false;
  return true;
}
