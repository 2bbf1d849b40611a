/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * Unit test for the control server's lines (common/control.c,
 * ctl-client.c, ctl-reply.c): a line to a reply without a client, then
 * a real control server in a temporary directory, driven by plain
 * socket clients: reply format, bad lines, pipelined and split lines,
 * over-long lines, disconnects mid-line, a last line ended by the
 * client's EOF (half-close), serialised dispatch, and a client that
 * never reads its replies beside others.
 */

#include <config.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>

#include "ctl-test.h"

static char sock_path[PATH_MAX];

/*----------------------------------------------------------------------
 * Conversations: what a client sends and what it must get back, in
 * order.
 */

struct step {
  enum { ST_SEND, ST_REPLY, ST_QUIET, ST_PAUSE, ST_SHUT, ST_HANGUP } op;
  const char *text;             /* SEND: bytes; REPLY: the reply line */
};

#define SEND(s) { ST_SEND, (s) }
#define REPLY(s) { ST_REPLY, (s) }
#define QUIET { ST_QUIET, NULL }        /* no reply within 20 ms */
#define PAUSE { ST_PAUSE, NULL }        /* 20 ms */
#define SHUT { ST_SHUT, NULL }          /* shutdown (SHUT_WR) */
#define HANGUP { ST_HANGUP, NULL }      /* the server closes */

static bool
run_step (int fd, const struct step *s)
{
  switch (s->op) {
  case ST_SEND: return send_str (fd, s->text);
  case ST_REPLY: return expect_reply (fd, s->text);
  case ST_QUIET: return !readable (fd, 20);
  case ST_PAUSE: unit_sleep_ms (20); return true;
  case ST_SHUT: return shutdown (fd, SHUT_WR) == 0;
  case ST_HANGUP: return expect_eof (fd);
  }
  return false;
}

/* Run steps on a new served connection, then close it. */
#define CONVERSE(...)                                                   \
  do {                                                                  \
    static const struct step steps_[] = { __VA_ARGS__ };                \
    converse (steps_, ARRAY_SIZE (steps_), __LINE__);                   \
  } while (0)

static void
converse (const struct step *steps, size_t n, int line)
{
  int fd = connect_served (sock_path);
  size_t i;

  CHECK (fd >= 0);
  for (i = 0; i < n; i++) {
    if (!run_step (fd, &steps[i])) {
      fprintf (stderr, "%s:%d: step %zu of the conversation failed\n",
               __FILE__, line, i + 1);
      unit_failures++;
    }
  }
  close (fd);
}

/*----------------------------------------------------------------------
 * Tests.
 */

static void
test_handle_line (struct ctl_server *srv)
{
  static const struct {
    const char *line;
    const char *reply;
  } cases[] = {
    { "status", "{\"ok\":true,\"state\":\"idle\"}" },
    { "echo a b=c", "{\"ok\":true,\"n\":2}" },
    { "fail", "{\"ok\":false,\"error\":\"it \\\"failed\\\"\"}" },
    { "fail-null", "{\"ok\":false,\"error\":\"internal error\"}" },
    { "bogus x", "{\"ok\":false,\"error\":\"unknown command 'bogus'\"}" },
    { "", "{\"ok\":false,\"error\":\"empty line: expected a command "
      "such as 'status'\"}" },
  };
  unsigned before;
  size_t i;
  char *r;

  for (i = 0; i < ARRAY_SIZE (cases); i++) {
    r = ctl_server_handle_line (srv, cases[i].line, strlen (cases[i].line));
    CHECK (r && strcmp (r, cases[i].reply) == 0);
    if (r == NULL || strcmp (r, cases[i].reply) != 0)
      fprintf (stderr, "  got '%s'\n", r ? r : "(NULL)");
    free (r);
  }

  /* A big reply is one line. */
  r = ctl_server_handle_line (srv, "big", 3);
  CHECK (r && strlen (r) == BIG_REPLY + 21 &&
         strncmp (r, "{\"ok\":true,\"data\":\"zzz", 22) == 0 &&
         strcmp (r + BIG_REPLY + 19, "\"}") == 0);
  free (r);

  /* A line the parser rejects never reaches the handler. */
  before = atomic_load (&handled);
  r = ctl_server_handle_line (srv, "sta\0tus", 7);
  CHECK (r && strncmp (r, "{\"ok\":false,\"error\":\"NUL byte", 29) == 0);
  free (r);
  CHECK (atomic_load (&handled) == before);
}

static void
test_basic (void)
{
  int fd = connect_served (sock_path);
  unsigned before;

  CHECK (fd >= 0);
  CHECK (request (fd, "status", "{\"ok\":true,\"state\":\"idle\"}"));
  CHECK (request (fd, "echo 1 2 3", "{\"ok\":true,\"n\":3}"));

  before = atomic_load (&handled);
  CHECK (request (fd, "STATUS", "{\"ok\":false,\"error\":\"unknown "
                  "character 'S' in command 'STATUS' (commands are lower "
                  "case: a-z, 0-9 and '-', starting with a letter)\"}"));
  CHECK (request (fd, "   ", "{\"ok\":false,\"error\":\"empty line: "
                  "expected a command such as 'status'\"}"));
  CHECK (atomic_load (&handled) == before);

  CHECK (request (fd, "fail", "{\"ok\":false,\"error\":\"it "
                  "\\\"failed\\\"\"}"));
  CHECK (request (fd, "status\r", "{\"ok\":true,\"state\":\"idle\"}"));
  close (fd);
}

/* Several lines in one write are answered in order. */
static void
test_pipelined (void)
{
  CONVERSE (SEND ("echo\necho a\necho a b\n\nstatus\nfail-null\n"),
            REPLY (N0), REPLY (N1), REPLY (N2), REPLY (EMPTY_LINE),
            REPLY (IDLE),
            REPLY ("{\"ok\":false,\"error\":\"internal error\"}"),
            QUIET);
}

/* A line arriving in pieces is answered once it is complete. */
static void
test_split (void)
{
  CONVERSE (SEND ("ec"), PAUSE, SEND ("ho a"), QUIET, SEND (" b"), PAUSE,
            SEND ("\necho"), REPLY (N2), QUIET,
            SEND ("\n"), REPLY (N0));
}

/* A client leaving mid-line: the partial line is not dispatched. */
static void
test_disconnect_midline (void)
{
  int fd = connect_served (sock_path), fd2;
  unsigned before;

  CHECK (fd >= 0);
  before = atomic_load (&handled);
  CHECK (send_str (fd, "echo never dispatched"));
  unit_sleep_ms (10);
  close (fd);
  unit_sleep_ms (10);
  CHECK (atomic_load (&handled) == before);

  fd2 = connect_served (sock_path);
  CHECK (fd2 >= 0);
  CHECK (request (fd2, "echo x", "{\"ok\":true,\"n\":1}"));
  close (fd2);
}

/* EOF ends the last line when the client only half-closes
 * (`printf status | socat - UNIX-CONNECT:...`): it is answered at
 * once, like a line with its newline, and then the server hangs up.
 */
static void
test_eof_ends_line (void)
{
  int fd = connect_served (sock_path);
  unsigned before;
  double t;

  CHECK (fd >= 0);
  before = atomic_load (&handled);
  CHECK (send_str (fd, "echo a\necho b c"));
  CHECK (expect_reply (fd, "{\"ok\":true,\"n\":1}"));
  CHECK (!readable (fd, 20));   /* no newline yet: still waiting */
  t = fleece_now_mono ();
  CHECK (shutdown (fd, SHUT_WR) == 0);
  CHECK (expect_reply (fd, "{\"ok\":true,\"n\":2}"));
  t = fleece_now_mono () - t;
  CHECK (t < 1.0);
  if (t >= 1.0)
    fprintf (stderr, "  the reply to a line ended by EOF took %.3f s\n", t);
  CHECK (expect_eof (fd));
  CHECK (atomic_load (&handled) == before + 2);
  close (fd);

  /* A bad unfinished line gets its error the same way. */
  CONVERSE (SEND ("stat"), SHUT,
            REPLY ("{\"ok\":false,\"error\":\"unknown command 'stat'\"}"),
            HANGUP);

  /* Nothing unfinished (the line had its newline): no extra reply. */
  CONVERSE (SEND ("echo\n"), SHUT, REPLY (N0), HANGUP);
}

/* An over-long line gets exactly one error; the next line works. */
static void
test_long_line (void)
{
  static char line[5001];
  unsigned before;
  int fd = connect_served (sock_path);

  CHECK (fd >= 0);
  memset (line, 'a', 5000);
  line[5000] = '\n';
  before = atomic_load (&handled);
  CHECK (send_all (fd, line, 4000));
  CHECK (!readable (fd, 20));
  CHECK (send_all (fd, line + 4000, sizeof line - 4000));
  CHECK (send_str (fd, "echo after\n"));
  CHECK (expect_reply (fd, "{\"ok\":false,\"error\":\"line too long "
                       "(limit 4096 bytes)\"}"));
  CHECK (expect_reply (fd, "{\"ok\":true,\"n\":1}"));
  CHECK (!readable (fd, 20));
  CHECK (atomic_load (&handled) == before + 1);

  /* The longest allowed line (newline included) is fine. */
  memset (line, 'x', CTL_MAX_LINE);
  memcpy (line, "echo ", 5);
  line[CTL_MAX_LINE - 1] = '\n';
  CHECK (send_all (fd, line, CTL_MAX_LINE));
  CHECK (expect_reply (fd, "{\"ok\":true,\"n\":1}"));
  close (fd);
}

struct hammer {
  pthread_t thread;
  int fd;
  bool ok;
};

#define HAMMER_LINES 100

static void *
hammer_thread (void *vp)
{
  struct hammer *h = vp;
  char buf[HAMMER_LINES * 8 + 1] = "";
  int i;

  for (i = 0; i < HAMMER_LINES; i++)
    strcat (buf, "echo x\n");
  h->ok = send_str (h->fd, buf);
  for (i = 0; i < HAMMER_LINES && h->ok; i++)
    h->ok = expect_reply (h->fd, "{\"ok\":true,\"n\":1}");
  return NULL;
}

/* Clients in parallel: handlers never overlap. */
static void
test_serialised (void)
{
  struct hammer h[4];
  size_t i;

  for (i = 0; i < 4; i++) {
    h[i].fd = connect_served (sock_path);
    CHECK (h[i].fd >= 0);
  }
  for (i = 0; i < 4; i++)
    pthread_create (&h[i].thread, NULL, hammer_thread, &h[i]);
  for (i = 0; i < 4; i++) {
    pthread_join (h[i].thread, NULL);
    CHECK (h[i].ok);
    close (h[i].fd);
  }
  CHECK (!atomic_load (&overlapped));
}

/* read_line for a long line: takes the bytes up to the newline in
 * big pieces, leaving what follows it unread.
 */
static char *
read_big_line (int fd)
{
  size_t len = 0, cap = 1 << 20;
  char *s = malloc (cap), *nl;
  ssize_t n;

  for (;;) {
    if (len + 65536 > cap)
      s = realloc (s, cap *= 2);
    if (!readable (fd, TIMEOUT_MS) ||
        (n = recv (fd, s + len, 65536, MSG_PEEK)) <= 0) {
      free (s);
      return NULL;
    }
    nl = memchr (s + len, '\n', (size_t) n);
    if (nl)
      n = nl - (s + len) + 1;
    if (recv (fd, s + len, (size_t) n, 0) != n) {
      free (s);
      return NULL;
    }
    len += (size_t) n;
    if (nl) {
      s[len - 1] = '\0';
      return s;
    }
  }
}

/* A client that never reads its replies holds up nobody else, and
 * gets every reply, in order, once it reads.
 */
static void
test_slow_reader (void)
{
  int slow = connect_served (sock_path), fd = connect_served (sock_path);
  size_t total = 0;
  char *big, *r;
  double t;
  int i;

  CHECK (slow >= 0 && fd >= 0);
  CHECK (send_str (slow, "big\necho a\n"));
  unit_sleep_ms (20);                /* the big reply fills the socket */
  t = fleece_now_mono ();
  for (i = 0; i < 20; i++)
    CHECK (request (fd, "echo x y", "{\"ok\":true,\"n\":2}"));
  t = fleece_now_mono () - t;
  CHECK (t < 1.0);
  if (t >= 1.0)
    fprintf (stderr, "  20 requests beside a stalled client: %.3f s\n", t);

  /* Now read it all: the big reply, then the next one. */
  big = read_big_line (slow);
  CHECK (big != NULL);
  if (big)
    total = strlen (big);
  CHECK (total == BIG_REPLY + 21);
  free (big);
  r = read_line (slow);
  CHECK (r && strcmp (r, "{\"ok\":true,\"n\":1}") == 0);
  free (r);
  close (slow);
  close (fd);
}

int
main (void)
{
  struct ctl_server *srv;
  char *errmsg = NULL;

  make_tmpdir ("test-control-lines");
  make_path (sock_path, "control.sock");
  srv = new_server (sock_path);
  CHECK (srv != NULL);
  if (srv) {
    test_handle_line (srv);
    CHECK (ctl_server_start (srv, &errmsg) == 0);
    test_basic ();
    test_pipelined ();
    test_split ();
    test_disconnect_midline ();
    test_eof_ends_line ();
    test_long_line ();
    test_serialised ();
    test_slow_reader ();
    ctl_server_free (srv);
  }
  remove_tmpdir ();
  UNIT_EXIT ();
}
