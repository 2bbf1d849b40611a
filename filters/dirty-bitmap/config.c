/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * The dirty-bitmap filter's parameters: bitmap-file and
 * bitmap-granularity.
 */

#include <config.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <nbdkit-filter.h>

#include "dirty-bitmap.h"
#include "params.h"

struct db_config db_config = {
  .bitmap_file = NULL,
  .granularity = 65536,
};

static bool granularity_set;

int
db_config_key (const char *key, const char *value)
{
  if (strcmp (key, "bitmap-file") == 0)
    return fleece_config_path (key, value, &db_config.bitmap_file) == -1
      ? -1 : 1;
  if (strcmp (key, "bitmap-granularity") == 0) {
    if (granularity_set) {
      nbdkit_error ("%s: given twice; give it once", key);
      return -1;
    }
    granularity_set = true;
    return fleece_config_cluster (key, value, &db_config.granularity) == -1
      ? -1 : 1;
  }
  if (strncmp (key, "bitmap-", 7) == 0) {
    nbdkit_error ("%s: unknown dirty-bitmap parameter; the dirty-bitmap "
                  "filter takes bitmap-file and bitmap-granularity", key);
    return -1;
  }
  return 0;
}

int
db_config_check (void)
{
  struct stat st;

  if (db_config.bitmap_file == NULL)
    return 0;
  if (stat (db_config.bitmap_file, &st) == 0 && !S_ISREG (st.st_mode)) {
    nbdkit_error ("bitmap-file=%s: exists and is not a regular file",
                  db_config.bitmap_file);
    return -1;
  }
  return fleece_check_parent_dir ("bitmap-file", db_config.bitmap_file);
}

void
db_config_free (void)
{
  free (db_config.bitmap_file);
  db_config.bitmap_file = NULL;
}
