/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * Unit test for the control server (common/control.c, ctl-parse.c,
 * ctl-socket.c): the request line parser and its helpers, then a real
 * control server in a temporary directory, driven by plain socket
 * clients: reply format, bad lines, pipelined and split lines,
 * over-long lines, disconnects mid-line, a last line ended by the
 * client's EOF (half-close), the client limit, serialised dispatch, a
 * client that never reads its replies beside others, the hook (wake
 * and deadlines), stale/foreign/live files at the socket path, and
 * prompt shutdown with clients still connected.
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/un.h>

#include "control.h"
#include "json.h"
#include "unit.h"

#define TIMEOUT_MS 2000         /* for any single expected reply */
#define BIG_REPLY (4 * 1024 * 1024)

static const char too_many[] =
  "{\"ok\":false,\"error\":\"too many control clients\"}";

/*----------------------------------------------------------------------
 * Parser.
 */

struct parse_case {
  const char *line;
  size_t len;                   /* 0: strlen (line) */
  const char *error;            /* NULL: must parse; else substring */
};

static void
check_parse_case (const struct parse_case *t)
{
  struct ctl_request req;
  char *errmsg = (char *) "unset";
  size_t len = t->len ? t->len : strlen (t->line);
  int r = ctl_parse_line (t->line, len, &req, &errmsg);

  if (t->error == NULL) {
    CHECK (r == 0);
    CHECK (errmsg == NULL);
    if (r == -1)
      fprintf (stderr, "  line '%s': %s\n", t->line, errmsg);
  }
  else {
    CHECK (r == -1);
    CHECK (errmsg != NULL && strstr (errmsg, t->error) != NULL);
    CHECK (req.command == NULL && req.nargs == 0);
    if (r == 0 || errmsg == NULL || strstr (errmsg, t->error) == NULL)
      fprintf (stderr, "  line '%s': got '%s', expected '%s'\n",
               t->line, r == 0 ? "success" : errmsg, t->error);
    free (errmsg);
  }
  ctl_request_free (&req);
}

static void
test_parse_table (void)
{
  static const struct parse_case cases[] = {
    { "status", 0, NULL },
    { "snapshot-begin checkpoint=c1 since=c0", 0, NULL },
    { "checkpoint-create c1", 0, NULL },
    { "status\r", 0, NULL },
    { "\tstatus \t a=b\t", 0, NULL },
    { "cmd k=v=w", 0, NULL },
    { "a1-b x_y-z9=1 w0rd!~", 0, NULL },
    { "c 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16", 0, NULL },

    { "", 0, "empty line: expected a command such as 'status'" },
    { "   \t ", 0, "empty line" },
    { "\r", 1, "empty line" },
    { "Status", 0, "unknown character 'S' in command 'Status'" },
    { "1status", 0, "unknown character '1' in command" },
    { "sta_tus", 0, "unknown character '_' in command" },
    { "=x", 0, "missing command" },
    { "k=v status", 0, "missing command" },
    { "status =x", 0, "argument '=x' has no key" },
    { "status k=", 0, "argument 'k=' has an empty value" },
    { "status K=v", 0, "unknown character 'K' in key 'K'" },
    { "status 1k=v", 0, "unknown character '1' in key" },
    { "s since=a since=b", 0, "duplicate key 'since'" },
    { "c 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17", 0,
      "too many arguments (limit 16)" },
    { "status\x01", 0, "control character 0x01" },
    { "stat\rus", 0, "control character 0x0d" },
    { "status\r\r", 0, "control character 0x0d" },
    { "status \x7f", 0, "control character 0x7f" },
    { "status \xff", 0, "non-ASCII byte 0xff" },
    { "status caf\xc3\xa9", 0, "non-ASCII byte 0xc3" },
    { "sta\0tus", 7, "NUL byte" },
  };
  size_t i;

  for (i = 0; i < sizeof cases / sizeof cases[0]; i++)
    check_parse_case (&cases[i]);
}

/* Exactly CTL_MAX_LINE - 1 bytes is the longest line. */
static void
test_parse_length (void)
{
  static char line[CTL_MAX_LINE + 1];
  struct ctl_request req;
  char *errmsg;

  memset (line, 'x', sizeof line);
  memcpy (line, "echo ", 5);
  CHECK (ctl_parse_line (line, CTL_MAX_LINE - 1, &req, &errmsg) == 0);
  CHECK (req.nargs == 1 && strlen (req.args[0].value) == CTL_MAX_LINE - 6);
  ctl_request_free (&req);

  CHECK (ctl_parse_line (line, CTL_MAX_LINE, &req, &errmsg) == -1);
  CHECK (errmsg && strcmp (errmsg, "line too long (limit 4096 bytes)") == 0);
  free (errmsg);
}

static void
test_request_access (void)
{
  static const char line[] =
    "snapshot-begin checkpoint=c1 w1 since=c0 w2 x=a=b";
  struct ctl_request req;
  char *errmsg;

  CHECK (ctl_parse_line (line, strlen (line), &req, &errmsg) == 0);
  CHECK (strcmp (req.command, "snapshot-begin") == 0);
  CHECK (req.nargs == 5);
  CHECK (strcmp (ctl_request_get (&req, "checkpoint"), "c1") == 0);
  CHECK (strcmp (ctl_request_get (&req, "since"), "c0") == 0);
  CHECK (strcmp (ctl_request_get (&req, "x"), "a=b") == 0);
  CHECK (ctl_request_get (&req, "w1") == NULL);
  CHECK (ctl_request_get (&req, "nope") == NULL);
  CHECK (strcmp (ctl_request_word (&req, 0), "w1") == 0);
  CHECK (strcmp (ctl_request_word (&req, 1), "w2") == 0);
  CHECK (ctl_request_word (&req, 2) == NULL);
  ctl_request_free (&req);
  CHECK (req.command == NULL && req.nargs == 0);
  ctl_request_free (&req);      /* twice is fine */
}

/* Parse line and run ctl_request_check on it; return the message
 * (malloc'd) or NULL when the check passed.
 */
static char *
check_msg (const char *line, const char *const *keys, size_t max_words)
{
  struct ctl_request req;
  char *errmsg = NULL;
  int r;

  if (ctl_parse_line (line, strlen (line), &req, &errmsg) == -1)
    return errmsg;
  r = ctl_request_check (&req, keys, max_words, &errmsg);
  CHECK ((r == 0) == (errmsg == NULL));
  ctl_request_free (&req);
  return errmsg;
}

static void
test_request_check (void)
{
  static const char *const keys[] = { "checkpoint", "since", NULL };
  char *m;

  CHECK (check_msg ("snapshot-begin checkpoint=c1 since=c0", keys, 0)
         == NULL);
  CHECK (check_msg ("status", NULL, 0) == NULL);
  CHECK (check_msg ("checkpoint-create c1", NULL, 1) == NULL);

  m = check_msg ("snapshot-begin foo=1", keys, 0);
  CHECK (m && strcmp (m, "unknown argument 'foo' for command "
                      "'snapshot-begin'") == 0);
  free (m);

  m = check_msg ("status a=1", NULL, 0);
  CHECK (m && strstr (m, "unknown argument 'a'"));
  free (m);

  m = check_msg ("checkpoint-create c1 c2", NULL, 1);
  CHECK (m && strstr (m, "too many arguments"));
  free (m);

  m = check_msg ("status now", NULL, 0);
  CHECK (m && strstr (m, "unexpected argument 'now'"));
  free (m);
}

/*----------------------------------------------------------------------
 * The test handler.
 */

static atomic_uint handled;     /* number of handler calls */
static atomic_int in_handler;   /* handlers running right now */
static atomic_bool overlapped;  /* two handlers ever ran at once */

static int
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
 * Client helpers.
 */

static void
sleep_ms (int ms)
{
  struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

  nanosleep (&ts, NULL);
}

static double
now_s (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void
set_addr (struct sockaddr_un *addr, const char *path)
{
  size_t len = strlen (path);

  if (len >= sizeof addr->sun_path)
    abort ();
  memset (addr, 0, sizeof *addr);
  addr->sun_family = AF_UNIX;
  memcpy (addr->sun_path, path, len + 1);
}

static int
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

static bool
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

static bool
send_str (int fd, const char *s)
{
  return send_all (fd, s, strlen (s));
}

/* Is there something to read (data or EOF) within ms? */
static bool
readable (int fd, int ms)
{
  struct pollfd p = { .fd = fd, .events = POLLIN };

  return poll (&p, 1, ms) == 1;
}

/* Read one reply line (without the newline) into a malloc'd string.
 * NULL on EOF, error or timeout.
 */
static char *
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

static bool
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
static bool
expect_eof (int fd)
{
  char c;

  return readable (fd, TIMEOUT_MS) && recv (fd, &c, 1, 0) == 0;
}

static bool
request (int fd, const char *line, const char *expected)
{
  return send_str (fd, line) && send_str (fd, "\n") &&
    expect_reply (fd, expected);
}

/* Connect and prove the server took us on, retrying while it still
 * counts clients that have just disconnected.
 */
static int
connect_served (const char *path)
{
  double deadline = now_s () + TIMEOUT_MS / 1000.0;
  char *reply;
  int fd;

  while (now_s () < deadline) {
    fd = connect_to (path);
    if (fd == -1)
      return -1;
    if (send_str (fd, "status\n") && (reply = read_line (fd)) != NULL) {
      bool ok = strcmp (reply, "{\"ok\":true,\"state\":\"idle\"}") == 0;

      free (reply);
      if (ok)
        return fd;
    }
    close (fd);
    sleep_ms (5);
  }
  return -1;
}

/*----------------------------------------------------------------------
 * Server tests.
 */

static char tmpdir[PATH_MAX];
static char sock_path[PATH_MAX];

static void
make_path (char *buf, const char *name)
{
  if (snprintf (buf, PATH_MAX, "%s/%s", tmpdir, name) >= PATH_MAX)
    abort ();
}

static struct ctl_server *
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

  for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
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
  int fd = connect_served (sock_path);

  CHECK (fd >= 0);
  CHECK (send_str (fd, "echo\necho a\necho a b\n\nstatus\nfail-null\n"));
  CHECK (expect_reply (fd, "{\"ok\":true,\"n\":0}"));
  CHECK (expect_reply (fd, "{\"ok\":true,\"n\":1}"));
  CHECK (expect_reply (fd, "{\"ok\":true,\"n\":2}"));
  CHECK (expect_reply (fd, "{\"ok\":false,\"error\":\"empty line: "
                       "expected a command such as 'status'\"}"));
  CHECK (expect_reply (fd, "{\"ok\":true,\"state\":\"idle\"}"));
  CHECK (expect_reply (fd, "{\"ok\":false,\"error\":\"internal error\"}"));
  CHECK (!readable (fd, 20));
  close (fd);
}

/* A line arriving in pieces is answered once it is complete. */
static void
test_split (void)
{
  int fd = connect_served (sock_path);

  CHECK (fd >= 0);
  CHECK (send_str (fd, "ec"));
  sleep_ms (20);
  CHECK (send_str (fd, "ho a"));
  CHECK (!readable (fd, 20));
  CHECK (send_str (fd, " b"));
  sleep_ms (20);
  CHECK (send_str (fd, "\necho"));
  CHECK (expect_reply (fd, "{\"ok\":true,\"n\":2}"));
  CHECK (!readable (fd, 20));
  CHECK (send_str (fd, "\n"));
  CHECK (expect_reply (fd, "{\"ok\":true,\"n\":0}"));
  close (fd);
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
  sleep_ms (10);
  close (fd);
  sleep_ms (10);
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
  t = now_s ();
  CHECK (shutdown (fd, SHUT_WR) == 0);
  CHECK (expect_reply (fd, "{\"ok\":true,\"n\":2}"));
  t = now_s () - t;
  CHECK (t < 1.0);
  if (t >= 1.0)
    fprintf (stderr, "  the reply to a line ended by EOF took %.3f s\n", t);
  CHECK (expect_eof (fd));
  CHECK (atomic_load (&handled) == before + 2);
  close (fd);

  /* A bad unfinished line gets its error the same way. */
  fd = connect_served (sock_path);
  CHECK (fd >= 0);
  CHECK (send_str (fd, "stat"));
  CHECK (shutdown (fd, SHUT_WR) == 0);
  CHECK (expect_reply (fd, "{\"ok\":false,\"error\":\"unknown command "
                       "'stat'\"}"));
  CHECK (expect_eof (fd));
  close (fd);

  /* Nothing unfinished (the line had its newline): no extra reply. */
  fd = connect_served (sock_path);
  CHECK (fd >= 0);
  CHECK (send_str (fd, "echo\n"));
  CHECK (shutdown (fd, SHUT_WR) == 0);
  CHECK (expect_reply (fd, "{\"ok\":true,\"n\":0}"));
  CHECK (expect_eof (fd));
  close (fd);
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
  sleep_ms (20);                /* the big reply fills the socket */
  t = now_s ();
  for (i = 0; i < 20; i++)
    CHECK (request (fd, "echo x y", "{\"ok\":true,\"n\":2}"));
  t = now_s () - t;
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
  double deadline = now_s () + TIMEOUT_MS / 1000.0;

  while (atomic_load (&hook_calls) < n && now_s () < deadline)
    sleep_ms (2);
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
  sleep_ms (60);
  CHECK (atomic_load (&hook_calls) == 1);      /* no deadline yet */

  t = now_s ();
  ctl_server_wake (srv);                       /* call 2, then 3, 4 */
  CHECK (wait_calls (2));
  CHECK (request (fd, "echo", "{\"ok\":true,\"n\":0}"));
  CHECK (wait_calls (4));
  t = now_s () - t;
  CHECK (t >= 0.055);           /* two deadlines 30 ms apart */
  sleep_ms (80);
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
  for (i = 0; i < 200 && atomic_load (&handled) == before; i++)
    sleep_ms (2);
  CHECK (atomic_load (&handled) == before + 1);
  sleep_ms (20);                /* let it block writing the reply */

  t = now_s ();
  ctl_server_free (srv);
  t = now_s () - t;
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

  test_handle_line (srv);
  CHECK (ctl_server_start (srv, &errmsg) == 0);
  CHECK (ctl_server_start (srv, &errmsg) == -1);
  CHECK (errmsg && strstr (errmsg, "already started"));
  free (errmsg);

  test_basic ();
  test_pipelined ();
  test_split ();
  test_disconnect_midline ();
  test_eof_ends_line ();
  test_long_line ();
  test_serialised ();
  test_slow_reader ();
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
  const char *t = getenv ("TMPDIR");

  test_parse_table ();
  test_parse_length ();
  test_request_access ();
  test_request_check ();

  /* Socket paths must fit in sun_path (108 bytes). */
  if (snprintf (tmpdir, sizeof tmpdir, "%s/test-control.XXXXXX",
                t && *t && strlen (t) < 60 ? t : "/tmp") >= 80)
    abort ();
  if (mkdtemp (tmpdir) == NULL) {
    perror ("mkdtemp");
    exit (EXIT_FAILURE);
  }
  test_running_server ();
  test_stale_socket ();
  test_foreign_file ();
  test_bad_paths ();
  if (rmdir (tmpdir) == -1) {
    perror (tmpdir);
    unit_failures++;
  }
  UNIT_EXIT ();
}
