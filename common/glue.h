/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * The start-up and shutdown sequence every project filter shares,
 * written once (glue.c).  A filter describes itself in a struct
 * fleece_glue and gets its nbdkit callbacks from two macros:
 *
 *   static struct fleece_glue glue = {
 *     .id = FLEECE_CBW,
 *     .config = cbw_config_key,        // 1 taken, 0 not ours, -1 error
 *     .config_check = cbw_config_check,
 *     .get_ready = target_open,
 *     ...
 *   };
 *   FLEECE_GLUE_CALLBACKS (glue)
 *   ...
 *   static struct nbdkit_filter filter = {
 *     .name = "cbw",
 *     FLEECE_GLUE_FILTER_FIELDS,
 *     .pwrite = ...,
 *   };
 *
 * and its interface symbol begins with the same start-up link:
 *
 *   const struct fleece_cbw_api fleece_cbw_v1 = {
 *     .base = FLEECE_GLUE_API (struct fleece_cbw_api, FLEECE_CBW, "cbw",
 *                              snapshot_status, cbw_commands),
 *     ...
 *
 * A filter that treats every request that changes data alike (cbw
 * preserves, dirty-bitmap marks, stream populates, snapshot-access
 * routes) writes that once and gets .pwrite, .zero and .trim from
 * FLEECE_WRITE_CALLBACKS.
 *
 * What the glue does around the hooks (each hook may be NULL):
 *   .load             count the loads (--filter given twice), then load
 *   .config           the filter's keys, then control=, then refuse a
 *                     parameter of a project filter that is not loaded,
 *                     else pass it down
 *   .config_complete  mark started; refuse a filter given twice and an
 *                     unsupported stack; check control='s directory;
 *                     then config_check
 *   .get_ready        get_ready, then create the control socket (in
 *                     the filter that took control=)
 *   .after_fork       after_fork, then start the control server
 *   .cleanup          stop the control server, then the backup jobs
 *                     (snapshot-access, if loaded: they read through
 *                     the filters below it, whatever the order nbdkit
 *                     runs .cleanup in), then cleanup
 *   .unload           stop the control server, then unload
 *
 * The struct is written only by nbdkit's single-threaded start-up and
 * shutdown callbacks (load_count, config_started) and is otherwise
 * read-only, so it needs no lock.
 */

#ifndef FLEECE_GLUE_H
#define FLEECE_GLUE_H

#include <stdbool.h>
#include <stdint.h>

#include <nbdkit-filter.h>

#include "fleece-api.h"

struct fleece_glue {
  enum fleece_filter_id id;

  /* The filter's own hooks; any may be NULL. */
  void (*load) (void);
  void (*unload) (void);
  /* Returns 1 if key is the filter's and good, 0 if it is not the
   * filter's, -1 after nbdkit_error.
   */
  int (*config) (const char *key, const char *value);
  int (*config_check) (void);
  int (*get_ready) (void);
  int (*after_fork) (nbdkit_backend *backend);
  void (*cleanup) (void);

  /* Start-up state. */
  unsigned load_count;          /* nbdkit loads a module per --filter */
  int thread_model;             /* as .get_ready was told, before its hook */
  bool config_started;          /* .config_complete has begun */
};

extern void fleece_glue_load (struct fleece_glue *g);
extern void fleece_glue_unload (struct fleece_glue *g);
extern int fleece_glue_config (struct fleece_glue *g,
                               nbdkit_next_config *next,
                               nbdkit_backend *nxdata,
                               const char *key, const char *value);
extern int fleece_glue_config_complete (struct fleece_glue *g,
                                        nbdkit_next_config_complete *next,
                                        nbdkit_backend *nxdata);
extern int fleece_glue_get_ready (struct fleece_glue *g);
extern int fleece_glue_after_fork (struct fleece_glue *g,
                                   nbdkit_backend *backend);
extern void fleece_glue_cleanup (struct fleece_glue *g);

/* For .after_fork: the size of the disk below, or -1 after an error
 * that names the filter.
 */
extern int64_t fleece_glue_disk_size (enum fleece_filter_id id,
                                      nbdkit_backend *backend);

/* Define the filter's static callbacks glue_load ... glue_cleanup and
 * glue_config_started for the struct fleece_glue named g.
 */
#define FLEECE_GLUE_CALLBACKS(g)                                        \
  static void glue_load (void) { fleece_glue_load (&(g)); }             \
  static void glue_unload (void) { fleece_glue_unload (&(g)); }         \
  static int                                                            \
  glue_config (nbdkit_next_config *next, nbdkit_backend *nxdata,        \
               const char *key, const char *value)                      \
  {                                                                     \
    return fleece_glue_config (&(g), next, nxdata, key, value);         \
  }                                                                     \
  static int                                                            \
  glue_config_complete (nbdkit_next_config_complete *next,              \
                        nbdkit_backend *nxdata)                         \
  {                                                                     \
    return fleece_glue_config_complete (&(g), next, nxdata);            \
  }                                                                     \
  static int                                                            \
  glue_get_ready (int thread_model)                                     \
  {                                                                     \
    (g).thread_model = thread_model;                                    \
    return fleece_glue_get_ready (&(g));                                \
  }                                                                     \
  static int                                                            \
  glue_after_fork (nbdkit_backend *backend)                             \
  {                                                                     \
    return fleece_glue_after_fork (&(g), backend);                      \
  }                                                                     \
  static void                                                           \
  glue_cleanup (nbdkit_backend *backend)                                \
  {                                                                     \
    fleece_glue_cleanup (&(g));                                         \
  }                                                                     \
  static bool glue_config_started (void) { return (g).config_started; }

/* The nbdkit_filter members the callbacks above fill in. */
#define FLEECE_GLUE_FILTER_FIELDS                                       \
  .load = glue_load,                                                    \
  .unload = glue_unload,                                                \
  .config = glue_config,                                                \
  .config_complete = glue_config_complete,                              \
  .get_ready = glue_get_ready,                                          \
  .after_fork = glue_after_fork,                                        \
  .cleanup = glue_cleanup

/* The struct fleece_filter_api of the filter's interface symbol
 * (fleece-api.h): type is the whole interface struct; status and
 * commands may be NULL.
 */
#define FLEECE_GLUE_API(type, filter_id, filter_name, status_fn,         \
                        command_table)                                  \
  {                                                                     \
    .size = sizeof (type),                                              \
    .id = (filter_id),                                                  \
    .name = (filter_name),                                              \
    .config_started = glue_config_started,                              \
    .status = (status_fn),                                              \
    .commands = (command_table),                                        \
  }

/* The requests that change the disk's data. */
enum fleece_write_op { FLEECE_OP_WRITE, FLEECE_OP_ZERO, FLEECE_OP_TRIM };

/* Pass op down to next as it came (buf is for FLEECE_OP_WRITE only). */
extern int fleece_next_write (nbdkit_next *next, enum fleece_write_op op,
                              const void *buf, uint32_t count,
                              uint64_t offset, uint32_t flags, int *err);

/* Define static PREFIX_pwrite, PREFIX_zero and PREFIX_trim callbacks
 * that each call
 *   int fn (nbdkit_next *next, void *handle, enum fleece_write_op op,
 *           const void *buf, uint32_t count, uint64_t offset,
 *           uint32_t flags, int *err)
 * with buf NULL for zero and trim.
 */
#define FLEECE_WRITE_CALLBACKS(prefix, fn)                              \
  static int                                                            \
  prefix##_pwrite (nbdkit_next *next, void *handle, const void *buf,    \
                   uint32_t count, uint64_t offset, uint32_t flags,     \
                   int *err)                                            \
  {                                                                     \
    return fn (next, handle, FLEECE_OP_WRITE, buf, count, offset,       \
               flags, err);                                             \
  }                                                                     \
  static int                                                            \
  prefix##_zero (nbdkit_next *next, void *handle, uint32_t count,       \
                 uint64_t offset, uint32_t flags, int *err)             \
  {                                                                     \
    return fn (next, handle, FLEECE_OP_ZERO, NULL, count, offset,       \
               flags, err);                                             \
  }                                                                     \
  static int                                                            \
  prefix##_trim (nbdkit_next *next, void *handle, uint32_t count,       \
                 uint64_t offset, uint32_t flags, int *err)             \
  {                                                                     \
    return fn (next, handle, FLEECE_OP_TRIM, NULL, count, offset,       \
               flags, err);                                             \
  }

#endif /* FLEECE_GLUE_H */
