/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * Unit test for the control server's life (common/control.c,
 * ctl-socket.c): the socket file's mode, starting twice, the hook (wake
 * and deadlines), a second server on a live socket, the client limit,
 * prompt shutdown with clients still connected, and stale, foreign and
 * bad files at the socket path.
 */

#include <config.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>

#include "ctl-test.h"

static const char too_many[] =
  "{\"ok\":false,\"error\":\"too many control clients\"}";

static char sock_path[PATH_MAX];

/* The hook runs on the server thread, never beside a handler: once
 * after it is set, once per wake, and at each deadline it returns.
 */
static atomic_int hook_calls;
static atomic_bool hook_overlapped;
static pthread_t main_thread;
static atomic_bool hook_on_main;

static int64_t
hook (void *opaque, int64_t now)
{
  int n;

  CHECK (opaque == &hook_calls);
  if (atomic_load (&in_handler) != 0)
    atomic_store (&hook_overlapped, true);
  if (pthread_equal (pthread_self (), main_thread))
    atomic_store (&hook_on_main, true);
  n = atomic_fetch_add (&hook_calls, 1) + 1;
  CHECK (now <= ctl_now_ms ());
  /* Calls 2 and 3 come from deadlines; then none is asked for. */
  return n == 2 || n == 3 ? now + 30 : -1;
}

static bool
wait_calls (int n)
{
  WAIT_UNTIL (atomic_load (&hook_calls) >= n, TIMEOUT_MS / 1000.0, 2);
  return atomic_load (&hook_calls) == n;
}

static void
test_hook (struct ctl_server *srv)
{
  int fd = connect_served (sock_path);
  double t;

  CHECK (fd >= 0);
  main_thread = pthread_self ();
  ctl_server_set_hook (srv, hook, &hook_calls);
  CHECK (wait_calls (1));
  unit_sleep_ms (60);
  CHECK (atomic_load (&hook_calls) == 1);      /* no deadline yet */

  t = fleece_now_mono ();
  ctl_server_wake (srv);                       /* call 2, then 3, 4 */
  CHECK (wait_calls (2));
  CHECK (request (fd, "echo", "{\"ok\":true,\"n\":0}"));
  CHECK (wait_calls (4));
  t = fleece_now_mono () - t;
  CHECK (t >= 0.055);           /* two deadlines 30 ms apart */
  unit_sleep_ms (80);
  CHECK (atomic_load (&hook_calls) == 4);      /* the last returned -1 */

  ctl_server_set_hook (srv, NULL, NULL);
  ctl_server_wake (srv);
  CHECK (request (fd, "echo", "{\"ok\":true,\"n\":0}"));
  CHECK (atomic_load (&hook_calls) == 4);
  CHECK (!atomic_load (&hook_overlapped));
  CHECK (!atomic_load (&hook_on_main));
  close (fd);
}

/* A second server on a live socket is refused; the first one is
 * undisturbed.
 */
static void
test_live_socket (void)
{
  struct ctl_server *srv2;
  char *errmsg = NULL;
  int fd;

  srv2 = ctl_server_new (sock_path, handler, &handled, &errmsg);
  CHECK (srv2 == NULL);
  CHECK (errmsg && strstr (errmsg, "is in use by another process"));
  free (errmsg);
  ctl_server_free (srv2);

  fd = connect_served (sock_path);
  CHECK (fd >= 0);
  close (fd);
}

/* Fill every client slot; one more client is told and dropped. */
static void
test_client_limit (int *fds)
{
  int i, extra;

  for (i = 0; i < CTL_MAX_CLIENTS; i++) {
    fds[i] = connect_served (sock_path);
    CHECK (fds[i] >= 0);
  }
  extra = connect_to (sock_path);
  CHECK (extra >= 0);
  CHECK (expect_reply (extra, too_many));
  CHECK (expect_eof (extra));
  close (extra);

  /* The others are still served. */
  CHECK (request (fds[0], "status", "{\"ok\":true,\"state\":\"idle\"}"));
  CHECK (request (fds[CTL_MAX_CLIENTS - 1], "echo", "{\"ok\":true,\"n\":0}"));
}

/* Shutting down with busy clients is prompt: fds[0] never reads a
 * reply too big for the socket buffers, fds[1] is mid-line.
 */
static void
test_free_busy (struct ctl_server *srv, int *fds)
{
  unsigned before = atomic_load (&handled);
  double t;
  struct stat st;
  int i;

  CHECK (send_str (fds[0], "big\n"));
  CHECK (send_str (fds[1], "echo half a li"));
  WAIT_UNTIL (atomic_load (&handled) != before, 0.4, 2);
  CHECK (atomic_load (&handled) == before + 1);
  unit_sleep_ms (20);                /* let it block writing the reply */

  t = fleece_now_mono ();
  ctl_server_free (srv);
  t = fleece_now_mono () - t;
  CHECK (t < 1.5);
  if (t >= 1.5)
    fprintf (stderr, "  ctl_server_free took %.3f s\n", t);
  CHECK (lstat (sock_path, &st) == -1 && errno == ENOENT);
  CHECK (connect_to (sock_path) == -1);

  CHECK (expect_eof (fds[1]));
  CHECK (expect_eof (fds[2]));
  for (i = 0; i < CTL_MAX_CLIENTS; i++)
    close (fds[i]);
}

static void
test_running_server (void)
{
  struct ctl_server *srv;
  struct stat st;
  char *errmsg = NULL;
  int fds[CTL_MAX_CLIENTS];
  mode_t old_mask;

  make_path (sock_path, "control.sock");
  old_mask = umask (0);         /* mode 0600 must not rely on umask */
  srv = new_server (sock_path);
  umask (old_mask);
  CHECK (srv != NULL);
  if (srv == NULL)
    return;
  CHECK (lstat (sock_path, &st) == 0);
  CHECK (S_ISSOCK (st.st_mode));
  CHECK ((st.st_mode & 07777) == 0600);

  CHECK (ctl_server_start (srv, &errmsg) == 0);
  CHECK (ctl_server_start (srv, &errmsg) == -1);
  CHECK (errmsg && strstr (errmsg, "already started"));
  free (errmsg);

  test_hook (srv);
  test_live_socket ();
  test_client_limit (fds);
  test_free_busy (srv, fds);
}

/* A stale socket (nobody listening) is replaced. */
static void
test_stale_socket (void)
{
  struct sockaddr_un addr;
  struct ctl_server *srv;
  struct stat st;
  char path[PATH_MAX], *errmsg;
  int fd;

  make_path (path, "stale.sock");
  set_addr (&addr, path);
  fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  CHECK (fd >= 0);
  CHECK (bind (fd, (struct sockaddr *) &addr, sizeof addr) == 0);
  close (fd);
  CHECK (lstat (path, &st) == 0 && S_ISSOCK (st.st_mode));

  srv = new_server (path);
  CHECK (srv != NULL);
  if (srv == NULL)
    return;
  CHECK (ctl_server_start (srv, &errmsg) == 0);
  fd = connect_served (path);
  CHECK (fd >= 0);
  ctl_server_free (srv);
  CHECK (expect_eof (fd));
  close (fd);
  CHECK (lstat (path, &st) == -1 && errno == ENOENT);
}

static bool
file_has (const char *path, const char *content)
{
  char buf[64] = "";
  FILE *fp = fopen (path, "r");
  size_t n;

  if (fp == NULL)
    return false;
  n = fread (buf, 1, sizeof buf - 1, fp);
  fclose (fp);
  return n == strlen (content) && memcmp (buf, content, n) == 0;
}

static bool
write_file (const char *path, const char *content)
{
  FILE *fp = fopen (path, "w");

  if (fp == NULL)
    return false;
  fputs (content, fp);
  return fclose (fp) == 0;
}

/* A regular file at the path is refused and left alone; so is a
 * file that replaced our socket by the time we shut down.
 */
static void
test_foreign_file (void)
{
  struct ctl_server *srv;
  struct stat st;
  char path[PATH_MAX], *errmsg = NULL;

  make_path (path, "file");
  CHECK (write_file (path, "hello\n"));
  srv = ctl_server_new (path, handler, &handled, &errmsg);
  CHECK (srv == NULL);
  CHECK (errmsg && strstr (errmsg, "exists and is not a socket; "
                           "refusing to replace it"));
  free (errmsg);
  CHECK (lstat (path, &st) == 0 && S_ISREG (st.st_mode));
  CHECK (file_has (path, "hello\n"));
  unlink (path);

  /* Never started; the socket file is replaced behind our back. */
  srv = new_server (path);
  CHECK (srv != NULL);
  CHECK (unlink (path) == 0);
  CHECK (write_file (path, "other\n"));
  ctl_server_free (srv);
  CHECK (file_has (path, "other\n"));
  unlink (path);

  /* Never started, untouched: free removes the socket. */
  srv = new_server (path);
  CHECK (srv != NULL);
  ctl_server_free (srv);
  CHECK (lstat (path, &st) == -1 && errno == ENOENT);
}

static void
test_bad_paths (void)
{
  char path[PATH_MAX], *errmsg = NULL;

  CHECK (ctl_server_new ("relative.sock", handler, NULL, &errmsg) == NULL);
  CHECK (errmsg && strstr (errmsg, "must be absolute"));
  free (errmsg);

  memset (path, 'p', 300);
  path[0] = '/';
  path[300] = '\0';
  CHECK (ctl_server_new (path, handler, NULL, &errmsg) == NULL);
  CHECK (errmsg && strstr (errmsg, "is too long"));
  free (errmsg);

  make_path (path, "no-such-dir/control.sock");
  CHECK (ctl_server_new (path, handler, NULL, &errmsg) == NULL);
  CHECK (errmsg != NULL);
  free (errmsg);

  ctl_server_free (NULL);
}

int
main (void)
{
  make_tmpdir ("test-control-server");
  test_running_server ();
  test_stale_socket ();
  test_foreign_file ();
  test_bad_paths ();
  remove_tmpdir ();
  UNIT_EXIT ();
}
