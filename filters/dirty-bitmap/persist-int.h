/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * State shared by persist.c (saving) and persist-load.c (start-up).
 * Each variable's rules are at its definition in persist.c.
 */

#ifndef FLEECE_DB_PERSIST_INT_H
#define FLEECE_DB_PERSIST_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include "durable-bits.h"

extern int lock_fd;
extern unsigned char *pending_buf;
extern size_t pending_len;
extern time_t pending_mtime;
extern struct durable_bits *wal;
extern bool wal_live;
extern bool recovered;
extern time_t recovered_mtime;

/* Write buf to path atomically (see persist.c); *keep_fd (may be
 * NULL) gets the new file's descriptor, open for writing.
 */
extern int write_atomic (const char *path, const void *buf, size_t len,
                         int *keep_fd, char **errmsg);

#endif /* FLEECE_DB_PERSIST_INT_H */
