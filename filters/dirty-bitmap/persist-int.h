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

#include "bmfile.h"
#include "durable-bits.h"
#include "fine-bits.h"

extern int lock_fd;
extern unsigned char *pending_buf;
extern size_t pending_len;
extern time_t pending_mtime;
extern struct durable_bits *wal;
extern struct fine_bits *wal_fine;
extern bool wal_live;
extern uint32_t intent_shift;
extern unsigned char boot_id[BMFILE_BOOT_ID_LEN];
extern bool recovered;
extern time_t recovered_mtime;
extern bool recovered_expanded;
extern uint64_t recovered_regions;

/* The intent map's region: 4 MiB of disk (see persist.c). */
#define INTENT_REGION_BYTES (4 * 1024 * 1024)
/* Regions asked for ahead of a sequential writer (see persist.c). */
#define INTENT_AHEAD 4

/* Write buf to path atomically (see persist.c); *keep_fd (may be
 * NULL) gets the new file's descriptor, open for writing.
 */
extern int write_atomic (const char *path, const void *buf, size_t len,
                         int *keep_fd, char **errmsg);

#endif /* FLEECE_DB_PERSIST_INT_H */
