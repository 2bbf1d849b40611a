/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * One client of the control server (ctl-client.c): its line buffer,
 * its buffer of reply bytes not yet sent, and the framing rules of
 * control.h.  Every function runs on the server thread and never
 * blocks; a client belongs to that thread from ctl_client_new to
 * ctl_client_close, so it has no lock.
 */

#ifndef FLEECE_CTL_CLIENT_H
#define FLEECE_CTL_CLIENT_H

#include <stdbool.h>

#include "control.h"

struct ctl_client;

/* A client on fd (connected, non-blocking), or NULL when out of
 * memory (then fd is closed).
 */
extern struct ctl_client *ctl_client_new (int fd);
extern int ctl_client_fd (const struct ctl_client *c);
/* What poll should wait for: POLLIN, POLLOUT or nothing (0). */
extern short ctl_client_events (const struct ctl_client *c);
/* Act on the events poll reported (0 if none): send, read, answer the
 * lines that are complete, each through ctl_server_handle_line (srv).
 * Returns -1 when the client is to be closed.
 */
extern int ctl_client_progress (struct ctl_server *srv,
                                struct ctl_client *c, short revents);
/* Close the connection and free c.  With drain, read (and drop) what
 * the client sent first, so that it sees a clean EOF: Linux resets a
 * Unix socket closed with unread bytes (ECONNRESET at the peer).
 */
extern void ctl_client_close (struct ctl_client *c, bool drain);
/* Tell the client on fd that there are too many clients, and close
 * fd.
 */
extern void ctl_client_reject (int fd);

#endif /* FLEECE_CTL_CLIENT_H */
