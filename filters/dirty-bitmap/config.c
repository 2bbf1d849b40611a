/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * The dirty-bitmap filter's parameters: bitmap-file,
 * bitmap-granularity, bitmap-disk-id and bitmap-sync.
 */

#include <config.h>

#include <stdlib.h>
#include <string.h>

#include <nbdkit-filter.h>

#include "bmfile.h"
#include "dirty-bitmap.h"
#include "fleece-api.h"
#include "params.h"

struct db_config db_config = {
  .bitmap_file = NULL,
  .disk_id = NULL,
  .granularity = 65536,
};

static bool granularity_set;
/* bitmap-sync=: NULL (not given), "write-ahead" or "clean-stop". */
static const char *sync_mode;
static const char *const sync_names[] = { "write-ahead", "clean-stop", NULL };

static int
check_disk_id (const char *key, const char *value)
{
  if (bmfile_valid_disk_id (value))
    return 0;
  nbdkit_error ("%s=%s: a disk id is 1 to %d printable ASCII characters "
                "without spaces, e.g. vm1-disk0", key, value,
                BMFILE_DISK_ID_MAX);
  return -1;
}

int
db_config_key (const char *key, const char *value)
{
  if (strcmp (key, "bitmap-file") == 0)
    return fleece_config_path (key, value, &db_config.bitmap_file) == -1
      ? -1 : 1;
  if (strcmp (key, "bitmap-granularity") == 0)
    return fleece_config_once (key, &granularity_set) == -1 ||
      fleece_config_cluster (key, value, &db_config.granularity) == -1
      ? -1 : 1;
  if (strcmp (key, "bitmap-disk-id") == 0)
    return fleece_config_string (key, value, check_disk_id,
                                 &db_config.disk_id) == -1 ? -1 : 1;
  if (strcmp (key, "bitmap-sync") == 0) {
    int i;

    if (sync_mode) {
      nbdkit_error ("%s: given twice; give it once", key);
      return -1;
    }
    if (fleece_config_choice (key, value, sync_names, "must be write-ahead "
                              "(checkpoints survive a crash) or clean-stop "
                              "(saved at a clean stop only)", &i) == -1)
      return -1;
    sync_mode = sync_names[i];
    return 1;
  }
  return fleece_config_unknown (FLEECE_DIRTY_BITMAP, key, "bitmap-file, "
                                "bitmap-granularity, bitmap-disk-id and "
                                "bitmap-sync");
}

int
db_config_check (void)
{
  if (db_config.bitmap_file == NULL) {
    if (db_config.disk_id) {
      nbdkit_error ("bitmap-disk-id=%s: names the disk a bitmap file "
                    "belongs to, so it needs bitmap-file=PATH too",
                    db_config.disk_id);
      return -1;
    }
    if (sync_mode) {
      nbdkit_error ("bitmap-sync=%s: says how the bitmap file is kept, so "
                    "it needs bitmap-file=PATH too", sync_mode);
      return -1;
    }
    return 0;
  }
  db_config.write_ahead = sync_mode == NULL ||
    strcmp (sync_mode, "write-ahead") == 0;
  return fleece_check_own_file ("bitmap-file", db_config.bitmap_file);
}

void
db_config_free (void)
{
  fleece_config_free (&db_config.bitmap_file);
  fleece_config_free (&db_config.disk_id);
}
