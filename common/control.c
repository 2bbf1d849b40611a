/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * The control server (see control.h): one thread and one poll() loop
 * over the wake pipe, the listening socket and every client, and the
 * server's start and stop.  Handlers run on the loop's thread, so one
 * at a time.  A client's buffers and the framing of its lines are in
 * ctl-client.c, creating the socket file in ctl-socket.c, the line
 * parser in ctl-parse.c, turning a line into a reply in ctl-reply.c.
 *
 * State and lock.  srv->lock (the only lock) guards the members that
 * other threads write: stopping, wake_pending, hook and hook_opaque.
 * Everything else is either set by ctl_server_new and read-only
 * afterwards (path, sock_id, listen_fd, the pipe, handler, opaque), or
 * owned by one thread: by the server thread while it runs (clients[],
 * accept_after, hook_deadline), by the caller of ctl_server_new /
 * _start / _free otherwise (started, thread).  The lock is never held
 * while calling a handler or the hook, or around any I/O.
 *
 * Invariant of the loop: no call in it blocks except poll(), and
 * every poll() watches the wake pipe: a byte written to it after
 * setting stopping or wake_pending (under the lock) is always seen.
 * Each client holds at most one reply and one line buffer of memory
 * (ctl-client.c).
 */

#include <config.h>

/* accept4 and pipe2; config.h normally defines this. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>

#include <nbdkit-filter.h>

#include "control.h"
#include "ctl-client.h"
#include "ctl-reply.h"
#include "ctl-socket.h"
#include "errors.h"

/* After accept fails for lack of resources (EMFILE, ...). */
#define ACCEPT_BACKOFF_MS 100

struct ctl_server {
  char *path;
  struct ctl_socket_id sock_id;
  int listen_fd;
  int wake_rd, wake_wr;         /* the wake pipe, both ends non-blocking */
  ctl_handler handler;
  void *opaque;

  bool started;
  pthread_t thread;

  struct ctl_client *clients[CTL_MAX_CLIENTS];
  int64_t accept_after;         /* don't accept before (ms), 0: now */
  int64_t hook_deadline;        /* -1: none */

  pthread_mutex_t lock;
  bool stopping;
  bool wake_pending;
  ctl_hook hook;
  void *hook_opaque;
};

char *
ctl_server_handle_line (struct ctl_server *srv, const char *line, size_t len)
{
  return ctl_reply (srv->handler, srv->opaque, line, len);
}

int64_t
ctl_now_ms (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*----------------------------------------------------------------------
 * Taking clients on.
 */

/* A free slot for the client on fd, or the "too many" reply. */
static void
new_client (struct ctl_server *srv, int fd)
{
  size_t i;

  for (i = 0; i < CTL_MAX_CLIENTS; i++) {
    if (srv->clients[i] == NULL)
      break;
  }
  if (i == CTL_MAX_CLIENTS)
    ctl_client_reject (fd);
  else
    srv->clients[i] = ctl_client_new (fd);
}

static void
close_client (struct ctl_server *srv, size_t i, bool drain)
{
  ctl_client_close (srv->clients[i], drain);
  srv->clients[i] = NULL;
}

/* Take every waiting connection. */
static void
accept_clients (struct ctl_server *srv)
{
  int fd;

  for (;;) {
    fd = accept4 (srv->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd >= 0) {
      new_client (srv, fd);
      continue;
    }
    if (errno == EINTR || errno == ECONNABORTED)
      continue;                 /* the client went away: next one */
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      /* Out of resources (EMFILE, ENOBUFS, ...): back off, don't spin. */
      nbdkit_debug ("control: accept: %s", strerror (errno));
      srv->accept_after = ctl_now_ms () + ACCEPT_BACKOFF_MS;
    }
    return;
  }
}

/*----------------------------------------------------------------------
 * The loop.
 */

/* Empty the wake pipe, then read the flags it announced.  Returns
 * true if the server is stopping.
 */
static bool
take_wake (struct ctl_server *srv, bool *wake)
{
  char buf[64];
  bool stopping;

  while (read (srv->wake_rd, buf, sizeof buf) > 0)
    ;
  pthread_mutex_lock (&srv->lock);
  stopping = srv->stopping;
  *wake = srv->wake_pending;
  srv->wake_pending = false;
  pthread_mutex_unlock (&srv->lock);
  return stopping;
}

static void
run_hook (struct ctl_server *srv)
{
  ctl_hook hook;
  void *opaque;

  pthread_mutex_lock (&srv->lock);
  hook = srv->hook;
  opaque = srv->hook_opaque;
  pthread_mutex_unlock (&srv->lock);
  srv->hook_deadline = hook ? hook (opaque, ctl_now_ms ()) : -1;
}

/* Milliseconds poll may sleep: until the hook's deadline or the end
 * of an accept back-off, or forever (-1).
 */
static int
poll_timeout (const struct ctl_server *srv, int64_t now)
{
  int64_t t = -1;

  if (srv->hook_deadline >= 0)
    t = srv->hook_deadline - now;
  if (srv->accept_after > now && (t < 0 || srv->accept_after - now < t))
    t = srv->accept_after - now;
  if (t < 0)
    return srv->hook_deadline >= 0 ? 0 : -1;
  return t > 60000 ? 60000 : (int) t;
}

static void *
server_thread (void *vp)
{
  struct ctl_server *srv = vp;
  struct pollfd fds[2 + CTL_MAX_CLIENTS];
  size_t slot[CTL_MAX_CLIENTS], n, k, i;
  int64_t now;
  bool wake;

  for (;;) {
    now = ctl_now_ms ();
    fds[0] = (struct pollfd) { .fd = srv->wake_rd, .events = POLLIN };
    fds[1] = (struct pollfd) { .fd = srv->listen_fd, .events = POLLIN };
    if (srv->accept_after > now)
      fds[1].fd = -1;           /* poll ignores it */
    for (i = 0, n = 0; i < CTL_MAX_CLIENTS; i++) {
      if (srv->clients[i] == NULL)
        continue;
      fds[2 + n] = (struct pollfd) {
        .fd = ctl_client_fd (srv->clients[i]),
        .events = ctl_client_events (srv->clients[i])
      };
      slot[n++] = i;
    }
    if (poll (fds, 2 + n, poll_timeout (srv, now)) == -1) {
      if (errno != EINTR) {
        /* Out of memory for poll itself: wait for the pipe alone. */
        nbdkit_debug ("control: poll: %s", strerror (errno));
        fds[0].revents = 0;
        (void) poll (fds, 1, ACCEPT_BACKOFF_MS);
      }
      n = 0;
      fds[1].revents = 0;
    }

    if (fds[0].revents) {
      if (take_wake (srv, &wake))
        break;
      if (wake)
        run_hook (srv);
    }
    for (k = 0; k < n; k++) {
      if (ctl_client_progress (srv, srv->clients[slot[k]],
                               fds[2 + k].revents) == -1)
        close_client (srv, slot[k], false);
    }
    if (fds[1].fd >= 0 && fds[1].revents)
      accept_clients (srv);
    if (srv->hook_deadline >= 0 && ctl_now_ms () >= srv->hook_deadline)
      run_hook (srv);
  }

  /* Shutting down: lines not yet read are dropped unrun. */
  for (i = 0; i < CTL_MAX_CLIENTS; i++) {
    if (srv->clients[i])
      close_client (srv, i, true);
  }
  return NULL;
}

/*----------------------------------------------------------------------
 * Life of the server.
 */

struct ctl_server *
ctl_server_new (const char *path, ctl_handler handler, void *opaque,
                char **errmsg)
{
  struct ctl_server *srv = calloc (1, sizeof *srv);
  int pfd[2];

  *errmsg = NULL;
  if (srv == NULL || (srv->path = strdup (path)) == NULL) {
    free (srv);
    fleece_errorf (errmsg, "out of memory");
    return NULL;
  }
  if (pipe2 (pfd, O_CLOEXEC | O_NONBLOCK) == -1) {
    fleece_errorf (errmsg, "pipe2: %s", strerror (errno));
    free (srv->path);
    free (srv);
    return NULL;
  }
  srv->wake_rd = pfd[0];
  srv->wake_wr = pfd[1];
  srv->handler = handler;
  srv->opaque = opaque;
  srv->hook_deadline = -1;
  pthread_mutex_init (&srv->lock, NULL);
  srv->listen_fd = ctl_socket_listen (path, &srv->sock_id, errmsg);
  if (srv->listen_fd == -1) {
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
  if (srv->started)
    return fleece_errorf (errmsg, "control server already started");

  /* The server thread takes no signals, so signals keep going to
   * nbdkit's own threads.
   */
  sigfillset (&all);
  pthread_sigmask (SIG_SETMASK, &all, &old);
  err = pthread_create (&srv->thread, NULL, server_thread, srv);
  pthread_sigmask (SIG_SETMASK, &old, NULL);
  if (err != 0)
    return fleece_errorf (errmsg, "cannot start control thread: %s",
                          strerror (err));
  srv->started = true;
  return 0;
}

/* Set a flag under the lock, then poke the loop.  A full pipe already
 * holds a wakeup, so EAGAIN is fine.
 */
static void
poke (struct ctl_server *srv, bool *flag)
{
  ssize_t r;

  pthread_mutex_lock (&srv->lock);
  *flag = true;
  pthread_mutex_unlock (&srv->lock);
  do
    r = write (srv->wake_wr, "x", 1);
  while (r == -1 && errno == EINTR);
}

void
ctl_server_set_hook (struct ctl_server *srv, ctl_hook hook, void *opaque)
{
  pthread_mutex_lock (&srv->lock);
  srv->hook = hook;
  srv->hook_opaque = opaque;
  pthread_mutex_unlock (&srv->lock);
  poke (srv, &srv->wake_pending);
}

void
ctl_server_wake (struct ctl_server *srv)
{
  poke (srv, &srv->wake_pending);
}

void
ctl_server_free (struct ctl_server *srv)
{
  if (srv == NULL)
    return;
  if (srv->started) {
    poke (srv, &srv->stopping);
    pthread_join (srv->thread, NULL);
  }
  if (srv->listen_fd >= 0) {
    close (srv->listen_fd);
    ctl_socket_remove (srv->path, &srv->sock_id);
  }
  close (srv->wake_rd);
  close (srv->wake_wr);
  pthread_mutex_destroy (&srv->lock);
  free (srv->path);
  free (srv);
}
