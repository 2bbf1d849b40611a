/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * quiesce and resume (see quiesce.c).
 */

#ifndef FLEECE_CBW_QUIESCE_H
#define FLEECE_CBW_QUIESCE_H

#include <stdbool.h>

#include "json.h"

extern void quiesce_init (void);
/* The write path: is a hold on?  Then let go of the gate and wait. */
extern bool quiesce_holding (void);
extern void quiesce_wait (void);
/* Control commands. */
extern int quiesce_begin (unsigned timeout, struct jbuf *reply,
                          char **errmsg);
extern int quiesce_end (struct jbuf *reply, char **errmsg);
extern void quiesce_status (struct jbuf *reply);

#endif /* FLEECE_CBW_QUIESCE_H */
