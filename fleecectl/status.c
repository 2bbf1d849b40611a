/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * The human-readable summary of a status reply (fleecectl status).
 * Written against the contract's keys; keys it does not know are
 * ignored and missing ones are left out of the summary, so it works
 * with servers older or newer than the tool.
 */

#include <config.h>

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "fleecectl.h"

time_t
parse_iso_time (const char *s)
{
  struct tm tm;
  int n = 0;

  if (s == NULL)
    return -1;
  memset (&tm, 0, sizeof tm);
  if (sscanf (s, "%4d-%2d-%2dT%2d:%2d:%2dZ%n", &tm.tm_year, &tm.tm_mon,
              &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &n) != 6 ||
      n == 0 || s[n] != '\0')
    return -1;
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  return timegm (&tm);
}

bool
job_id_text (const struct jval *v, char *buf, size_t len)
{
  if (jv_str (v)) {
    snprintf (buf, len, "%s", jv_str (v));
    return true;
  }
  if (jv_is (v, JV_NUMBER)) {
    if (v->is_u64)
      snprintf (buf, len, "%" PRIu64, v->u64);
    else
      snprintf (buf, len, "%g", v->number);
    return true;
  }
  return false;
}

/* " KEY SIZE" if obj has a number under key. */
static void
put_bytes (FILE *fp, const struct jval *obj, const char *key,
           const char *label)
{
  uint64_t v;
  char b[32];

  if (jv_u64 (jv_get (obj, key), &v)) {
    fmt_bytes (b, sizeof b, v);
    fprintf (fp, ", %s %s", label, b);
  }
}

static void
put_snapshot (FILE *fp, const char *title, const struct jval *s)
{
  const char *started = jv_str (jv_get (s, "started"));
  const char *cp = jv_str (jv_get (s, "checkpoint"));
  const char *since = jv_str (jv_get (s, "since"));
  const struct jval *broken = jv_get (s, "broken");
  uint64_t v;

  if (!jv_true (jv_get (s, "active"))) {
    fprintf (fp, "%s: none\n", title);
    return;
  }
  fprintf (fp, "%s: active", title);
  if (started)
    fprintf (fp, " since %s", started);
  if (cp || since) {
    fprintf (fp, " (");
    if (cp)
      fprintf (fp, "checkpoint %s", cp);
    if (since)
      fprintf (fp, "%ssince %s", cp ? ", " : "", since);
    fprintf (fp, ")");
  }
  if (jv_u64 (jv_get (s, "clusters_copied"), &v))
    fprintf (fp, ", %" PRIu64 " clusters copied", v);
  put_bytes (fp, s, "target_bytes", "target");
  put_bytes (fp, s, "released_bytes", "released");
  fprintf (fp, "\n");
  if (broken && !jv_is (broken, JV_NULL) &&
      !(jv_is (broken, JV_BOOL) && !broken->boolean))
    fprintf (fp, "  BROKEN: %s\n",
             jv_str (broken) ? jv_str (broken) : "(no reason given)");
}

/* "TITLE: none" for an empty list (false), else "TITLE:" (true). */
static bool
put_list_title (FILE *fp, const char *title, const struct jval *list)
{
  if (jv_len (list) == 0) {
    fprintf (fp, "%s: none\n", title);
    return false;
  }
  fprintf (fp, "%s:\n", title);
  return true;
}

static void
put_checkpoints (FILE *fp, const struct jval *cps)
{
  size_t i;

  if (!put_list_title (fp, "checkpoints", cps))
    return;
  for (i = 0; i < jv_len (cps); i++) {
    const struct jval *c = jv_index (cps, i);
    const char *name = jv_str (jv_get (c, "name"));
    const char *created = jv_str (jv_get (c, "created"));
    const struct jval *cons = jv_get (c, "consistent");
    uint64_t v;
    char b[32];

    fprintf (fp, "  %s", name ? name : "?");
    if (created)
      fprintf (fp, "  created %s", created);
    if (jv_u64 (jv_get (c, "dirty_bytes"), &v)) {
      fmt_bytes (b, sizeof b, v);
      fprintf (fp, "  dirty %s", b);
    }
    if (jv_true (jv_get (c, "recording")))
      fprintf (fp, "  recording");
    if (jv_true (jv_get (c, "persistent")))
      fprintf (fp, "  persistent");
    if (jv_is (cons, JV_BOOL)) {
      if (cons->boolean)
        fprintf (fp, "  consistent");
      else {
        const char *reason = jv_str (jv_get (c, "reason"));
        fprintf (fp, "  INCONSISTENT: %s", reason ? reason : "no reason given");
      }
    }
    fprintf (fp, "\n");
  }
}

/* "45.0%  450 MiB / 1.0 GiB" from bytes_done and bytes_total. */
static void
put_fraction (FILE *fp, const struct jval *o)
{
  uint64_t done, total;
  char b1[32], b2[32];

  if (!jv_u64 (jv_get (o, "bytes_done"), &done))
    return;
  fmt_bytes (b1, sizeof b1, done);
  if (jv_u64 (jv_get (o, "bytes_total"), &total)) {
    fmt_bytes (b2, sizeof b2, total);
    fprintf (fp, "  %.1f%%  %s / %s",
             total ? 100.0 * (done > total ? total : done) / total : 100.0,
             b1, b2);
  }
  else
    fprintf (fp, "  %s done", b1);
}

static void
put_speed (FILE *fp, const struct jval *o)
{
  uint64_t v;
  char b[32];

  if (jv_u64 (jv_get (o, "speed"), &v)) {
    if (v == 0)
      fprintf (fp, "  speed unlimited");
    else {
      fmt_bytes (b, sizeof b, v);
      fprintf (fp, "  speed limit %s/s", b);
    }
  }
}

static void
put_jobs (FILE *fp, const struct jval *jobs, time_t now)
{
  size_t i;

  if (jobs == NULL || !put_list_title (fp, "jobs", jobs))
    return;
  for (i = 0; i < jv_len (jobs); i++) {
    const struct jval *j = jv_index (jobs, i);
    const char *type = jv_str (jv_get (j, "type"));
    const char *sync = jv_str (jv_get (j, "sync"));
    const char *state = jv_str (jv_get (j, "state"));
    const char *started = jv_str (jv_get (j, "started"));
    const char *finished = jv_str (jv_get (j, "finished"));
    const char *error = jv_str (jv_get (j, "error"));
    char id[64], b[32];
    time_t t0 = parse_iso_time (started);
    time_t t1 = finished ? parse_iso_time (finished) : now;
    uint64_t done;

    if (!job_id_text (jv_get (j, "id"), id, sizeof id))
      strcpy (id, "?");
    fprintf (fp, "  %s  %s%s%s  %s", id, type ? type : "job",
             sync ? " " : "", sync ? sync : "", state ? state : "?");
    put_fraction (fp, j);
    /* The average rate from the job's own times. */
    if (t0 != -1 && t1 != -1 && t1 > t0 &&
        jv_u64 (jv_get (j, "bytes_done"), &done)) {
      fmt_bytes (b, sizeof b, (double) done / (t1 - t0));
      fprintf (fp, "  rate %s/s", b);
    }
    put_speed (fp, j);
    if (started)
      fprintf (fp, "  started %s", started);
    if (finished)
      fprintf (fp, "  finished %s", finished);
    fprintf (fp, "\n");
    if (error)
      fprintf (fp, "    error: %s\n", error);
  }
}

static void
put_stream (FILE *fp, const struct jval *s)
{
  const char *state = jv_str (jv_get (s, "state"));
  const struct jval *bc = jv_get (s, "base_connected");

  if (s == NULL || !jv_is (s, JV_OBJECT))
    return;
  fprintf (fp, "stream: %s", state ? state : "?");
  put_fraction (fp, s);
  put_speed (fp, s);
  if (jv_is (bc, JV_BOOL))
    fprintf (fp, "  base %s", bc->boolean ? "connected" : "NOT connected");
  fprintf (fp, "\n");
}

void
status_print (FILE *fp, const struct jval *reply, time_t now)
{
  const struct jval *snap = jv_get (reply, "snapshot");
  const struct jval *named = jv_get (reply, "snapshots");
  size_t i;

  if (snap)
    put_snapshot (fp, "snapshot", snap);
  for (i = 0; i < jv_len (named); i++) {
    const struct jval *s = jv_index (named, i);
    const char *name = jv_str (jv_get (s, "name"));
    char title[128];

    snprintf (title, sizeof title, "snapshot@%s", name ? name : "?");
    put_snapshot (fp, title, s);
  }
  put_checkpoints (fp, jv_get (reply, "checkpoints"));
  put_jobs (fp, jv_get (reply, "jobs"), now);
  put_stream (fp, jv_get (reply, "stream"));
}
