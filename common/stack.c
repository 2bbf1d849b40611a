/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * Finding the project's other filters in this nbdkit process.  See
 * fleece-api.h for why an exported versioned symbol is the interface.
 */

#include <config.h>

#include <dlfcn.h>
#include <stddef.h>

#include "fleece-api.h"

static const char *const filter_names[FLEECE_NR_FILTERS] = {
  [FLEECE_SNAPSHOT_ACCESS] = "snapshot-access",
  [FLEECE_CBW] = "cbw",
  [FLEECE_DIRTY_BITMAP] = "dirty-bitmap",
  [FLEECE_STREAM] = "stream",
};

static const char *const symbol_names[FLEECE_NR_FILTERS] = {
  [FLEECE_SNAPSHOT_ACCESS] = "fleece_snapshot_access_v1",
  [FLEECE_CBW] = "fleece_cbw_v1",
  [FLEECE_DIRTY_BITMAP] = "fleece_dirty_bitmap_v1",
  [FLEECE_STREAM] = "fleece_stream_v1",
};

const char *
fleece_filter_name (enum fleece_filter_id id)
{
  return id < FLEECE_NR_FILTERS ? filter_names[id] : "?";
}

const struct fleece_filter_api *
fleece_find (enum fleece_filter_id id)
{
  const struct fleece_filter_api *api;

  if (id >= FLEECE_NR_FILTERS)
    return NULL;
  api = dlsym (RTLD_DEFAULT, symbol_names[id]);
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
