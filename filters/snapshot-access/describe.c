/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * What nbdinfo shows of the snapshot views: their names in
 * list_exports and their descriptions.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <nbdkit-filter.h>

#include "bitset.h"
#include "fleece-api.h"
#include "json.h"
#include "snapshot-access.h"

/* What nbdinfo --list shows for the snapshot export. */
const char *
describe_snapshot (const struct fleece_snapshot_info *info)
{
  char when[FLEECE_TIME_BUF];

  fleece_format_time (info->started, when);
  return nbdkit_printf_intern ("point-in-time snapshot %" PRIu64 "%s%s of "
                               "the disk, taken %s%s%s%s%s", info->id,
                               info->name[0] ? " " : "", info->name, when,
                               info->checkpoint[0] ? "; started checkpoint " : "",
                               info->checkpoint,
                               info->since[0] ? "; preserves changes since "
                               : "", info->since);
}

/* What nbdinfo --list and nbdinfo on the export show for the delta
 * view of checkpoint name.
 */
const char *
describe_delta (const struct fleece_snapshot_info *info, const char *name)
{
  char when[FLEECE_TIME_BUF];

  fleece_format_time (info->started, when);
  return nbdkit_printf_intern ("changes since checkpoint %s, up to "
                               "snapshot %" PRIu64 "%s%s taken %s",
                               name, info->id, info->name[0] ? " " : "",
                               info->name, when);
}

/* The export name of snapshot info's view (delta: since checkpoint). */
static const char *
view_name (const struct fleece_snapshot_info *info, const char *checkpoint)
{
  return nbdkit_printf_intern ("%s%s%s%s%s", sa_config.export_name,
                               info->name[0] ? "@" : "", info->name,
                               checkpoint ? SA_SINCE : "",
                               checkpoint ? checkpoint : "");
}

/* The snapshot view and the delta views of one snapshot. */
static int
list_snapshot (struct nbdkit_exports *exports, const char *name)
{
  struct fleece_snapshot_info info;
  char **names;
  size_t i;
  int r;

  cbw->snapshot_info (name, &info);
  if (info.id == 0)
    return 0;                   /* ended meanwhile */
  r = nbdkit_add_export (exports, view_name (&info, NULL),
                         describe_snapshot (&info));
  names = cbw->snapshot_delta_names (info.id);
  for (i = 0; names && names[i]; i++) {
    if (r == 0)
      r = nbdkit_add_export (exports, view_name (&info, names[i]),
                             describe_delta (&info, names[i]));
    free (names[i]);
  }
  free (names);
  return r;
}

/* The plugin's exports, plus the views of every active snapshot. */
int
sa_list_exports (nbdkit_next_list_exports *next, nbdkit_backend *nxdata,
                 int readonly, int is_tls, struct nbdkit_exports *exports)
{
  char **names;
  size_t i;
  int r = 0;

  if (next (nxdata, readonly, exports) == -1)
    return -1;
  names = cbw->snapshot_names ();
  for (i = 0; names && names[i]; i++) {
    if (r == 0)
      r = list_snapshot (exports, names[i]);
    free (names[i]);
  }
  free (names);
  return r;
}

