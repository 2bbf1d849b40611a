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
 * and .config_started = glue_config_started in its fleece_filter_api.
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
 *   .cleanup          stop the control server, then cleanup
 *   .unload           stop the control server, then unload
 *
 * The struct is written only by nbdkit's single-threaded start-up and
 * shutdown callbacks (load_count, config_started) and is otherwise
 * read-only, so it needs no lock.
 */

#ifndef FLEECE_GLUE_H
#define FLEECE_GLUE_H

#include <stdbool.h>

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

#endif /* FLEECE_GLUE_H */
