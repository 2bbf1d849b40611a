/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * The control socket (product contract, section 4): a Unix stream
 * socket, mode 0600.  A request is one line (ctl-parse.h); the reply
 * is one line of JSON, {"ok":true,...} or {"ok":false,"error":"..."}.
 *
 * Framing: a line ends at a newline.  The last line may also end at
 * the client's EOF when the client only shut down its sending side
 * (shutdown(SHUT_WR), as `printf status | socat - UNIX-CONNECT:...`
 * does): it is answered at once, then the server closes.  A client
 * that closes the socket entirely (or dies) mid-line has its unfinished
 * line dropped unrun, as nobody is left to read a reply and the line
 * may be a torn command.  A line of CTL_MAX_LINE bytes or more gets
 * one error and the rest of it is skipped.
 *
 * Threads: ctl_server_start starts ONE thread, which polls the
 * listening socket, a wake pipe and every client (up to
 * CTL_MAX_CLIENTS; one more is told so and closed).  Handlers and the
 * hook run on that thread, one at a time by construction, in the
 * order the lines arrive on each client.  Replies are written without
 * blocking: a client that does not read its replies only stops its
 * own lines from being read, never anyone else's.
 */

#ifndef FLEECE_CONTROL_H
#define FLEECE_CONTROL_H

#include <stddef.h>
#include <stdint.h>

#include "ctl-parse.h"
#include "json.h"

#define CTL_MAX_CLIENTS 16

/* A handler answers one parsed request.  The server hands it a reply
 * that already holds {"ok":true; on success the handler returns 0
 * after appending members (with jbuf_key, or raw text starting with a
 * comma, e.g. ,"snapshot":{...}) and the server closes the brace.  On
 * failure it returns -1 and sets *errmsg to a malloc'd message; the
 * server discards the reply and answers {"ok":false,"error":...}.
 * A failing handler must leave all state as it was.
 */
typedef int (*ctl_handler) (const struct ctl_request *req, void *opaque,
                            struct jbuf *reply, char **errmsg);

/* Work that is not a request, run on the server thread (so never at
 * the same time as a handler): timers, and background threads that
 * report back (a job that finished, a timeout that ran out).  The
 * server calls hook (opaque, now) once soon after ctl_server_set_hook,
 * once soon after each ctl_server_wake (calls that come together may
 * be merged into one), and once the deadline it last returned has
 * passed.  It returns the next deadline in ctl_now_ms () time, or -1
 * for none.  Example: a quiesce timeout returns now + 10000 and undoes
 * the quiesce when called at or after it; a job thread stores its
 * result under the job's own lock and calls ctl_server_wake, and the
 * hook publishes it.
 */
typedef int64_t (*ctl_hook) (void *opaque, int64_t now_ms);

struct ctl_server;

/* Create the socket at path (absolute), bound and listening, mode
 * 0600.  An existing file at path is removed only if it is a socket
 * nobody listens on (a stale socket); any other file, or a live
 * socket, is an error.  Returns NULL with *errmsg set (malloc'd).
 * No thread is started yet (nbdkit may still fork).
 */
extern struct ctl_server *ctl_server_new (const char *path,
                                          ctl_handler handler,
                                          void *opaque, char **errmsg);
/* Start serving.  Returns 0 or -1 with *errmsg set. */
extern int ctl_server_start (struct ctl_server *srv, char **errmsg);
/* Stop the thread, close all clients, unlink the socket, free. */
extern void ctl_server_free (struct ctl_server *srv);

/* Install (or, with NULL, remove) the hook.  Any thread. */
extern void ctl_server_set_hook (struct ctl_server *srv, ctl_hook hook,
                                 void *opaque);
/* Have the server thread call the hook soon.  Any thread; never
 * blocks; safe from a handler or the hook itself.
 */
extern void ctl_server_wake (struct ctl_server *srv);
/* Milliseconds of CLOCK_MONOTONIC: the clock of hook deadlines. */
extern int64_t ctl_now_ms (void);

/* Handle one raw line exactly as a connected client's line would be
 * handled, returning the malloc'd reply line without newline.  Called
 * by the server thread, and by tests and fuzzers on a server that is
 * not started or has no request in progress (it calls the handler,
 * which must not run twice at once).
 */
extern char *ctl_server_handle_line (struct ctl_server *srv,
                                     const char *line, size_t len);

#endif /* FLEECE_CONTROL_H */
