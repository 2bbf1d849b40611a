/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * What the control server tests share (test-control-lines.c,
 * test-control-server.c): a test handler that counts its calls and
 * notices two calls at once, plain socket clients with a timeout on
 * every reply, and a private temporary directory for the sockets.
 * Header only, like unit.h: each test is one file.
 */

#ifndef FLEECE_CTL_TEST_H
#define FLEECE_CTL_TEST_H

#include <limits.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "control.h"
#include "json.h"
#include "unit.h"

#define TIMEOUT_MS 2000         /* for any single expected reply */
#define BIG_REPLY (4 * 1024 * 1024)

#define IDLE "{\"ok\":true,\"state\":\"idle\"}"
#define N0 "{\"ok\":true,\"n\":0}"
#define N1 "{\"ok\":true,\"n\":1}"
#define N2 "{\"ok\":true,\"n\":2}"
#define EMPTY_LINE \
  "{\"ok\":false,\"error\":\"empty line: expected a command such as 'status'\"}"

/*----------------------------------------------------------------------
 * The test handler: status, echo (counts its arguments), fail,
 * fail-null (no message), big (a BIG_REPLY-byte string).
 */

static atomic_uint handled;     /* number of handler calls */
static atomic_int in_handler;   /* handlers running right now */
static atomic_bool overlapped;  /* two handlers ever ran at once */

static inline int
handler (const struct ctl_request *req, void *opaque,
         struct jbuf *reply, char **errmsg)
{
  int r = 0;

  CHECK (opaque == &handled);
  if (atomic_fetch_add (&in_handler, 1) != 0)
    atomic_store (&overlapped, true);
  atomic_fetch_add (&handled, 1);

  /* Both ways of adding members: jbuf_key, or raw text with a comma. */
  if (strcmp (req->command, "status") == 0) {
    jbuf_key (reply, "state");
    jbuf_string (reply, "idle");
  }
  else if (strcmp (req->command, "echo") == 0)
    jbuf_printf (reply, ",\"n\":%zu", req->nargs);
  else if (strcmp (req->command, "fail") == 0) {
    jbuf_raw (reply, ",\"ignored\":1");
    *errmsg = strdup ("it \"failed\"");
    r = -1;
  }
  else if (strcmp (req->command, "fail-null") == 0)
    r = -1;
  else if (strcmp (req->command, "big") == 0) {
    char *data = malloc (BIG_REPLY + 1);

    memset (data, 'z', BIG_REPLY);
    data[BIG_REPLY] = '\0';
    jbuf_key (reply, "data");
    jbuf_string (reply, data);
    free (data);
  }
  else {
    size_t n = strlen (req->command) + 32;

    r = -1;
    *errmsg = malloc (n);
    snprintf (*errmsg, n, "unknown command '%s'", req->command);
  }

  atomic_fetch_sub (&in_handler, 1);
  return r;
}

/*----------------------------------------------------------------------
 * The socket directory and servers with the test handler.
 */

static char tmpdir[PATH_MAX];

/* Socket paths must fit in sun_path (108 bytes). */
static inline void
make_tmpdir (const char *name)
{
  const char *t = getenv ("TMPDIR");

  if (snprintf (tmpdir, sizeof tmpdir, "%s/%s.XXXXXX",
                t && *t && strlen (t) < 60 ? t : "/tmp", name) >= 80)
    abort ();
  if (mkdtemp (tmpdir) == NULL) {
    perror ("mkdtemp");
    exit (EXIT_FAILURE);
  }
}

static inline void
remove_tmpdir (void)
{
  if (rmdir (tmpdir) == -1) {
    perror (tmpdir);
    unit_failures++;
  }
}

static inline void
make_path (char *buf, const char *name)
{
  if (snprintf (buf, PATH_MAX, "%s/%s", tmpdir, name) >= PATH_MAX)
    abort ();
}

static inline struct ctl_server *
new_server (const char *path)
{
  struct ctl_server *srv;
  char *errmsg = NULL;

  srv = ctl_server_new (path, handler, &handled, &errmsg);
  if (srv == NULL) {
    fprintf (stderr, "ctl_server_new: %s\n", errmsg);
    free (errmsg);
  }
  return srv;
}

/*----------------------------------------------------------------------
 * Clients.
 */

static inline void
set_addr (struct sockaddr_un *addr, const char *path)
{
  size_t len = strlen (path);

  if (len >= sizeof addr->sun_path)
    abort ();
  memset (addr, 0, sizeof *addr);
  addr->sun_family = AF_UNIX;
  memcpy (addr->sun_path, path, len + 1);
}

static inline int
connect_to (const char *path)
{
  struct sockaddr_un addr;
  int fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

  if (fd == -1)
    return -1;
  set_addr (&addr, path);
  if (connect (fd, (struct sockaddr *) &addr, sizeof addr) == -1) {
    close (fd);
    return -1;
  }
  return fd;
}

static inline bool
send_all (int fd, const char *buf, size_t len)
{
  ssize_t n;

  while (len > 0) {
    n = send (fd, buf, len, MSG_NOSIGNAL);
    if (n <= 0)
      return false;
    buf += n;
    len -= (size_t) n;
  }
  return true;
}

static inline bool
send_str (int fd, const char *s)
{
  return send_all (fd, s, strlen (s));
}

/* Is there something to read (data or EOF) within ms? */
static inline bool
readable (int fd, int ms)
{
  struct pollfd p = { .fd = fd, .events = POLLIN };

  return poll (&p, 1, ms) == 1;
}

/* Read one reply line (without the newline) into a malloc'd string.
 * NULL on EOF, error or timeout.
 */
static inline char *
read_line (int fd)
{
  size_t len = 0, cap = 256;
  char *s = malloc (cap), c;

  for (;;) {
    if (!readable (fd, TIMEOUT_MS) || recv (fd, &c, 1, 0) != 1) {
      free (s);
      return NULL;
    }
    if (c == '\n')
      break;
    if (len + 2 > cap)
      s = realloc (s, cap *= 2);
    s[len++] = c;
  }
  s[len] = '\0';
  return s;
}

static inline bool
expect_reply (int fd, const char *expected)
{
  char *got = read_line (fd);
  bool ok = got && strcmp (got, expected) == 0;

  if (!ok)
    fprintf (stderr, "  reply: got '%s', expected '%s'\n",
             got ? got : "(none)", expected);
  free (got);
  return ok;
}

/* Does the server close the connection (EOF) within the timeout? */
static inline bool
expect_eof (int fd)
{
  char c;

  return readable (fd, TIMEOUT_MS) && recv (fd, &c, 1, 0) == 0;
}

static inline bool
request (int fd, const char *line, const char *expected)
{
  return send_str (fd, line) && send_str (fd, "\n") &&
    expect_reply (fd, expected);
}

/* Connect and answer one status: the server took this client on. */
static inline bool
try_served (const char *path, int *fd)
{
  char *reply;
  bool ok = false;

  *fd = connect_to (path);
  if (*fd == -1)
    return true;                /* no server: stop trying */
  if (send_str (*fd, "status\n") && (reply = read_line (*fd)) != NULL) {
    ok = strcmp (reply, IDLE) == 0;
    free (reply);
  }
  if (!ok) {
    close (*fd);
    *fd = -1;
  }
  return ok;
}

/* Connect and prove the server took us on, retrying while it still
 * counts clients that have just disconnected.  -1 on failure.
 */
static inline int
connect_served (const char *path)
{
  int fd = -1;

  WAIT_UNTIL (try_served (path, &fd), TIMEOUT_MS / 1000.0, 5);
  return fd;
}

#endif /* FLEECE_CTL_TEST_H */
