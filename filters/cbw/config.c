/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * The cbw filter's parameters: cbw-target, cbw-cluster-size,
 * cbw-on-error, cbw-timeout, cbw-target-limit, cbw-buffer.
 */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nbdkit-filter.h>

#include "cbw.h"
#include "fleece-api.h"
#include "params.h"
#include "size.h"

#define CBW_MAX_TIMEOUT (24 * 60 * 60)

struct cbw_config cbw_config = {
  .target_kind = CBW_TARGET_TEMP,
  .cluster_size = 65536,
  .on_error = CBW_BREAK_GUEST_WRITE,
  .timeout = 0,
};

static bool cluster_size_set, on_error_set, timeout_set, limit_set;
static bool buffer_set;

const char *
cbw_on_error_name (enum cbw_on_error e)
{
  return e == CBW_BREAK_SNAPSHOT ? "break-snapshot" : "break-guest-write";
}

const char *
cbw_target_kind_name (enum cbw_target_kind k)
{
  switch (k) {
  case CBW_TARGET_FILE: return "file";
  case CBW_TARGET_NBD: return "nbd";
  default: return "temporary";
  }
}

static int
config_target (const char *key, const char *value)
{
  if (cbw_config.target) {
    nbdkit_error ("%s: given twice; give it once", key);
    return -1;
  }
  if (fleece_is_nbd_uri (value)) {
    cbw_config.target_kind = CBW_TARGET_NBD;
    return fleece_config_string (key, value, NULL, &cbw_config.target);
  }
  if (strstr (value, "://")) {
    nbdkit_error ("%s=%s: unsupported URI scheme; use a file path or an "
                  "NBD URI (nbd://, nbds://, nbd+unix://, nbds+unix://)",
                  key, value);
    return -1;
  }
  cbw_config.target_kind = CBW_TARGET_FILE;
  return fleece_config_path (key, value, &cbw_config.target);
}

/* Returns 1 if key was ours and is good, -1 on error, 0 if not ours. */
int
cbw_config_key (const char *key, const char *value)
{
  uint64_t v;
  uint32_t size;

  if (strcmp (key, "cbw-target") == 0)
    return config_target (key, value) == -1 ? -1 : 1;
  if (strcmp (key, "cbw-cluster-size") == 0) {
    if (fleece_config_once (key, &cluster_size_set) == -1 ||
        fleece_config_cluster (key, value, &size) == -1)
      return -1;
    cbw_config.cluster_size = size;
    return 1;
  }
  if (strcmp (key, "cbw-on-error") == 0) {
    static const char *const names[] =
      { "break-guest-write", "break-snapshot", NULL };
    int i;

    if (fleece_config_once (key, &on_error_set) == -1 ||
        fleece_config_choice (key, value, names, "expected "
                              "break-guest-write or break-snapshot", &i) == -1)
      return -1;
    cbw_config.on_error = i == 0 ? CBW_BREAK_GUEST_WRITE : CBW_BREAK_SNAPSHOT;
    return 1;
  }
  if (strcmp (key, "cbw-timeout") == 0) {
    if (fleece_config_once (key, &timeout_set) == -1 ||
        fleece_config_uint (key, value, CBW_MAX_TIMEOUT, &v) == -1)
      return -1;
    cbw_config.timeout = v;
    return 1;
  }
  if (strcmp (key, "cbw-target-limit") == 0) {
    if (fleece_config_once (key, &limit_set) == -1 ||
        fleece_config_size (key, value, "10G", &v) == -1)
      return -1;
    if (v == 0) {
      nbdkit_error ("%s=%s: must be more than 0; leave it out for no "
                    "limit", key, value);
      return -1;
    }
    cbw_config.target_limit = v;
    return 1;
  }
  if (strcmp (key, "cbw-buffer") == 0)
    return fleece_config_once (key, &buffer_set) == -1 ||
      fleece_config_size (key, value, "256M (0 for no buffer)",
                          &cbw_config.buffer) == -1 ? -1 : 1;
  return fleece_config_unknown (FLEECE_CBW, key, "cbw-target, "
                                "cbw-cluster-size, cbw-on-error, "
                                "cbw-timeout, cbw-target-limit and "
                                "cbw-buffer");
}

/* A file target must be a regular file or block device we can read and
 * write, or not exist yet in a directory where we can create it.
 */
static int
check_file_target (const char *path)
{
  struct stat st;

  if (stat (path, &st) == 0) {
    if (!S_ISREG (st.st_mode) && !S_ISBLK (st.st_mode)) {
      nbdkit_error ("cbw-target=%s: not a regular file or block device",
                    path);
      return -1;
    }
    if (access (path, R_OK | W_OK) == -1) {
      nbdkit_error ("cbw-target=%s: cannot read and write it: %m", path);
      return -1;
    }
    return 0;
  }
  if (errno != ENOENT) {
    nbdkit_error ("cbw-target=%s: %m", path);
    return -1;
  }
  return fleece_check_parent_dir ("cbw-target", path);
}

int
cbw_config_check (void)
{
  if (cbw_config.target_limit &&
      cbw_config.target_limit < cbw_config.cluster_size) {
    nbdkit_error ("cbw-target-limit=%" PRIu64 ": smaller than one cluster "
                  "(cbw-cluster-size=%" PRIu32 ")", cbw_config.target_limit,
                  cbw_config.cluster_size);
    return -1;
  }
  if (cbw_config.buffer) {
    long pages = sysconf (_SC_PHYS_PAGES), psize = sysconf (_SC_PAGESIZE);
    uint64_t half = pages > 0 && psize > 0
      ? (uint64_t) pages * psize / 2 : UINT64_MAX;

    if (cbw_config.buffer < cbw_config.cluster_size) {
      nbdkit_error ("cbw-buffer=%" PRIu64 ": smaller than one cluster "
                    "(cbw-cluster-size=%" PRIu32 "); give at least that, "
                    "or 0 for no buffer", cbw_config.buffer,
                    cbw_config.cluster_size);
      return -1;
    }
    if (cbw_config.buffer > half) {
      nbdkit_error ("cbw-buffer=%" PRIu64 ": more than half of this "
                    "machine's memory (%" PRIu64 " bytes); give a smaller "
                    "size", cbw_config.buffer, half);
      return -1;
    }
  }
  if (cbw_config.target_kind == CBW_TARGET_FILE)
    return check_file_target (cbw_config.target);
  return 0;
}

void
cbw_config_free (void)
{
  fleece_config_free (&cbw_config.target);
}
