/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * The cbw filter's control commands and the snapshots backup jobs own
 * (commands.c).
 */

#ifndef FLEECE_CBW_COMMANDS_H
#define FLEECE_CBW_COMMANDS_H

#include <stdint.h>

#include "fleece-api.h"

extern const struct fleece_command cbw_commands[];

/* fleece_cbw_api.snapshot_begin_owned / snapshot_end_owned. */
extern uint64_t cbw_snapshot_begin_owned (const char *who,
                                          const char *checkpoint,
                                          const char *since, char **errmsg);
extern int cbw_snapshot_end_owned (uint64_t id, char **errmsg);

#endif /* FLEECE_CBW_COMMANDS_H */
