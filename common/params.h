/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * Parameter handling shared by the filters.  Every function reports a
 * bad value with one nbdkit_error line that starts with the
 * parameter's name, and returns -1; it returns 0 on success.  They
 * are called from .config / .config_complete (single-threaded).
 */

#ifndef FLEECE_PARAMS_H
#define FLEECE_PARAMS_H

#include <stdbool.h>
#include <stdint.h>

#include <nbdkit-filter.h>

#include "fleece-api.h"

#define FLEECE_MIN_CLUSTER 4096
#define FLEECE_MAX_CLUSTER (16 * 1024 * 1024)

/* A cluster or granule size: a power of two from 4K to 16M. */
extern int fleece_config_cluster (const char *key, const char *value,
                                  uint32_t *out);
extern int fleece_config_bool (const char *key, const char *value,
                               bool *out);
extern int fleece_config_uint (const char *key, const char *value,
                               uint64_t max, uint64_t *out);
/* Make value an absolute path (nbdkit's rules: relative to the
 * directory nbdkit started in).  *out is malloc'd; if it was already
 * set the parameter was given twice, which is an error.
 */
extern int fleece_config_path (const char *key, const char *value,
                               char **out);
/* The directory that would hold path exists, is a directory, and we
 * may create files in it.
 */
extern int fleece_check_parent_dir (const char *key, const char *path);

/* The project filter that owns parameter key (whether or not it is
 * loaded), or -1 if key is none of the project's parameters.  Asks
 * each filter's predicate (fleece_filter_rows).  Start-up routing of
 * parameters is in glue.c.
 */
extern int fleece_param_owner (const char *key);

#endif /* FLEECE_PARAMS_H */
