/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * The control socket file (ctl-socket.c): created mode 0600 from the
 * moment it appears; an existing file at the path is removed only if
 * it is a socket nobody listens on (a stale socket); any other file,
 * or a live socket, is an error.  Removal at shutdown touches the file
 * only if it is still the socket we made.
 */

#ifndef FLEECE_CTL_SOCKET_H
#define FLEECE_CTL_SOCKET_H

#include <sys/types.h>

/* Identity of the socket file we made. */
struct ctl_socket_id {
  dev_t dev;
  ino_t ino;
};

/* Bind and listen on path (absolute).  Returns the non-blocking,
 * close-on-exec listening fd, or -1 with *errmsg set (malloc'd).
 */
extern int ctl_socket_listen (const char *path, struct ctl_socket_id *id,
                              char **errmsg);
/* Unlink path if it is still the socket identified by id. */
extern void ctl_socket_remove (const char *path,
                               const struct ctl_socket_id *id);

#endif /* FLEECE_CTL_SOCKET_H */
