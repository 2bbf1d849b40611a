/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * The supported stacks.
 *
 * The project's filters keep their invariants only if every request
 * between them arrives unchanged and at once: cbw must see each write
 * before it reaches the disk that dirty-bitmap tracks and that
 * snapshot reads come from, at the same offsets, and snapshot-access
 * must read the same bytes cbw protects.  A filter between them that
 * keeps data of its own (cow, cache, readahead), answers block status
 * itself (cacheextents, extentlist) or moves offsets and sizes
 * (offset, truncate, partition, ...) breaks that, so only filters that
 * pass every request through unchanged may sit there.  Above the top
 * project filter every export shares what a filter keeps, so a filter
 * with a cache would serve live blocks as snapshot blocks: only
 * export-neutral filters may sit there.  Below the lowest project
 * filter every request of the stack takes the same path to the disk,
 * so any filter that serves one disk for every export name is fine.
 */

#include <config.h>

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <nbdkit-filter.h>

#include "cmdline.h"
#include "fleece-api.h"
#include "stack-rules.h"

/* Filters that pass every request through unchanged, at once: they
 * may sit between the project's filters and above them.
 */
static const char *const transparent[] = {
  "blocksize", "blocksize-policy", "delay", "error", "exitlast",
  "exitwhen", "fua", "ip", "limit", "log", "nocache", "noextents",
  "nofilter", "noparallel", "nozero", "pause", "rate", "retry",
  "retry-request", "stats", NULL
};

/* Also fine above the top project filter: they route or gate whole
 * connections and keep no data.
 */
static const char *const above_too[] = {
  "exportname", "multi-conn", "tls-fallback", NULL
};

/* Never below the lowest project filter: they make the disk depend on
 * the export name or the connection, and the project's filters open
 * the disk themselves under the default export name.
 */
static const char *const never_below[] = {
  "exportname", "tls-fallback", NULL
};

static const struct { const char *name, *why; } reasons[] = {
  { "cow", "it keeps writes in an overlay of its own" },
  { "cache", "it keeps blocks in a cache of its own" },
  { "readahead", "it serves reads from a buffer of its own" },
  { "cacheextents", "it answers block status from a cache of its own" },
  { "extentlist", "it invents block status" },
  { "ddrescue", "it invents block status" },
  { "checkwrite", "it turns writes into comparisons" },
  { "offset", "it moves offsets" },
  { "partition", "it moves offsets" },
  { "truncate", "it changes the size" },
  { "protect", "it refuses some writes after cbw has seen them" },
  { "swab", "it changes the data" },
  { "luks", "it changes the data" },
  { "exportname", "it changes export names" },
  { "tls-fallback", "it serves another disk to some connections" },
};

static bool
in (const char *name, const char *const *list)
{
  for (; *list; list++)
    if (strcmp (name, *list) == 0)
      return true;
  return false;
}

static const char *
reason (const char *name)
{
  size_t i;

  for (i = 0; i < sizeof reasons / sizeof reasons[0]; i++)
    if (strcmp (reasons[i].name, name) == 0)
      return reasons[i].why;
  return "it is not known to pass every request through unchanged";
}

static int
project_id (const char *name)
{
  int id;

  for (id = 0; id < FLEECE_NR_FILTERS; id++)
    if (strcmp (name, fleece_filter_name (id)) == 0)
      return id;
  return -1;
}

static char *
verdict (const char *fmt, ...)
  __attribute__ ((format (printf, 1, 2)));

static char *
verdict (const char *fmt, ...)
{
  va_list ap;
  char *s;

  va_start (ap, fmt);
  if (vasprintf (&s, fmt, ap) == -1)
    s = strdup ("unsupported filter stack");
  va_end (ap);
  return s;
}

char *
fleece_stack_verdict (char *const *filters, size_t n,
                      const bool present[FLEECE_NR_FILTERS])
{
  ssize_t pos[FLEECE_NR_FILTERS];
  ssize_t first = -1, last = -1;
  size_t i;
  int id;

  for (id = 0; id < FLEECE_NR_FILTERS; id++)
    pos[id] = -1;
  for (i = 0; i < n; i++) {
    id = project_id (filters[i]);
    if (id < 0)
      continue;
    if (pos[id] >= 0)
      return verdict ("--filter=%s is given more than once; one is enough",
                      filters[i]);
    pos[id] = i;
    if (first < 0)
      first = i;
    last = i;
  }
  for (id = 0; id < FLEECE_NR_FILTERS; id++) {
    if (present[id] && pos[id] < 0)
      return verdict ("cannot see where --filter=%s sits in the stack: give "
                      "the project's filters as --filter=NAME or as the "
                      "path of nbdkit-NAME-filter.so",
                      fleece_filter_name (id));
  }
  if (first < 0)
    return NULL;
  /* The filters find each other with dlsym (fleece-api.h), which works
   * because nbdkit loads filters with RTLD_GLOBAL.  A project filter on
   * the command line whose interface cannot be found means that is no
   * longer true, or the filters come from different builds: nothing
   * could check the stack or share snapshots, so refuse.
   */
  for (id = 0; id < FLEECE_NR_FILTERS; id++) {
    if (pos[id] >= 0 && !present[id])
      return verdict ("--filter=%s is in the stack but the project's filters "
                      "cannot find its interface: nbdkit no longer loads "
                      "filters with RTLD_GLOBAL, or the filters come from "
                      "different builds; install matching filters",
                      fleece_filter_name (id));
  }

  for (id = 0; id + 1 < FLEECE_NR_FILTERS; id++) {
    int later;

    for (later = id + 1; later < FLEECE_NR_FILTERS; later++)
      if (pos[id] >= 0 && pos[later] >= 0 && pos[later] < pos[id])
        return verdict ("unsupported filter order: --filter=%s must come "
                        "before --filter=%s (the supported order is "
                        "--filter=snapshot-access --filter=cbw "
                        "--filter=dirty-bitmap --filter=stream)",
                        fleece_filter_name (id), fleece_filter_name (later));
  }

  /* Dependencies (section 1 of the design: snapshot-access serves
   * what cbw preserves; cbw alone would let the snapshot names reach
   * the plugin as the live disk).
   */
  if (pos[FLEECE_SNAPSHOT_ACCESS] >= 0 && pos[FLEECE_CBW] < 0)
    return verdict ("the snapshot-access filter needs the cbw filter below "
                    "it: add --filter=cbw after --filter=snapshot-access");
  if (pos[FLEECE_CBW] >= 0 && pos[FLEECE_SNAPSHOT_ACCESS] < 0)
    return verdict ("the cbw filter needs the snapshot-access filter above "
                    "it, which serves the snapshot: add "
                    "--filter=snapshot-access before --filter=cbw");
  for (i = 0; i < n; i++) {
    const char *f = filters[i];
    ssize_t s = i;

    if (project_id (f) >= 0)
      continue;
    if (s < first && !in (f, transparent) && !in (f, above_too))
      return verdict ("--filter=%s cannot sit above --filter=%s: %s, and "
                      "the snapshot exports would share it with the live "
                      "disk; put it below --filter=%s or leave it out",
                      f, filters[first], reason (f), filters[last]);
    if (s > first && s < last && !in (f, transparent))
      return verdict ("--filter=%s cannot sit between the project's "
                      "filters (--filter=%s ... --filter=%s): %s, so "
                      "snapshots or change tracking would go wrong; put it "
                      "below --filter=%s or leave it out",
                      f, filters[first], filters[last], reason (f),
                      filters[last]);
    /* The stream filter populates the disk the plugin serves: what it
     * writes below must land there unchanged, so only pass-through
     * filters may sit between it and the plugin.
     */
    if (pos[FLEECE_STREAM] >= 0 && s > pos[FLEECE_STREAM] &&
        !in (f, transparent))
      return verdict ("--filter=%s cannot sit below --filter=stream: %s, "
                      "and the stream filter must sit directly above the "
                      "plugin that serves the local disk; put it above "
                      "--filter=stream or leave it out", f, reason (f));
    if (s > last && in (f, never_below))
      return verdict ("--filter=%s cannot sit below --filter=%s: %s, and "
                      "the project's filters read the disk under the "
                      "default export name", f, filters[last], reason (f));
  }
  return NULL;
}

/* The value of key=... among the plugin's arguments, or NULL. */
static const char *
param (const struct fleece_cmdline *c, const char *key)
{
  size_t i, len = strlen (key);

  for (i = 0; i < c->nparams; i++)
    if (strncmp (c->params[i], key, len) == 0 && c->params[i][len] == '=')
      return c->params[i] + len + 1;
  return NULL;
}

static bool
same_file (const char *a, const char *b)
{
  struct stat sa, sb;

  if (a == NULL || b == NULL || stat (a, &sa) == -1 || stat (b, &sb) == -1)
    return false;
  if (S_ISBLK (sa.st_mode) && S_ISBLK (sb.st_mode))
    return sa.st_rdev == sb.st_rdev;
  return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

char *
fleece_plugin_verdict (const struct fleece_cmdline *c)
{
  char *plugin;
  const char *disk = NULL, *target, *bitmaps, *state, *v;
  char *why = NULL;

  if (c->plugin == NULL)
    return NULL;
  plugin = fleece_filter_short_name (c->plugin);
  if (plugin == NULL)
    return NULL;
  /* The project's filters read and track one disk, whatever export
   * name a client asks for; a plugin that serves another disk for
   * every name would mix them.
   */
  if (strcmp (plugin, "file") == 0) {
    if (param (c, "dir"))
      why = verdict ("the file plugin with dir= serves another disk for "
                     "every export name, and snapshots and change tracking "
                     "need one disk: give file=DISK");
    disk = param (c, "file");
    if (disk == NULL && c->nparams > 0 && strchr (c->params[0], '=') == NULL)
      disk = c->params[0];
  }
  else if (strcmp (plugin, "nbd") == 0 &&
           (v = param (c, "dynamic-export")) != NULL &&
           (strcmp (v, "true") == 0 || strcmp (v, "1") == 0 ||
            strcmp (v, "on") == 0 || strcmp (v, "yes") == 0))
    why = verdict ("the nbd plugin with dynamic-export=true serves another "
                   "disk for every export name, and snapshots and change "
                   "tracking need one disk: leave dynamic-export out");
  free (plugin);
  if (why)
    return why;

  /* The fleecing target and the bitmap file are the project's own:
   * never the disk, never each other.
   */
  target = param (c, "cbw-target");
  bitmaps = param (c, "bitmap-file");
  if (same_file (target, disk))
    return verdict ("cbw-target=%s is the disk itself; copying old data "
                    "there would overwrite the disk", target);
  if (same_file (bitmaps, disk))
    return verdict ("bitmap-file=%s is the disk itself", bitmaps);
  state = param (c, "stream-state");
  if (same_file (state, disk))
    return verdict ("stream-state=%s is the disk itself", state);
  if (same_file (state, bitmaps) || same_file (state, target))
    return verdict ("stream-state=%s is also the bitmap file or the "
                    "fleecing target; give each its own file", state);
  if (same_file (bitmaps, target))
    return verdict ("bitmap-file=%s and cbw-target=%s are the same file",
                    bitmaps, target);
  return NULL;
}

int
fleece_check_stack (void)
{
  struct fleece_cmdline c;
  bool present[FLEECE_NR_FILTERS];
  char *why;
  int id;

  for (id = 0; id < FLEECE_NR_FILTERS; id++)
    present[id] = fleece_find (id) != NULL;
  if (fleece_cmdline_self (&c) == -1) {
    nbdkit_error ("cannot read nbdkit's command line (/proc/self/cmdline) "
                  "to check the filter stack: %m");
    return -1;
  }
  why = fleece_stack_verdict (c.filters, c.n, present);
  if (why == NULL)
    why = fleece_plugin_verdict (&c);
  fleece_cmdline_free (&c);
  if (why) {
    nbdkit_error ("%s", why);
    free (why);
    return -1;
  }
  return 0;
}

static bool
has_prefix_view (const char *name, const char *prefix)
{
  size_t len = strlen (prefix);

  return strncmp (name, prefix, len) == 0 &&
    (name[len] == '\0' || name[len] == '/' || name[len] == '@');
}

bool
fleece_reserved_export (const char *name, const char *snapshot_export)
{
  return has_prefix_view (name, "snapshot") ||
    (snapshot_export && has_prefix_view (name, snapshot_export));
}

void *
fleece_open_without_snapshots (nbdkit_next_open *next,
                               nbdkit_context *nxdata, int readonly,
                               const char *exportname)
{
  if (fleece_find (FLEECE_SNAPSHOT_ACCESS) == NULL &&
      fleece_reserved_export (exportname, NULL)) {
    nbdkit_error ("export %s: this stack serves no snapshots (it has no "
                  "snapshot-access filter); names beginning with "
                  "\"snapshot\" are reserved for snapshots", exportname);
    errno = ENOENT;
    return NULL;
  }
  if (next (nxdata, readonly, exportname) == -1)
    return NULL;
  return NBDKIT_HANDLE_NOT_NEEDED;
}
