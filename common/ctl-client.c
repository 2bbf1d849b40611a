/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * One client of the control server (see ctl-client.h and the framing
 * rules in control.h).  A client has its own line buffer and its own
 * buffer of reply bytes not yet sent.  Every function here runs on the
 * server thread and never blocks; -1 means "close this client".
 *
 * Invariant: a client's lines are read and answered in order, and its
 * next line is answered only once the reply to the previous one has
 * been sent completely (c->out == NULL), so one client holds at most
 * one reply and one line buffer of memory.  No lock: the server thread
 * owns every client.
 */

#include <config.h>

#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>

#include <nbdkit-filter.h>

#include "ctl-client.h"

#define TOO_MANY_CLIENTS_REPLY \
  "{\"ok\":false,\"error\":\"too many control clients\"}\n"
#define OOM_REPLY "{\"ok\":false,\"error\":\"out of memory\"}\n"

struct ctl_client {
  int fd;                       /* non-blocking */
  char in[CTL_MAX_LINE];        /* bytes of lines not yet answered */
  size_t in_used;
  bool discarding;              /* skipping the rest of an over-long line */
  bool eof;                     /* the client sent EOF */
  char *out;                    /* reply bytes to send (malloc'd), or NULL */
  size_t out_len, out_sent;
};

struct ctl_client *
ctl_client_new (int fd)
{
  struct ctl_client *c = calloc (1, sizeof *c);

  if (c == NULL) {
    nbdkit_debug ("control: out of memory for a client");
    close (fd);
    return NULL;
  }
  c->fd = fd;
  nbdkit_debug ("control: client connected");
  return c;
}

int
ctl_client_fd (const struct ctl_client *c)
{
  return c->fd;
}

/* Reading only while no reply is pending. */
short
ctl_client_events (const struct ctl_client *c)
{
  if (c->out)
    return POLLOUT;
  return c->eof ? 0 : POLLIN;
}

/* Send what the socket takes of c->out now. */
static int
client_flush (struct ctl_client *c)
{
  ssize_t n;

  while (c->out) {
    n = send (c->fd, c->out + c->out_sent, c->out_len - c->out_sent,
              MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n == -1 && errno == EINTR)
      continue;
    if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK))
      return 0;                 /* the rest when poll says POLLOUT */
    if (n <= 0)
      return -1;
    c->out_sent += (size_t) n;
    if (c->out_sent == c->out_len) {
      free (c->out);
      c->out = NULL;
    }
  }
  return 0;
}

/* Answer one line: run it, queue the reply line and send what fits. */
static int
client_answer (struct ctl_server *srv, struct ctl_client *c,
               const char *line, size_t len)
{
  char *reply = ctl_server_handle_line (srv, line, len), *out = NULL;
  size_t n;

  if (reply) {
    n = strlen (reply);
    out = realloc (reply, n + 2);
    if (out == NULL)
      free (reply);
    else
      memcpy (out + n, "\n", 2);
  }
  if (out == NULL && (out = strdup (OOM_REPLY)) == NULL)
    return -1;
  c->out = out;
  c->out_len = strlen (out);
  c->out_sent = 0;
  return client_flush (c);
}

/* Has the peer closed its end entirely (not just shut down its
 * sending side)?  Linux reports POLLHUP on a Unix stream socket only
 * once both directions are shut, i.e. the peer closed the socket or
 * exited; after shutdown(SHUT_WR) it reports POLLRDHUP alone.
 */
static bool
peer_gone (int fd)
{
  struct pollfd p = { .fd = fd, .events = POLLOUT };

  return poll (&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLERR)) != 0;
}

/* Answer the lines in c->in while the previous reply is out.  A full
 * buffer with no newline is an over-long line: it gets one reply (the
 * parser's "line too long") and the rest, up to the next newline, is
 * skipped.
 *
 * After the client's EOF, an unfinished line (one without its
 * newline, as in `printf status | socat - UNIX-CONNECT:...`) is a
 * request like any other if the client is still there to read the
 * reply: it only half-closed, which ends its last line.  If the
 * client closed the socket entirely (or died) mid-line, the fragment
 * may be a torn command ("checkpoint-delete c1" of "... c12"), and
 * nobody would see the reply: it is dropped and nothing runs.  Once
 * everything is answered and sent, the client is closed.
 */
static int
client_lines (struct ctl_server *srv, struct ctl_client *c)
{
  char *nl;
  size_t len;

  while (c->out == NULL) {
    nl = memchr (c->in, '\n', c->in_used);
    if (nl) {
      len = (size_t) (nl - c->in);
      if (c->discarding)
        c->discarding = false;
      else if (client_answer (srv, c, c->in, len) == -1)
        return -1;
      c->in_used -= len + 1;
      memmove (c->in, nl + 1, c->in_used);
    }
    else if (c->in_used == sizeof c->in) {
      if (!c->discarding && client_answer (srv, c, c->in, c->in_used) == -1)
        return -1;
      c->discarding = true;
      c->in_used = 0;
    }
    else
      break;
  }
  if (!c->eof || c->out)
    return 0;
  if (c->in_used > 0 && !c->discarding) {
    if (peer_gone (c->fd))
      nbdkit_debug ("control: client closed mid-line; "
                    "%zu unfinished byte(s) dropped", c->in_used);
    else if (client_answer (srv, c, c->in, c->in_used) == -1)
      return -1;
    c->in_used = 0;
    if (c->out)
      return 0;                 /* closed once the reply is sent */
  }
  return -1;
}

static int
client_read (struct ctl_client *c)
{
  ssize_t n;

  do
    n = recv (c->fd, c->in + c->in_used, sizeof c->in - c->in_used, 0);
  while (n == -1 && errno == EINTR);
  if (n == -1)
    return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
  if (n == 0)
    c->eof = true;
  c->in_used += (size_t) n;
  return 0;
}

int
ctl_client_progress (struct ctl_server *srv, struct ctl_client *c,
                     short revents)
{
  if (c->out && client_flush (c) == -1)
    return -1;
  if (c->out == NULL && !c->eof &&
      (revents & (POLLIN | POLLHUP | POLLERR)) &&
      client_read (c) == -1)
    return -1;
  return client_lines (srv, c);
}

void
ctl_client_close (struct ctl_client *c, bool drain)
{
  int k;

  for (k = 0; drain && k < 16 &&
         recv (c->fd, c->in, sizeof c->in, MSG_DONTWAIT) > 0; k++)
    ;
  close (c->fd);
  free (c->out);
  free (c);
  nbdkit_debug ("control: client disconnected");
}

void
ctl_client_reject (int fd)
{
  ssize_t r;

  nbdkit_debug ("control: too many control clients, refusing one");
  do
    r = send (fd, TOO_MANY_CLIENTS_REPLY, strlen (TOO_MANY_CLIENTS_REPLY),
              MSG_NOSIGNAL | MSG_DONTWAIT);
  while (r == -1 && errno == EINTR);
  close (fd);
}
