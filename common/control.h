/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * The control socket (product contract, section 4): a Unix stream
 * socket, mode 0600.  A request is one line "COMMAND [arg ...]" where
 * each arg is "key=value" or a bare word; the reply is one line of
 * JSON, {"ok":true,...} or {"ok":false,"error":"..."}.
 *
 * Framing: a line ends at a newline.  The last line may also end at
 * the client's EOF when the client only shut down its sending side
 * (shutdown(SHUT_WR), as `printf status | socat - UNIX-CONNECT:...`
 * does): it is answered at once, then the server closes.  A client
 * that closes the socket entirely (or dies) mid-line has its unfinished
 * line dropped unrun, as nobody is left to read a reply and the line
 * may be a torn command.
 *
 * Threads: ctl_server_start starts one accept thread; each client gets
 * its own thread (up to CTL_MAX_CLIENTS; more are told so and closed).
 * Handler calls are serialised by ctl_server.dispatch_lock, so a
 * handler never runs concurrently with another handler of the same
 * server and the order of commands is the order they are dispatched.
 */

#ifndef FLEECE_CONTROL_H
#define FLEECE_CONTROL_H

#include <stddef.h>

#include "json.h"

#define CTL_MAX_LINE 4096       /* bytes, including the newline */
#define CTL_MAX_ARGS 16
#define CTL_MAX_CLIENTS 16

struct ctl_arg {
  char *key;                    /* NULL for a bare word */
  char *value;
};

struct ctl_request {
  char *command;
  size_t nargs;
  struct ctl_arg args[CTL_MAX_ARGS];
};

/* Parse one line (without its newline; a trailing \r is ignored).
 * Rules: words are separated by spaces or tabs; the command is
 * [a-z][a-z0-9-]*; a key is [a-z][a-z0-9_-]*; values and bare words
 * are printable ASCII other than space; at most CTL_MAX_ARGS args; a
 * key may not repeat.  Returns 0, or -1 with *errmsg set to a
 * malloc'd message fit for the reply (req is then empty).
 */
extern int ctl_parse_line (const char *line, size_t len,
                           struct ctl_request *req, char **errmsg);
extern void ctl_request_free (struct ctl_request *req);
/* Value of key=..., or NULL. */
extern const char *ctl_request_get (const struct ctl_request *req,
                                    const char *key);
/* The i'th bare word (0-based), or NULL. */
extern const char *ctl_request_word (const struct ctl_request *req,
                                     size_t i);
/* Check that every key=value arg has a key in the NULL-terminated list
 * keys and that there are at most max_words bare words.  Returns 0 or
 * -1 with *errmsg set (malloc'd).
 */
extern int ctl_request_check (const struct ctl_request *req,
                              const char *const *keys, size_t max_words,
                              char **errmsg);

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
/* Stop all threads, close all clients, unlink the socket, free. */
extern void ctl_server_free (struct ctl_server *srv);

/* Handle one raw line exactly as a connected client's line would be
 * handled, returning the malloc'd reply line without newline (used by
 * the server itself and by tests).
 */
extern char *ctl_server_handle_line (struct ctl_server *srv,
                                     const char *line, size_t len);

#endif /* FLEECE_CONTROL_H */
