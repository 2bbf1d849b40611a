/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * libFuzzer harness for the control socket's line framing
 * (common/ctl-client.c: the per-client line buffer, over-long lines,
 * partial lines at EOF) through a real, started control server.  The
 * input is the byte stream one client sends; each run connects, sends
 * it (reading replies at the same time), closes its sending side and
 * reads until the server hangs up.
 *
 * So that short inputs can make lines longer than the 4096-byte limit,
 * the byte 0xFE starts a run: 0xFE N C stands for the byte C repeated
 * (N + 1) * 32 times (a space if C is a newline).  0xFE itself never
 * reaches the server.  Streams are cut at 16 KiB.
 *
 * Checks: the server sends exactly one reply line per request line,
 * in order, each equal to what ctl_server_handle_line answers for
 * that line alone, where
 * - a line of fewer than 4096 bytes before its newline is a request;
 * - a longer line gets one reply (the parser's "line too long" for
 *   its first 4096 bytes) and the rest of it up to the newline is
 *   skipped;
 * - at EOF (the harness half-closes: shutdown(SHUT_WR), then reads) an
 *   unfinished line is answered like a complete one, unless it is
 *   already over the limit, which was answered as above.
 * A server that stops answering for 10 s is a failure (no hang).
 */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "control.h"
#include "ctl-owner.h"
#include "json-check.h"
#include "fuzz-check.h"

#define RUN_BYTE 0xfe
#define MAX_STREAM (16 * 1024)
#define TIMEOUT_MS 10000

static struct ctl_server *srv;
static char dir[4096];
static struct sockaddr_un addr;

static void
cleanup (void)
{
  ctl_server_free (srv);        /* also unlinks the socket */
  srv = NULL;
  rmdir (dir);
}

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  char *errmsg = NULL;

  fuzz_make_tmpdir (dir, sizeof dir);
  memset (&addr, 0, sizeof addr);
  addr.sun_family = AF_UNIX;
  if ((size_t) snprintf (addr.sun_path, sizeof addr.sun_path, "%s/ctl.sock",
                         dir) >= sizeof addr.sun_path) {
    fprintf (stderr, "TMPDIR is too long for a socket path\n");
    abort ();
  }
  srv = ctl_server_new (addr.sun_path, fleece_dispatch, NULL, &errmsg);
  if (srv == NULL || ctl_server_start (srv, &errmsg) == -1) {
    fprintf (stderr, "control server %s: %s\n", addr.sun_path,
             errmsg ? errmsg : "failed");
    abort ();
  }
  atexit (cleanup);
  return 0;
}

/* The dispatcher's dlsym lookups fail in this process (no filters),
 * so glibc gives the server thread a dlerror message buffer, freed
 * when the thread exits (at ctl_server_free, after the last run).
 * LSan may report that buffer when libFuzzer looks for leaks after a
 * run.  It is not a leak (one buffer per thread, reused), so it is
 * suppressed; nothing else is.
 */
const char *__lsan_default_suppressions (void);
const char *
__lsan_default_suppressions (void)
{
  return "leak:_dlerror_run\n";
}

/* Expand runs; returns the stream length. */
static size_t
expand (const uint8_t *data, size_t size, char *out)
{
  size_t i, n = 0, k, count;
  char c;

  for (i = 0; i < size && n < MAX_STREAM; i++) {
    if (data[i] != RUN_BYTE) {
      out[n++] = (char) data[i];
      continue;
    }
    if (i + 2 >= size)
      break;
    count = ((size_t) data[i + 1] + 1) * 32;
    /* Thousands of empty lines would only make runs slow. */
    c = data[i + 2] == '\n' ? ' ' : (char) data[i + 2];
    for (k = 0; k < count && n < MAX_STREAM; k++)
      out[n++] = c;
    i += 2;
  }
  return n;
}

/* Send stream, receive everything until EOF.  Returns the malloc'd
 * replies (NUL-terminated), *len bytes.
 */
static char *
converse (const char *stream, size_t slen, size_t *len)
{
  size_t sent = 0, cap = 4096, got = 0;
  char *buf = malloc (cap);
  bool wr_open = true;
  int fd;

  CHECK (buf != NULL);
  fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  CHECK (fd >= 0);
  CHECK (connect (fd, (const struct sockaddr *) &addr, sizeof addr) == 0);
  CHECK (fcntl (fd, F_SETFL, O_NONBLOCK) == 0);

  for (;;) {
    struct pollfd p = { .fd = fd, .events = POLLIN };
    ssize_t r;

    if (wr_open && sent == slen) {
      CHECK (shutdown (fd, SHUT_WR) == 0);
      wr_open = false;
    }
    if (wr_open)
      p.events |= POLLOUT;
    r = poll (&p, 1, TIMEOUT_MS);
    if (r == -1 && errno == EINTR)
      continue;
    CHECK (r >= 0);
    if (r == 0) {
      fprintf (stderr, "no progress for %d ms: sent %zu of %zu bytes, "
               "received %zu\n", TIMEOUT_MS, sent, slen, got);
      CHECK (!"the server keeps answering");
    }
    if (wr_open && (p.revents & POLLOUT)) {
      r = send (fd, stream + sent, slen - sent, MSG_NOSIGNAL);
      if (r > 0)
        sent += (size_t) r;
      else
        CHECK (r == -1 && (errno == EAGAIN || errno == EINTR));
    }
    if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
      if (cap - got < 4096) {
        cap *= 2;
        buf = realloc (buf, cap);
        CHECK (buf != NULL);
      }
      r = recv (fd, buf + got, cap - got - 1, 0);
      if (r == 0)
        break;                  /* the server hung up */
      if (r > 0)
        got += (size_t) r;
      else
        CHECK (errno == EAGAIN || errno == EINTR);
    }
  }
  /* The server closes only after reading our EOF, so all was sent. */
  CHECK (!wr_open && sent == slen);
  close (fd);
  buf[got] = '\0';
  *len = got;
  return buf;
}

/* Compare the next reply line with what the line alone gets. */
static void
expect_reply (const char *line, size_t len, const char **pos,
              const char *end)
{
  char *want = ctl_server_handle_line (srv, line, len);
  const char *nl;
  size_t wlen;

  CHECK (want != NULL);
  wlen = strlen (want);
  nl = memchr (*pos, '\n', (size_t) (end - *pos));
  if (nl == NULL) {
    fprintf (stderr, "missing reply, expected %s\n", want);
    CHECK (!"one reply per request line");
  }
  if ((size_t) (nl - *pos) != wlen || memcmp (*pos, want, wlen) != 0) {
    fprintf (stderr, "reply %.*s\nexpected %s\n",
             (int) (nl - *pos), *pos, want);
    CHECK (!"each reply is the line's own reply");
  }
  CHECK (json_check (*pos, wlen));
  *pos = nl + 1;
  free (want);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  char *stream = malloc (MAX_STREAM);
  char *replies;
  const char *pos, *end, *line;
  size_t slen, rlen, rest;

  CHECK (stream != NULL);
  slen = expand (data, size, stream);
  replies = converse (stream, slen, &rlen);
  pos = replies;
  end = replies + rlen;

  /* The reference framing. */
  line = stream;
  rest = slen;
  for (;;) {
    const char *nl = memchr (line, '\n', rest);
    size_t len = nl ? (size_t) (nl - line) : rest;

    if (len >= CTL_MAX_LINE)
      expect_reply (line, CTL_MAX_LINE, &pos, end);
    else if (nl || len > 0)     /* EOF ends an unfinished line */
      expect_reply (line, len, &pos, end);
    if (nl == NULL)
      break;
    rest -= len + 1;
    line = nl + 1;
  }
  if (pos != end) {
    fprintf (stderr, "unexpected extra replies: %.*s\n",
             (int) (end - pos), pos);
    CHECK (!"no reply without a request line");
  }

  free (replies);
  free (stream);
  return 0;
}
