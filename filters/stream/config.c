/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * The stream filter's parameters: stream-base, stream-state,
 * stream-cluster-size, stream-speed, stream-sync.  Called from .config and
 * .config_complete (single-threaded).
 */

#include <config.h>

#include <stdlib.h>
#include <string.h>

#include <nbdkit-filter.h>

#include "params.h"
#include "size.h"
#include "stream.h"

struct stream_config stream_config = {
  .cluster_size = 65536,
};

static bool speed_set, sync_set;

int
stream_parse_rate (const char *value, uint64_t *out, const char **why)
{
  uint64_t v;

  if (fleece_parse_size (value, &v, why) == -1)
    return -1;
  /* More than 1 EiB/s is certainly a typo. */
  if (v > (UINT64_C (1) << 60)) {
    *why = "is too large";
    return -1;
  }
  *out = v;
  return 0;
}

static int
check_base (const char *key, const char *value)
{
  if (fleece_is_nbd_uri (value))
    return 0;
  nbdkit_error ("%s=%s: not an NBD URI; use nbd://HOST[:PORT]/EXPORT, "
                "nbds://... (TLS) or nbd+unix:///EXPORT?socket=PATH",
                key, value);
  return -1;
}

/* 1 if key is ours and was taken, 0 if it is not ours, -1 on error. */
int
stream_config_key (const char *key, const char *value)
{
  const char *why;

  if (strcmp (key, "stream-base") == 0)
    return fleece_config_string (key, value, check_base,
                                 &stream_config.base_uri) == -1 ? -1 : 1;
  if (strcmp (key, "stream-state") == 0)
    return fleece_config_path (key, value, &stream_config.state_path) == -1
      ? -1 : 1;
  if (strcmp (key, "stream-cluster-size") == 0)
    return fleece_config_once (key, &stream_config.cluster_size_set) == -1 ||
      fleece_config_cluster (key, value, &stream_config.cluster_size) == -1
      ? -1 : 1;
  if (strcmp (key, "stream-speed") == 0) {
    if (fleece_config_once (key, &speed_set) == -1)
      return -1;
    if (stream_parse_rate (value, &stream_config.speed, &why) == -1) {
      nbdkit_error ("%s=%s: %s; give bytes per second like 100M, or 0 "
                    "for unlimited", key, value, why);
      return -1;
    }
    return 1;
  }
  if (strcmp (key, "stream-sync") == 0) {
    static const char *const names[] = { "write", "flush", NULL };
    int i;

    if (fleece_config_once (key, &sync_set) == -1 ||
        fleece_config_choice (key, value, names, "give write (a first write "
                              "to a cluster is durable before it is "
                              "acknowledged) or flush (durable at the guest's "
                              "next flush, like a disk's write cache)", &i)
        == -1)
      return -1;
    stream_config.sync_flush = i == 1;
    return 1;
  }
  return fleece_config_unknown (FLEECE_STREAM, key, "stream-base, "
                                "stream-state, stream-cluster-size, "
                                "stream-speed and stream-sync");
}

int
stream_config_check (void)
{
  if (stream_config.state_path == NULL) {
    nbdkit_error ("stream-state=PATH is required: the stream filter keeps "
                  "the map of populated clusters there so that a restart "
                  "resumes");
    return -1;
  }
  return fleece_check_own_file ("stream-state", stream_config.state_path);
}

void
stream_config_free (void)
{
  fleece_config_free (&stream_config.base_uri);
  fleece_config_free (&stream_config.state_path);
}
