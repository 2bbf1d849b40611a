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

const struct fleece_filter_api *
fleece_find (enum fleece_filter_id id)
{
  const struct fleece_filter_row *row = fleece_filter_row (id);
  const struct fleece_filter_api *api;

  if (row == NULL)
    return NULL;
  api = dlsym (RTLD_DEFAULT, row->symbol);
  /* A struct smaller than ours comes from an older, incompatible build. */
  if (api == NULL || api->size < sizeof *api || api->id != id)
    return NULL;
  return api;
}

const struct fleece_cbw_api *
fleece_cbw (void)
{
  const struct fleece_filter_api *api = fleece_find (FLEECE_CBW);

  if (api == NULL || api->size < sizeof (struct fleece_cbw_api))
    return NULL;
  return (const struct fleece_cbw_api *) api;
}

const struct fleece_db_api *
fleece_dirty_bitmap (void)
{
  const struct fleece_filter_api *api = fleece_find (FLEECE_DIRTY_BITMAP);

  if (api == NULL || api->size < sizeof (struct fleece_db_api))
    return NULL;
  return (const struct fleece_db_api *) api;
}

const struct fleece_sa_api *
fleece_snapshot_access (void)
{
  const struct fleece_filter_api *api = fleece_find (FLEECE_SNAPSHOT_ACCESS);

  if (api == NULL || api->size < sizeof (struct fleece_sa_api))
    return NULL;
  return (const struct fleece_sa_api *) api;
}
