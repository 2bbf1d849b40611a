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

/* Parameters that belong to another project filter: returns the owner,
 * or -1 if key is not one of the project's parameters.
 */
extern int fleece_param_owner (const char *key);

/* Common .config tail for every project filter: "control" is taken by
 * the first project filter that sees it; a parameter of another
 * project filter is passed down if that filter is loaded and refused
 * with a clear message if it is not; anything else goes down the
 * stack unchanged.
 */
extern int fleece_config_other (nbdkit_next_config *next,
                                nbdkit_backend *nxdata,
                                const char *key, const char *value);

/* Common head of every project filter's .config_complete: refuses a
 * filter given twice (load_count > 1: nbdkit loads the same module
 * once per --filter) and an unsupported stack order, and checks the
 * control socket's directory.  self is the calling filter.
 */
extern int fleece_config_complete_common (enum fleece_filter_id self,
                                          unsigned load_count);

#endif /* FLEECE_PARAMS_H */
