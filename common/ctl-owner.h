/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * The control= parameter and the life of the control server.
 *
 * control= is consumed by the first (topmost) project filter whose
 * .config sees it, so exactly one filter per process owns the server;
 * the others' copies of this module stay idle.  Every filter calls
 * these hooks; they do nothing in a filter that does not own it.
 *
 * State (control_path, server) is written only from nbdkit's
 * single-threaded start-up and shutdown callbacks, so it needs no
 * lock; the server's own locks are in control.c.
 */

#ifndef FLEECE_CTL_OWNER_H
#define FLEECE_CTL_OWNER_H

#include "control.h"

/* From .config: "control" was given. */
extern int fleece_control_config (const char *key, const char *value);
/* From .config_complete: checks the socket's directory. */
extern int fleece_control_config_complete (void);
/* From .get_ready: create the socket (errors stop nbdkit at start-up). */
extern int fleece_control_get_ready (void);
/* From .after_fork: start serving. */
extern int fleece_control_after_fork (void);
/* From .cleanup / .unload: stop serving and remove the socket. */
extern void fleece_control_cleanup (void);

/* The handler behind the control socket: the command table of the
 * whole stack (ctl-dispatch.c).
 */
extern int fleece_dispatch (const struct ctl_request *req, void *opaque,
                            struct jbuf *reply, char **errmsg);

#endif /* FLEECE_CTL_OWNER_H */
