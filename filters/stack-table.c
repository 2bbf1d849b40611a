/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * The project's filters as the others see them, loaded or not (struct
 * fleece_filter_row in common/fleece-api.h): name, exported interface,
 * what the status reply says in place of a filter that is not in the
 * stack, and which parameters are whose.  Linked into every filter
 * module (and the fuzzers that need it); read-only data, no lock.
 *
 * Why here and not in each filter: a filter that is not loaded cannot
 * be asked anything, yet the contract wants "snapshot":{"active":false
 * ...} and "checkpoints":[] without cbw or dirty-bitmap, and a cbw-*
 * parameter without --filter=cbw must say "add --filter=cbw".  Why
 * not in common/: common/ never names a filter's parameters or status
 * members.  A new filter adds one row; its commands stay in its own
 * table (struct fleece_command).
 *
 * An absent filter's status members must read as the filter's own
 * status would with nothing going on: test-control-socket.sh compares
 * them with a stack that has the filter.
 */

#include <config.h>

#include <stdbool.h>
#include <string.h>

#include "fleece-api.h"

static bool
has_prefix (const char *key, const char *prefix)
{
  return strncmp (key, prefix, strlen (prefix)) == 0;
}

static bool
cbw_param (const char *key)
{
  return has_prefix (key, "cbw-");
}

static bool
db_param (const char *key)
{
  return has_prefix (key, "bitmap-");
}

static bool
sa_param (const char *key)
{
  return strcmp (key, "snapshot-export") == 0 ||
    strcmp (key, "snapshot-discard") == 0;
}

static bool
stream_param (const char *key)
{
  return has_prefix (key, "stream-");
}

const struct fleece_filter_row fleece_filter_rows[FLEECE_NR_FILTERS] = {
  {
    .id = FLEECE_CBW,
    .name = "cbw",
    .symbol = "fleece_cbw_v1",
    .absent_status = ",\"snapshot\":{\"active\":false,\"started\":null,"
      "\"clusters_copied\":0,\"target_bytes\":0,\"released_bytes\":0,"
      "\"broken\":null,\"copy_errors\":0,\"last_error\":null}",
    .owns_param = cbw_param,
  },
  {
    .id = FLEECE_DIRTY_BITMAP,
    .name = "dirty-bitmap",
    .symbol = "fleece_dirty_bitmap_v1",
    .absent_status = ",\"checkpoints\":[]",
    .owns_param = db_param,
  },
  {
    .id = FLEECE_SNAPSHOT_ACCESS,
    .name = "snapshot-access",
    .symbol = "fleece_snapshot_access_v1",
    .absent_status = NULL,
    .owns_param = sa_param,
  },
  {
    .id = FLEECE_STREAM,
    .name = "stream",
    .symbol = "fleece_stream_v1",
    .absent_status = NULL,
    .owns_param = stream_param,
  },
};
