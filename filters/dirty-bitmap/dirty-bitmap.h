/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * The dirty-bitmap filter: shared declarations.
 */

#ifndef FLEECE_DIRTY_BITMAP_H
#define FLEECE_DIRTY_BITMAP_H

#include <stdbool.h>
#include <stdint.h>

/* Parameters.  Written only during nbdkit's single-threaded start-up,
 * read-only afterwards, so no lock.
 */
struct db_config {
  char *bitmap_file;            /* absolute path, or NULL: memory only */
  char *disk_id;                /* bitmap-disk-id=, valid, or NULL */
  uint32_t granularity;
  /* bitmap-sync=write-ahead (the default with bitmap-file=): a
   * granule's bit is durable in the file before the first write to it
   * in the recording checkpoint goes down.  false: clean-stop, or no
   * bitmap-file.
   */
  bool write_ahead;
};

extern struct db_config db_config;

extern int db_config_key (const char *key, const char *value);
extern int db_config_check (void);
extern void db_config_free (void);

#define DB_CONFIG_HELP                                                  \
  "bitmap-file=PATH           Where checkpoints persist (default:\n"    \
  "                           memory only).\n"                          \
  "bitmap-granularity=SIZE    Tracking granularity (default 64K).\n"    \
  "bitmap-disk-id=STRING      Which disk the bitmap file belongs to.\n" \
  "bitmap-sync=write-ahead|clean-stop\n"                                \
  "                           Make bits durable before the writes\n"    \
  "                           they cover (default), or save at stop.\n" \
  "control=SOCKET             Control socket for the whole stack."

#endif /* FLEECE_DIRTY_BITMAP_H */
