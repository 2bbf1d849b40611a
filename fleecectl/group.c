/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * fleecectl group-snapshot: one consistent point across several
 * servers (the disks of one VM).  Quiesce every server, begin every
 * snapshot, resume every server; on any failure roll back what this
 * run did (resume, snapshot-end, checkpoint-delete of the checkpoints
 * it started, which merges them back) so that nothing is half taken.
 *
 * Writes are held by the servers, never failed, and each server ends
 * its hold at the timeout by itself, so a coordinator that dies while
 * holding stops no guest for longer than --timeout.  If any resume
 * says the hold had already ended at its timeout, writes went on
 * before every snapshot was taken: the group is not consistent, so it
 * is rolled back and the command fails.
 *
 * Single-threaded; the only shared state is the signal count
 * fc_interrupted, checked between steps (then roll back).
 */

#include <config.h>

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fleecectl.h"
#include "opts.h"

/* One server of the group and what this run did to it. */
struct member {
  const char *ctl;
  bool quiesced;                /* our hold is on (quiesce ok, no resume) */
  int begun;                    /* 1 snapshot begun, -1 unknown, 0 not */
  bool held_known;
  uint64_t held_ms;             /* from resume's reply */
  char snap_id[32];             /* the id snapshot-begin replied */
  bool rolled_back;             /* snapshot (and checkpoint) undone */
  bool rollback_failed;
  char error[512];              /* first failure on this server */
};

struct group {
  struct globals *g;
  const char *name;             /* --name, or NULL: the default snapshot */
  const char *checkpoint;       /* --checkpoint, or NULL */
  unsigned hold;                /* --timeout: seconds */
  double pause_after;           /* hidden --pause-after-quiesce */
  size_t n;
  struct member *m;
  char error[1024];             /* why the group failed */
};

/* Record the group's failure (the first one wins). */
static void
group_fail (struct group *gr, const char *fmt, ...)
  __attribute__ ((format (printf, 2, 3)));

static void
group_fail (struct group *gr, const char *fmt, ...)
{
  va_list ap;

  if (gr->error[0])
    return;
  va_start (ap, fmt);
  vsnprintf (gr->error, sizeof gr->error, fmt, ap);
  va_end (ap);
}

/* Send line to m.  Returns the reply (ok or not), or NULL after a
 * connection problem, with the reason in err.  While writes are held
 * a reply is not waited for longer than the hold.
 */
static struct jval *
call (struct group *gr, struct member *m, const char *line, bool holding,
      char *err, size_t errlen)
{
  int ms = gr->g->timeout_ms;

  if (holding && ms > (int) gr->hold * 1000)
    ms = gr->hold * 1000;
  return ctl_call (m->ctl, line, ms, NULL, err, errlen);
}

/* The reply's error text. */
static const char *
reply_error (const struct jval *r)
{
  return fc_reply_error (r, "the server answered ok:false");
}

/* Step failed on m: why is the member's error (unless it has one) and,
 * with note appended, the group's.
 */
static void
member_fail (struct group *gr, struct member *m, const char *step,
             const char *why, const char *note)
{
  if (!m->error[0])
    snprintf (m->error, sizeof m->error, "%s: %.400s", step, why);
  group_fail (gr, "%s: %s: %s%s", m->ctl, step, why, note);
}

/* Steps 1 and 2: send line to every server in turn, writes held; stop
 * at the first failure or signal.  done records each ok reply, or NULL
 * when a server did not reply (the step may have happened there).
 */
static bool
all_members (struct group *gr, const char *step, const char *line,
             void (*done) (struct member *m, const struct jval *r))
{
  char err[1024];
  size_t i;

  for (i = 0; i < gr->n; i++) {
    struct member *m = &gr->m[i];
    struct jval *r;

    if (fc_interrupted) {
      group_fail (gr, "interrupted");
      return false;
    }
    r = call (gr, m, line, true, err, sizeof err);
    if (r == NULL) {
      member_fail (gr, m, step, err, "");
      done (m, NULL);
      return false;
    }
    if (!jv_true (jv_get (r, "ok"))) {
      member_fail (gr, m, step, reply_error (r), "");
      jv_free (r);
      return false;
    }
    done (m, r);
    jv_free (r);
  }
  return true;
}

/* quiesce answered ok, or not at all: either way the server may hold
 * writes (it ends a hold at its timeout, and resume_all tries sooner).
 */
static void
quiesced (struct member *m, const struct jval *r)
{
  m->quiesced = true;
}

static void
begun (struct member *m, const struct jval *r)
{
  uint64_t id;

  m->begun = r ? 1 : -1;
  if (jv_u64 (jv_get (r, "id"), &id))
    snprintf (m->snap_id, sizeof m->snap_id, "%" PRIu64, id);
}

static void
sleep_s (double secs)
{
  double until = fleece_now_mono () + secs;

  while (!fc_interrupted && fleece_now_mono () < until) {
    struct timespec ts = { 0, 50 * 1000000L };
    nanosleep (&ts, NULL);
  }
}

/* Step 1: quiesce every server. */
static bool
quiesce_all (struct group *gr)
{
  char line[64];

  snprintf (line, sizeof line, "quiesce timeout=%u", gr->hold);
  return all_members (gr, "quiesce", line, quiesced);
}

/* Step 2: begin every snapshot. */
static bool
begin_all (struct group *gr)
{
  char line[256];

  snprintf (line, sizeof line, "snapshot-begin%s%s%s%s",
            gr->name ? " name=" : "", gr->name ? gr->name : "",
            gr->checkpoint ? " checkpoint=" : "",
            gr->checkpoint ? gr->checkpoint : "");
  return all_members (gr, "snapshot-begin", line, begun);
}

/* Step 3 (always, also after a failure): resume every server we hold.
 * A resume that says the hold had ended at its timeout makes the group
 * inconsistent.
 */
static void
resume_all (struct group *gr)
{
  char err[1024], note[96];
  size_t i;

  snprintf (note, sizeof note, " (its hold ends at its timeout, %u s after "
            "quiesce)", gr->hold);
  for (i = 0; i < gr->n; i++) {
    struct member *m = &gr->m[i];
    struct jval *r;

    if (!m->quiesced)
      continue;
    m->quiesced = false;
    r = call (gr, m, "resume", false, err, sizeof err);
    if (r == NULL)
      member_fail (gr, m, "resume", err, note);
    else if (jv_true (jv_get (r, "ok")))
      m->held_known = jv_u64 (jv_get (r, "held_ms"), &m->held_ms);
    else
      member_fail (gr, m, "resume", reply_error (r), "");
    jv_free (r);
  }
}

/* Undo one member's snapshot and checkpoint.  An unknown begin (no
 * reply) is undone as far as the server has it: "no such" errors are
 * then expected and not failures.  rollback_line sends one line of it;
 * false (after a message) if it failed.
 */
static bool
rollback_line (struct group *gr, struct member *m, const char *line)
{
  char err[1024];
  struct jval *r = call (gr, m, line, false, err, sizeof err);
  bool ok = r && (jv_true (jv_get (r, "ok")) || m->begun == -1);

  if (!ok)
    fc_error ("%s: rollback: %s: %s", m->ctl, line,
              r ? reply_error (r) : err);
  jv_free (r);
  return ok;
}

static void
rollback_member (struct group *gr, struct member *m)
{
  char line[256];
  bool ok;

  snprintf (line, sizeof line, "snapshot-end%s%s",
            gr->name ? " name=" : "", gr->name ? gr->name : "");
  ok = rollback_line (gr, m, line);
  if (gr->checkpoint) {
    snprintf (line, sizeof line, "checkpoint-delete %s", gr->checkpoint);
    if (!rollback_line (gr, m, line))
      ok = false;
  }
  if (ok)
    m->rolled_back = true;
  else {
    m->rollback_failed = true;
    fc_error ("%s: could not roll back; end the snapshot%s%s%s%s by hand",
              m->ctl, gr->name ? " " : "", gr->name ? gr->name : "",
              gr->checkpoint ? " and delete checkpoint " : "",
              gr->checkpoint ? gr->checkpoint : "");
  }
  m->begun = 0;
}

static void
json_string (FILE *fp, const char *s)
{
  const unsigned char *p;

  if (s == NULL) {
    fputs ("null", fp);
    return;
  }
  fputc ('"', fp);
  for (p = (const unsigned char *) s; *p; p++) {
    if (*p == '"' || *p == '\\')
      fprintf (fp, "\\%c", *p);
    else if (*p < 0x20 || *p == 0x7f)
      fprintf (fp, "\\u%04x", *p);
    else
      fputc (*p, fp);
  }
  fputc ('"', fp);
}

/* The export a client opens for the snapshot (default snapshot-export). */
static void
export_name (const struct group *gr, char *buf, size_t len)
{
  snprintf (buf, len, "snapshot%s%s", gr->name ? "@" : "",
            gr->name ? gr->name : "");
}

static void
print_json (const struct group *gr, bool ok, uint64_t max_held)
{
  char exp[128];
  size_t i;

  export_name (gr, exp, sizeof exp);
  printf ("{\"ok\":%s,\"snapshot\":", ok ? "true" : "false");
  json_string (stdout, ok ? exp : NULL);
  printf (",\"checkpoint\":");
  json_string (stdout, gr->checkpoint);
  printf (",\"timeout\":%u,\"max_held_ms\":%" PRIu64 ",\"servers\":[",
          gr->hold, max_held);
  for (i = 0; i < gr->n; i++) {
    const struct member *m = &gr->m[i];

    printf ("%s{\"control\":", i ? "," : "");
    json_string (stdout, m->ctl);
    if (m->held_known)
      printf (",\"held_ms\":%" PRIu64, m->held_ms);
    else
      printf (",\"held_ms\":null");
    printf (",\"snapshot\":");
    json_string (stdout, m->begun == 1 ? exp : NULL);
    printf (",\"id\":");
    json_string (stdout, m->begun == 1 && m->snap_id[0] ? m->snap_id : NULL);
    printf (",\"rolled_back\":%s,\"error\":",
            m->rolled_back ? "true" : "false");
    json_string (stdout, m->error[0] ? m->error : NULL);
    printf ("}");
  }
  printf ("]");
  if (!ok) {
    printf (",\"error\":");
    json_string (stdout, gr->error);
  }
  printf ("}\n");
}

static void
print_text (const struct group *gr, bool ok, uint64_t max_held)
{
  char exp[128];
  size_t i;

  export_name (gr, exp, sizeof exp);
  for (i = 0; i < gr->n; i++) {
    const struct member *m = &gr->m[i];
    char held[64];

    if (m->held_known)
      snprintf (held, sizeof held, "held %" PRIu64 " ms", m->held_ms);
    else
      snprintf (held, sizeof held, "hold time unknown");
    printf ("%s: %s, %s%s%s\n", m->ctl,
            m->begun == 1 ? exp : m->rolled_back ? "rolled back"
            : m->rollback_failed ? "ROLLBACK FAILED" : "no snapshot",
            held, m->error[0] ? "; " : "", m->error);
  }
  if (ok)
    printf ("group-snapshot: %s taken on %zu servers%s%s, longest hold %"
            PRIu64 " ms\n", exp, gr->n,
            gr->checkpoint ? ", checkpoint " : "",
            gr->checkpoint ? gr->checkpoint : "", max_held);
}

static int
set_hold (const char *name, const char *arg, void *dest)
{
  uint64_t v;

  if (fc_parse_uint (name, arg, 1, 3600, "whole seconds, 1 to 3600", &v)
      == -1)
    return -1;
  *(unsigned *) dest = v;
  return 0;
}

static int
set_pause (const char *name, const char *arg, void *dest)
{
  uint64_t v;

  if (fc_parse_uint (name, arg, 0, 3600, "seconds", &v) == -1)
    return -1;
  *(double *) dest = v;
  return 0;
}

int
cmd_group_snapshot (struct globals *g, int argc, char **argv)
{
  struct group gr = { .g = g, .hold = 10 };
  /* --timeout is the hold here, not the global reply timeout.  Hidden:
   * --pause-after-quiesce=SECONDS (tests: kill the coordinator while
   * it holds).
   */
  const struct fc_opt opts[] = {
    FC_VALUE ("timeout", set_hold, &gr.hold),
    FC_VALUE ("checkpoint", fc_opt_text, &gr.checkpoint),
    FC_VALUE ("name", fc_opt_text, &gr.name),
    FC_VALUE ("pause-after-quiesce", set_pause, &gr.pause_after),
    FC_END
  };
  struct fc_signals sigs;
  uint64_t max_held = 0;
  bool ok;
  size_t i, j;

  if (fc_options (g, "group-snapshot", argc, argv, opts) == -1 ||
      !fc_name_ok ("name", gr.name, "snapshot") ||
      !fc_name_ok ("checkpoint", gr.checkpoint, "checkpoint"))
    return EXIT_USAGE;

  /* The servers: -c CTL (if given) and every argument. */
  gr.n = (g->ctl ? 1 : 0) + (argc - optind);
  if (gr.n == 0) {
    fc_usage_error ("group-snapshot needs the control sockets of the "
                    "servers: group-snapshot CTL...");
    return EXIT_USAGE;
  }
  gr.m = calloc (gr.n, sizeof *gr.m);
  if (gr.m == NULL) {
    fc_error ("out of memory");
    return EXIT_FAIL;
  }
  i = 0;
  if (g->ctl)
    gr.m[i++].ctl = g->ctl;
  for (; optind < argc; optind++)
    gr.m[i++].ctl = argv[optind];
  for (i = 0; i < gr.n; i++)
    for (j = 0; j < i; j++)
      if (strcmp (gr.m[i].ctl, gr.m[j].ctl) == 0) {
        fc_usage_error ("group-snapshot: %s is given twice", gr.m[i].ctl);
        free (gr.m);
        return EXIT_USAGE;
      }

  /* A signal while holding rolls back instead of leaving a half group. */
  fc_catch_signals (&sigs);

  ok = quiesce_all (&gr);
  if (ok && gr.pause_after > 0)
    sleep_s (gr.pause_after);
  ok = ok && begin_all (&gr);
  resume_all (&gr);
  if (ok && fc_interrupted)
    group_fail (&gr, "interrupted");
  ok = gr.error[0] == '\0';
  if (!ok)
    for (i = 0; i < gr.n; i++)
      if (gr.m[i].begun)
        rollback_member (&gr, &gr.m[i]);

  for (i = 0; i < gr.n; i++)
    if (gr.m[i].held_known && gr.m[i].held_ms > max_held)
      max_held = gr.m[i].held_ms;
  if (g->json)
    print_json (&gr, ok, max_held);
  else
    print_text (&gr, ok, max_held);
  if (!ok) {
    bool left = false;
    for (i = 0; i < gr.n; i++)
      left |= gr.m[i].rollback_failed;
    fc_error ("group-snapshot failed: %s; %s", gr.error,
              left ? "the rollback failed on some servers (see above)"
              : "rolled back, nothing was taken");
  }

  fc_restore_signals (&sigs);
  free (gr.m);
  return ok ? EXIT_OK : EXIT_FAIL;
}
