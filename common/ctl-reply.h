/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * One request line to one reply line, for the control server
 * (ctl-reply.c).
 */

#ifndef FLEECE_CTL_REPLY_H
#define FLEECE_CTL_REPLY_H

#include <stddef.h>

#include "control.h"

/* Parse line (without its newline) and answer it: a parse error, or
 * what handler answers (see ctl_handler), as one line of JSON without
 * a newline, malloc'd; NULL only when out of memory.
 */
extern char *ctl_reply (ctl_handler handler, void *opaque,
                        const char *line, size_t len);

#endif /* FLEECE_CTL_REPLY_H */
