/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * The control socket (see control.h): a line parser for requests of
 * the form "COMMAND [key=value|word ...]", and a small threaded Unix
 * socket server that reads request lines from each client, passes
 * them one at a time to a handler, and writes one JSON reply line per
 * request.  Shutdown never depends on clients: every blocking wait is
 * a poll() that also watches a wakeup pipe which ctl_server_free
 * writes to.
 */

#include <config.h>

/* accept4, pipe2 and vasprintf; config.h normally defines this. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>

#include <nbdkit-filter.h>

#include "control.h"
#include "json.h"

#define CTL_BACKLOG 16
/* Longest piece of a client's token quoted back in an error message. */
#define CTL_QUOTE_MAX 40

#define TOO_MANY_CLIENTS_REPLY \
  "{\"ok\":false,\"error\":\"too many control clients\"}\n"
#define OOM_REPLY "{\"ok\":false,\"error\":\"out of memory\"}"

/*----------------------------------------------------------------------
 * Request parser.
 */

/* Set *errmsg to a malloc'd message (NULL if even that fails) and
 * return -1.
 */
static int __attribute__ ((format (printf, 2, 3)))
fail (char **errmsg, const char *fmt, ...)
{
  va_list args;

  va_start (args, fmt);
  if (vasprintf (errmsg, fmt, args) == -1)
    *errmsg = NULL;
  va_end (args);
  return -1;
}

/* Quote a client-supplied token in a message, cut to CTL_QUOTE_MAX
 * bytes: use as "'%.*s%s'" with QUOTE_ARGS (p, n).
 */
#define QUOTE_ARGS(p, n)                                        \
  (int) ((n) > CTL_QUOTE_MAX ? CTL_QUOTE_MAX : (n)), (p),       \
    ((n) > CTL_QUOTE_MAX ? "..." : "")

static bool
is_lower (char c)
{
  return c >= 'a' && c <= 'z';
}

static bool
is_digit (char c)
{
  return c >= '0' && c <= '9';
}

static bool
is_blank (char c)
{
  return c == ' ' || c == '\t';
}

/* Every byte must be printable ASCII or a tab (a separator). */
static int
check_bytes (const char *line, size_t len, char **errmsg)
{
  size_t i;
  unsigned char c;

  for (i = 0; i < len; i++) {
    c = (unsigned char) line[i];
    if (c == '\0')
      return fail (errmsg, "NUL byte at offset %zu in line", i);
    if (c >= 0x80)
      return fail (errmsg, "non-ASCII byte 0x%02x at offset %zu in line "
                   "(only printable ASCII is allowed)", c, i);
    if ((c < 0x20 && c != '\t') || c == 0x7f)
      return fail (errmsg, "control character 0x%02x at offset %zu in line",
                   c, i);
  }
  return 0;
}

/* Find the next word at or after *pos.  Returns false at the end. */
static bool
next_word (const char *line, size_t len, size_t *pos,
           const char **word, size_t *wlen)
{
  size_t i = *pos, start;

  while (i < len && is_blank (line[i]))
    i++;
  if (i == len)
    return false;
  start = i;
  while (i < len && !is_blank (line[i]))
    i++;
  *word = &line[start];
  *wlen = i - start;
  *pos = i;
  return true;
}

/* Index of the first byte of name[0..n) breaking [a-z][a-z0-9<extra>]*,
 * or n if it is valid.
 */
static size_t
bad_name_char (const char *name, size_t n, const char *extra)
{
  size_t i;

  for (i = 0; i < n; i++) {
    if (is_lower (name[i]))
      continue;
    if (i > 0 && (is_digit (name[i]) || strchr (extra, name[i]) != NULL))
      continue;
    return i;
  }
  return n;
}

static int
parse_command (const char *w, size_t n, struct ctl_request *req,
               char **errmsg)
{
  size_t bad;

  if (memchr (w, '=', n) != NULL)
    return fail (errmsg, "missing command: the line starts with the argument "
                 "'%.*s%s' (expected a command such as 'status')",
                 QUOTE_ARGS (w, n));
  bad = bad_name_char (w, n, "-");
  if (bad < n)
    return fail (errmsg, "unknown character '%c' in command '%.*s%s' "
                 "(commands are lower case: a-z, 0-9 and '-', "
                 "starting with a letter)", w[bad], QUOTE_ARGS (w, n));
  req->command = strndup (w, n);
  if (req->command == NULL)
    return fail (errmsg, "out of memory");
  return 0;
}

static int
check_key (const char *w, size_t n, const char *eq, const char *end,
           const struct ctl_request *req, char **errmsg)
{
  size_t klen = (size_t) (eq - w), bad, i;

  if (klen == 0)
    return fail (errmsg, "argument '%.*s%s' has no key (expected key=value)",
                 QUOTE_ARGS (w, n));
  if (eq + 1 == end)
    return fail (errmsg, "argument '%.*s%s' has an empty value "
                 "(expected key=value)", QUOTE_ARGS (w, n));
  bad = bad_name_char (w, klen, "-_");
  if (bad < klen)
    return fail (errmsg, "unknown character '%c' in key '%.*s%s' "
                 "(keys are lower case: a-z, 0-9, '_' and '-', "
                 "starting with a letter)", w[bad], QUOTE_ARGS (w, klen));
  for (i = 0; i < req->nargs; i++) {
    if (req->args[i].key && strlen (req->args[i].key) == klen &&
        memcmp (req->args[i].key, w, klen) == 0)
      return fail (errmsg, "duplicate key '%.*s%s'", QUOTE_ARGS (w, klen));
  }
  return 0;
}

/* Parse one argument word and append it to req. */
static int
parse_arg (const char *w, size_t n, struct ctl_request *req, char **errmsg)
{
  struct ctl_arg *arg;
  const char *eq = memchr (w, '=', n);

  if (req->nargs == CTL_MAX_ARGS)
    return fail (errmsg, "too many arguments (limit %d)", CTL_MAX_ARGS);

  arg = &req->args[req->nargs];
  if (eq == NULL) {
    arg->key = NULL;
    arg->value = strndup (w, n);
  }
  else {
    if (check_key (w, n, eq, w + n, req, errmsg) == -1)
      return -1;
    arg->key = strndup (w, (size_t) (eq - w));
    arg->value = strndup (eq + 1, (size_t) (w + n - eq - 1));
  }
  req->nargs++;                 /* so ctl_request_free frees both */
  if (arg->value == NULL || (eq != NULL && arg->key == NULL))
    return fail (errmsg, "out of memory");
  return 0;
}

int
ctl_parse_line (const char *line, size_t len, struct ctl_request *req,
                char **errmsg)
{
  const char *w;
  size_t n, pos = 0;

  memset (req, 0, sizeof *req);
  *errmsg = NULL;

  if (len >= CTL_MAX_LINE)
    return fail (errmsg, "line too long (limit %d bytes)", CTL_MAX_LINE);
  if (len > 0 && line[len - 1] == '\r')
    len--;
  if (check_bytes (line, len, errmsg) == -1)
    return -1;

  if (!next_word (line, len, &pos, &w, &n))
    return fail (errmsg, "empty line: expected a command such as 'status'");
  if (parse_command (w, n, req, errmsg) == -1)
    goto error;
  while (next_word (line, len, &pos, &w, &n)) {
    if (parse_arg (w, n, req, errmsg) == -1)
      goto error;
  }
  return 0;

 error:
  ctl_request_free (req);
  return -1;
}

void
ctl_request_free (struct ctl_request *req)
{
  size_t i;

  for (i = 0; i < req->nargs; i++) {
    free (req->args[i].key);
    free (req->args[i].value);
  }
  free (req->command);
  memset (req, 0, sizeof *req);
}

const char *
ctl_request_get (const struct ctl_request *req, const char *key)
{
  size_t i;

  for (i = 0; i < req->nargs; i++) {
    if (req->args[i].key && strcmp (req->args[i].key, key) == 0)
      return req->args[i].value;
  }
  return NULL;
}

const char *
ctl_request_word (const struct ctl_request *req, size_t i)
{
  size_t j;

  for (j = 0; j < req->nargs; j++) {
    if (req->args[j].key == NULL && i-- == 0)
      return req->args[j].value;
  }
  return NULL;
}

static bool
key_allowed (const char *const *keys, const char *key)
{
  for (; keys && *keys; keys++) {
    if (strcmp (*keys, key) == 0)
      return true;
  }
  return false;
}

int
ctl_request_check (const struct ctl_request *req,
                   const char *const *keys, size_t max_words,
                   char **errmsg)
{
  size_t i, words = 0;

  *errmsg = NULL;
  for (i = 0; i < req->nargs; i++) {
    const struct ctl_arg *arg = &req->args[i];

    if (arg->key && !key_allowed (keys, arg->key))
      return fail (errmsg, "unknown argument '%s' for command '%s'",
                   arg->key, req->command);
    if (arg->key == NULL && ++words > max_words) {
      if (max_words == 0)
        return fail (errmsg, "unexpected argument '%s': command '%s' "
                     "takes no bare words", arg->value, req->command);
      return fail (errmsg, "too many arguments: command '%s' takes at most "
                   "%zu bare word(s)", req->command, max_words);
    }
  }
  return 0;
}

/*----------------------------------------------------------------------
 * Server.
 */

/* One client slot.  A slot is in use from accept until its thread has
 * been joined; "finished" says the thread has returned (or is about
 * to) and only needs joining.
 */
struct ctl_client {
  struct ctl_server *srv;
  int fd;                       /* owned by the client thread */
  pthread_t thread;
  bool in_use;
  bool finished;
};

/* Locks:
 *
 * dispatch_lock serialises handler calls: it is held around every call
 * of srv->handler (and only there), so handlers never run concurrently
 * and see requests in the order they were dispatched.
 *
 * lock protects clients[].in_use, clients[].finished and started.
 * clients[].thread and clients[].fd are written by the accept thread
 * before the client thread starts and are read-only afterwards (fd is
 * then only used by its client thread).  Never take dispatch_lock
 * while holding lock.
 *
 * The other fields are set in ctl_server_new and read-only after it;
 * ctl_server_free releases them only after joining every thread.
 * Shutdown is signalled without a lock: one byte written to wake_wr
 * (never read back) makes every poll() on wake_rd return at once.
 */
struct ctl_server {
  char *path;
  dev_t dev;                    /* identity of our socket file */
  ino_t ino;
  int listen_fd;
  int wake_rd, wake_wr;         /* wakeup pipe; written once on shutdown */
  ctl_handler handler;
  void *opaque;

  pthread_mutex_t dispatch_lock;
  pthread_mutex_t lock;
  bool started;
  pthread_t accept_thread;
  struct ctl_client clients[CTL_MAX_CLIENTS];
};

/*----------------------------------------------------------------------
 * Dispatching one line.
 */

static char *
error_reply (const char *msg)
{
  struct jbuf b = JBUF_INIT;

  jbuf_raw (&b, "{\"ok\":false,\"error\":");
  jbuf_string (&b, msg ? msg : "out of memory");
  jbuf_raw (&b, "}");
  return jbuf_steal (&b);
}

/* Members appended by a handler must keep the reply on one line. */
static void
flatten (char *s)
{
  for (; *s; s++) {
    if (*s == '\n' || *s == '\r')
      *s = ' ';
  }
}

/* Finish the success reply the handler appended to. */
static char *
ok_reply (struct jbuf *reply)
{
  jbuf_raw (reply, "}");
  if (reply->failed)
    return error_reply (NULL);
  flatten (reply->s);
  return jbuf_steal (reply);
}

/* The handler gets a reply that already holds {"ok":true, so members
 * it appends either as raw ",..." text or with jbuf_key (which then
 * supplies the comma) come out right.
 */
static char *
dispatch (struct ctl_server *srv, const struct ctl_request *req)
{
  struct jbuf reply = JBUF_INIT;
  char *errmsg = NULL, *text;
  int r;

  jbuf_raw (&reply, "{\"ok\":true");
  pthread_mutex_lock (&srv->dispatch_lock);
  r = srv->handler (req, srv->opaque, &reply, &errmsg);
  pthread_mutex_unlock (&srv->dispatch_lock);

  if (r == 0) {
    nbdkit_debug ("control: %s: ok", req->command);
    text = ok_reply (&reply);
  }
  else {
    nbdkit_debug ("control: %s: %s", req->command,
                  errmsg ? errmsg : "internal error");
    text = error_reply (errmsg ? errmsg : "internal error");
  }
  jbuf_free (&reply);
  free (errmsg);
  return text;
}

char *
ctl_server_handle_line (struct ctl_server *srv, const char *line, size_t len)
{
  struct ctl_request req;
  char *errmsg, *reply;

  if (ctl_parse_line (line, len, &req, &errmsg) == -1) {
    nbdkit_debug ("control: bad request: %s",
                  errmsg ? errmsg : "out of memory");
    reply = error_reply (errmsg);
    free (errmsg);
    return reply;
  }
  reply = dispatch (srv, &req);
  ctl_request_free (&req);
  return reply;
}

/*----------------------------------------------------------------------
 * Client threads.
 */

static bool
woken (const struct pollfd *wake)
{
  return (wake->revents & (POLLIN | POLLHUP | POLLERR)) != 0;
}

/* Wait until fd is ready for events.  Returns 0, or -1 on shutdown or
 * poll error.
 */
static int
wait_fd (struct ctl_server *srv, int fd, short events)
{
  struct pollfd fds[2] = {
    { .fd = fd, .events = events },
    { .fd = srv->wake_rd, .events = POLLIN },
  };

  for (;;) {
    if (poll (fds, 2, -1) == -1) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    if (woken (&fds[1]))
      return -1;
    if (fds[0].revents)
      return 0;
  }
}

/* Write all of buf to the (non-blocking) client socket. */
static int
write_all (struct ctl_server *srv, int fd, const char *buf, size_t len)
{
  ssize_t n;

  while (len > 0) {
    n = send (fd, buf, len, MSG_NOSIGNAL);
    if (n > 0) {
      buf += n;
      len -= (size_t) n;
    }
    else if (n == -1 && errno == EINTR)
      continue;
    else if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (wait_fd (srv, fd, POLLOUT) == -1)
        return -1;
    }
    else
      return -1;
  }
  return 0;
}

/* Has ctl_server_free begun? */
static bool
shutting_down (struct ctl_server *srv)
{
  struct pollfd wake = { .fd = srv->wake_rd, .events = POLLIN };

  return poll (&wake, 1, 0) == 1 && woken (&wake);
}

/* Handle one complete line and send the reply.  Once shutdown has
 * begun, lines still buffered are dropped rather than dispatched.
 */
static int
client_line (struct ctl_client *c, const char *line, size_t len)
{
  char *reply;
  const char *text;
  int r;

  if (shutting_down (c->srv))
    return -1;
  reply = ctl_server_handle_line (c->srv, line, len);
  text = reply ? reply : OOM_REPLY;
  r = write_all (c->srv, c->fd, text, strlen (text));
  if (r == 0)
    r = write_all (c->srv, c->fd, "\n", 1);
  free (reply);
  return r;
}

/* Line assembly state of one client. */
struct linebuf {
  char buf[CTL_MAX_LINE];
  size_t used;
  bool discarding;              /* skipping the rest of an over-long line */
};

/* Reply to every complete line in lb, keep any partial line.  A full
 * buffer with no newline is an over-long line: reply once with an
 * error and discard up to the next newline.
 */
static int
client_lines (struct ctl_client *c, struct linebuf *lb)
{
  size_t start = 0, len;
  char *nl;

  while ((nl = memchr (lb->buf + start, '\n', lb->used - start)) != NULL) {
    len = (size_t) (nl - (lb->buf + start));
    if (lb->discarding)
      lb->discarding = false;
    else if (client_line (c, lb->buf + start, len) == -1)
      return -1;
    start += len + 1;
  }
  memmove (lb->buf, lb->buf + start, lb->used - start);
  lb->used -= start;

  if (lb->used == sizeof lb->buf) {
    /* The parser rejects a line this long with the right message. */
    if (!lb->discarding && client_line (c, lb->buf, lb->used) == -1)
      return -1;
    lb->discarding = true;
    lb->used = 0;
  }
  return 0;
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

/* The client sent EOF.  An unfinished line in lb (one without its
 * newline, as in `printf status | socat - UNIX-CONNECT:...`) is a
 * request like any other if the client is still there to read the
 * reply: it only half-closed, which ends its last line.  If the
 * client closed the socket entirely (or died) mid-line, the fragment
 * may be a torn command ("checkpoint-delete c1" of "... c12"), and
 * nobody would see the reply: it is dropped and nothing runs.  The
 * rest of an over-long line was already answered.
 */
static void
client_eof (struct ctl_client *c, struct linebuf *lb)
{
  if (lb->used == 0 || lb->discarding)
    return;
  if (peer_gone (c->fd)) {
    nbdkit_debug ("control: client closed mid-line; "
                  "%zu unfinished byte(s) dropped", lb->used);
    return;
  }
  (void) client_line (c, lb->buf, lb->used);
}

static void
client_serve (struct ctl_client *c)
{
  struct linebuf lb = { .used = 0, .discarding = false };
  ssize_t n;

  for (;;) {
    if (wait_fd (c->srv, c->fd, POLLIN) == -1)
      return;
    n = recv (c->fd, lb.buf + lb.used, sizeof lb.buf - lb.used, 0);
    if (n == 0) {
      client_eof (c, &lb);
      return;
    }
    if (n == -1) {
      if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)
        continue;
      return;
    }
    lb.used += (size_t) n;
    if (client_lines (c, &lb) == -1)
      return;
  }
}

static void *
client_thread (void *vp)
{
  struct ctl_client *c = vp;
  struct ctl_server *srv = c->srv;

  nbdkit_debug ("control: client connected");
  client_serve (c);
  close (c->fd);
  nbdkit_debug ("control: client disconnected");

  pthread_mutex_lock (&srv->lock);
  c->finished = true;
  pthread_mutex_unlock (&srv->lock);
  return NULL;
}

/*----------------------------------------------------------------------
 * Accept thread.
 */

/* Join the threads of finished clients and free their slots. */
static void
reap_clients (struct ctl_server *srv)
{
  size_t i;

  pthread_mutex_lock (&srv->lock);
  for (i = 0; i < CTL_MAX_CLIENTS; i++) {
    struct ctl_client *c = &srv->clients[i];

    if (c->in_use && c->finished) {
      /* The thread no longer needs lock, so joining here is safe. */
      pthread_join (c->thread, NULL);
      c->in_use = c->finished = false;
    }
  }
  pthread_mutex_unlock (&srv->lock);
}

/* Claim a free slot, or NULL if all are in use. */
static struct ctl_client *
claim_slot (struct ctl_server *srv)
{
  struct ctl_client *c = NULL;
  size_t i;

  pthread_mutex_lock (&srv->lock);
  for (i = 0; i < CTL_MAX_CLIENTS && c == NULL; i++) {
    if (!srv->clients[i].in_use) {
      c = &srv->clients[i];
      c->in_use = true;
      c->finished = false;
    }
  }
  pthread_mutex_unlock (&srv->lock);
  return c;
}

static void
release_slot (struct ctl_server *srv, struct ctl_client *c)
{
  pthread_mutex_lock (&srv->lock);
  c->in_use = false;
  pthread_mutex_unlock (&srv->lock);
}

static void
reject_client (int fd)
{
  ssize_t r;

  nbdkit_debug ("control: too many control clients, refusing one");
  do
    r = send (fd, TOO_MANY_CLIENTS_REPLY, strlen (TOO_MANY_CLIENTS_REPLY),
              MSG_NOSIGNAL | MSG_DONTWAIT);
  while (r == -1 && errno == EINTR);
  close (fd);
}

static void
new_client (struct ctl_server *srv, int fd)
{
  struct ctl_client *c;
  int err;

  reap_clients (srv);
  c = claim_slot (srv);
  if (c == NULL) {
    reject_client (fd);
    return;
  }
  c->srv = srv;
  c->fd = fd;
  err = pthread_create (&c->thread, NULL, client_thread, c);
  if (err != 0) {
    nbdkit_debug ("control: cannot start client thread: %s", strerror (err));
    close (fd);
    release_slot (srv, c);
  }
}

/* Wait up to ms milliseconds or until shutdown.  Returns -1 on
 * shutdown.
 */
static int
pause_unless_woken (struct ctl_server *srv, int ms)
{
  struct pollfd wake = { .fd = srv->wake_rd, .events = POLLIN };

  if (poll (&wake, 1, ms) == -1)
    return 0;
  return woken (&wake) ? -1 : 0;
}

static void *
accept_thread (void *vp)
{
  struct ctl_server *srv = vp;
  int fd;

  while (wait_fd (srv, srv->listen_fd, POLLIN) == 0) {
    fd = accept4 (srv->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd >= 0) {
      new_client (srv, fd);
      continue;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ||
        errno == ECONNABORTED)
      continue;                 /* the client went away: wait again */
    /* Out of resources (EMFILE, ENOBUFS, ...): back off, don't spin. */
    nbdkit_debug ("control: accept: %s", strerror (errno));
    if (pause_unless_woken (srv, 100) == -1)
      break;
  }
  return NULL;
}

/*----------------------------------------------------------------------
 * Creating the socket.
 */

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
 * the file's identity for ctl_server_free.
 */
static int
bind_private (struct ctl_server *srv, int fd, const struct sockaddr_un *addr,
              char **errmsg)
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
    return fail (errmsg, "bind %s: %s", srv->path, strerror (err));

  if (chmod (srv->path, 0600) == -1 || lstat (srv->path, &st) == -1) {
    err = errno;
    unlink (srv->path);
    return fail (errmsg, "%s: %s", srv->path, strerror (err));
  }
  srv->dev = st.st_dev;
  srv->ino = st.st_ino;
  return 0;
}

/* Create the listening socket.  On success srv->listen_fd is set and
 * the socket file exists.
 */
static int
open_listener (struct ctl_server *srv, char **errmsg)
{
  struct sockaddr_un addr;
  int fd;

  if (make_addr (srv->path, &addr, errmsg) == -1 ||
      clear_path (&addr, srv->path, errmsg) == -1)
    return -1;

  fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd == -1)
    return fail (errmsg, "socket: %s", strerror (errno));
  if (bind_private (srv, fd, &addr, errmsg) == -1) {
    close (fd);
    return -1;
  }
  if (listen (fd, CTL_BACKLOG) == -1) {
    int err = errno;

    close (fd);
    unlink (srv->path);
    return fail (errmsg, "listen %s: %s", srv->path, strerror (err));
  }
  srv->listen_fd = fd;
  return 0;
}

/* Allocate and initialise everything except the socket. */
static struct ctl_server *
server_alloc (const char *path, ctl_handler handler, void *opaque,
              char **errmsg)
{
  struct ctl_server *srv = calloc (1, sizeof *srv);
  int pfd[2];

  if (srv == NULL || (srv->path = strdup (path)) == NULL) {
    free (srv);
    fail (errmsg, "out of memory");
    return NULL;
  }
  if (pipe2 (pfd, O_CLOEXEC | O_NONBLOCK) == -1) {
    fail (errmsg, "pipe2: %s", strerror (errno));
    free (srv->path);
    free (srv);
    return NULL;
  }
  srv->wake_rd = pfd[0];
  srv->wake_wr = pfd[1];
  srv->listen_fd = -1;
  srv->handler = handler;
  srv->opaque = opaque;
  pthread_mutex_init (&srv->dispatch_lock, NULL);
  pthread_mutex_init (&srv->lock, NULL);
  return srv;
}

struct ctl_server *
ctl_server_new (const char *path, ctl_handler handler, void *opaque,
                char **errmsg)
{
  struct ctl_server *srv;

  *errmsg = NULL;
  srv = server_alloc (path, handler, opaque, errmsg);
  if (srv == NULL)
    return NULL;
  if (open_listener (srv, errmsg) == -1) {
    ctl_server_free (srv);
    return NULL;
  }
  nbdkit_debug ("control: listening on %s", path);
  return srv;
}

int
ctl_server_start (struct ctl_server *srv, char **errmsg)
{
  sigset_t all, old;
  int err;

  *errmsg = NULL;
  pthread_mutex_lock (&srv->lock);
  if (srv->started) {
    pthread_mutex_unlock (&srv->lock);
    return fail (errmsg, "control server already started");
  }

  /* Our threads (the client threads inherit the mask) take no signals,
   * so signals keep going to nbdkit's own threads.
   */
  sigfillset (&all);
  pthread_sigmask (SIG_SETMASK, &all, &old);
  err = pthread_create (&srv->accept_thread, NULL, accept_thread, srv);
  pthread_sigmask (SIG_SETMASK, &old, NULL);
  srv->started = err == 0;
  pthread_mutex_unlock (&srv->lock);

  if (err != 0)
    return fail (errmsg, "cannot start control thread: %s", strerror (err));
  return 0;
}

/*----------------------------------------------------------------------
 * Shutdown.
 */

static void
stop_threads (struct ctl_server *srv)
{
  size_t i;
  ssize_t r;

  /* Never read, so it wakes every poll() from now on. */
  do
    r = write (srv->wake_wr, "x", 1);
  while (r == -1 && errno == EINTR);

  pthread_join (srv->accept_thread, NULL);
  /* No new clients can appear now, so in_use is stable. */
  for (i = 0; i < CTL_MAX_CLIENTS; i++) {
    if (srv->clients[i].in_use) {
      pthread_join (srv->clients[i].thread, NULL);
      srv->clients[i].in_use = false;
    }
  }
}

/* Unlink the socket file, but only if it is still the one we made. */
static void
remove_socket (struct ctl_server *srv)
{
  struct stat st;

  if (lstat (srv->path, &st) == 0 && S_ISSOCK (st.st_mode) &&
      st.st_dev == srv->dev && st.st_ino == srv->ino)
    unlink (srv->path);
}

void
ctl_server_free (struct ctl_server *srv)
{
  if (srv == NULL)
    return;
  if (srv->started)
    stop_threads (srv);
  if (srv->listen_fd >= 0) {
    close (srv->listen_fd);
    remove_socket (srv);
  }
  close (srv->wake_rd);
  close (srv->wake_wr);
  pthread_mutex_destroy (&srv->dispatch_lock);
  pthread_mutex_destroy (&srv->lock);
  free (srv->path);
  free (srv);
}
