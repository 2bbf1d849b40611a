/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * Finding the project's other filters in this nbdkit process.  See
 * fleece-api.h for why an exported versioned symbol is the interface;
 * the names come from fleece_filter_rows (filters/stack-table.c).
 */

#include <config.h>

#include <dlfcn.h>
#include <stddef.h>

#include "fleece-api.h"

const struct fleece_filter_row *
fleece_filter_row (enum fleece_filter_id id)
{
  size_t i;

  for (i = 0; i < FLEECE_NR_FILTERS; i++) {
    if (fleece_filter_rows[i].id == id)
      return &fleece_filter_rows[i];
  }
  return NULL;
}

const char *
fleece_filter_name (enum fleece_filter_id id)
{
  const struct fleece_filter_row *row = fleece_filter_row (id);

  return row ? row->name : "?";
}

/* The interface of filter id if it is loaded and at least size bytes
 * long: a struct smaller than the caller's comes from an older,
 * incompatible build.
 */
static const void *
find_sized (enum fleece_filter_id id, size_t size)
{
  const struct fleece_filter_row *row = fleece_filter_row (id);
  const struct fleece_filter_api *api;

  if (row == NULL)
    return NULL;
  api = dlsym (RTLD_DEFAULT, row->symbol);
  if (api == NULL || api->size < size || api->id != id)
    return NULL;
  return api;
}

const struct fleece_filter_api *
fleece_find (enum fleece_filter_id id)
{
  return find_sized (id, sizeof (struct fleece_filter_api));
}

const struct fleece_cbw_api *
fleece_cbw (void)
{
  return find_sized (FLEECE_CBW, sizeof (struct fleece_cbw_api));
}

const struct fleece_db_api *
fleece_dirty_bitmap (void)
{
  return find_sized (FLEECE_DIRTY_BITMAP, sizeof (struct fleece_db_api));
}

const struct fleece_sa_api *
fleece_snapshot_access (void)
{
  return find_sized (FLEECE_SNAPSHOT_ACCESS, sizeof (struct fleece_sa_api));
}
