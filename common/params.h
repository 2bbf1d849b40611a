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

/* A parameter that may be given once: *seen is set by the first. */
extern int fleece_config_once (const char *key, bool *seen);
/* A string parameter given once: refused if *out is already set, then
 * if check (may be NULL) refuses it (check reports its own error);
 * else *out is a malloc'd copy.
 */
extern int fleece_config_string (const char *key, const char *value,
                                 int (*check) (const char *key,
                                               const char *value),
                                 char **out);
/* Refuses key if it looks like a parameter of filter id (its row's
 * predicate) without being one of those it takes, which known lists
 * ("a, b and c"); else returns 0.
 */
extern int fleece_config_unknown (enum fleece_filter_id id, const char *key,
                                  const char *known);
/* value begins with one of the NBD URI schemes libnbd connects to. */
extern bool fleece_is_nbd_uri (const char *value);
/* A cluster or granule size: a power of two from 4K to 16M. */
extern int fleece_config_cluster (const char *key, const char *value,
                                  uint32_t *out);
extern int fleece_config_bool (const char *key, const char *value,
                               bool *out);
/* One of names (NULL-terminated): *out is its index.  Otherwise the
 * error is "KEY=VALUE: HELP" (help says what the names mean).
 */
extern int fleece_config_choice (const char *key, const char *value,
                                 const char *const names[],
                                 const char *help, int *out);
/* A size like 256M; the error ends "expected a size such as EXAMPLE". */
extern int fleece_config_size (const char *key, const char *value,
                               const char *example, uint64_t *out);
extern int fleece_config_uint (const char *key, const char *value,
                               uint64_t max, uint64_t *out);
/* Make value an absolute path (nbdkit's rules: relative to the
 * directory nbdkit started in).  *out is malloc'd; if it was already
 * set the parameter was given twice, which is an error.
 */
extern int fleece_config_path (const char *key, const char *value,
                               char **out);
/* Free a string fleece_config_string or fleece_config_path set (at
 * unload), leaving it NULL.
 */
extern void fleece_config_free (char **out);
/* The directory that would hold path exists, is a directory, and we
 * may create files in it.
 */
extern int fleece_check_parent_dir (const char *key, const char *path);
/* A file the filter keeps: a regular file if it exists, and in a
 * directory where it can be created (fleece_check_parent_dir).
 */
extern int fleece_check_own_file (const char *key, const char *path);

/* The project filter that owns parameter key (whether or not it is
 * loaded), or -1 if key is none of the project's parameters.  Asks
 * each filter's predicate (fleece_filter_rows).  Start-up routing of
 * parameters is in glue.c.
 */
extern int fleece_param_owner (const char *key);

#endif /* FLEECE_PARAMS_H */
