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
 * Single-threaded; the only shared state is the signal flag.
 */

#include <config.h>

#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fleecectl.h"
#include "opts.h"
#include "size.h"

/* Set by SIGINT/SIGTERM; checked between steps (then roll back). */
static volatile sig_atomic_t interrupted;

static void
on_signal (int sig)
{
  interrupted = 1;
}

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
  const char *e = jv_str (jv_get (r, "error"));
  return e ? e : "the server answered ok:false";
}

static void
sleep_s (double secs)
{
  double until = now_mono () + secs;

  while (!interrupted && now_mono () < until) {
    struct timespec ts = { 0, 50 * 1000000L };
    nanosleep (&ts, NULL);
  }
}

/* Step 1: quiesce every server in turn; stop at the first failure. */
static bool
quiesce_all (struct group *gr)
{
  char line[64], err[1024];
  size_t i;

  snprintf (line, sizeof line, "quiesce timeout=%u", gr->hold);
  for (i = 0; i < gr->n; i++) {
    struct member *m = &gr->m[i];
    struct jval *r;

    if (interrupted) {
      group_fail (gr, "interrupted");
      return false;
    }
    r = call (gr, m, line, true, err, sizeof err);
    if (r == NULL) {
      /* No reply: the server may hold writes; it ends the hold at
       * its timeout, and resume below tries to end it sooner.
       */
      m->quiesced = true;
      snprintf (m->error, sizeof m->error, "quiesce: %.400s", err);
      group_fail (gr, "%s: quiesce: %s", m->ctl, err);
      return false;
    }
    if (!jv_true (jv_get (r, "ok"))) {
      snprintf (m->error, sizeof m->error, "quiesce: %.400s", reply_error (r));
      group_fail (gr, "%s: quiesce: %s", m->ctl, reply_error (r));
      jv_free (r);
      return false;
    }
    jv_free (r);
    m->quiesced = true;
  }
  return true;
}

/* Step 2: begin every snapshot; stop at the first failure. */
static bool
begin_all (struct group *gr)
{
  char line[256], err[1024];
  size_t i;

  snprintf (line, sizeof line, "snapshot-begin%s%s%s%s",
            gr->name ? " name=" : "", gr->name ? gr->name : "",
            gr->checkpoint ? " checkpoint=" : "",
            gr->checkpoint ? gr->checkpoint : "");
  for (i = 0; i < gr->n; i++) {
    struct member *m = &gr->m[i];
    struct jval *r;
    uint64_t id;

    if (interrupted) {
      group_fail (gr, "interrupted");
      return false;
    }
    r = call (gr, m, line, true, err, sizeof err);
    if (r == NULL) {
      m->begun = -1;            /* it may have been taken */
      snprintf (m->error, sizeof m->error, "snapshot-begin: %.400s", err);
      group_fail (gr, "%s: snapshot-begin: %s", m->ctl, err);
      return false;
    }
    if (!jv_true (jv_get (r, "ok"))) {
      snprintf (m->error, sizeof m->error, "snapshot-begin: %.400s",
                reply_error (r));
      group_fail (gr, "%s: snapshot-begin: %s", m->ctl, reply_error (r));
      jv_free (r);
      return false;
    }
    m->begun = 1;
    if (jv_u64 (jv_get (r, "id"), &id))
      snprintf (m->snap_id, sizeof m->snap_id, "%" PRIu64, id);
    jv_free (r);
  }
  return true;
}

/* Step 3 (always, also after a failure): resume every server we hold.
 * A resume that says the hold had ended at its timeout makes the group
 * inconsistent.
 */
static void
resume_all (struct group *gr)
{
  char err[1024];
  size_t i;

  for (i = 0; i < gr->n; i++) {
    struct member *m = &gr->m[i];
    struct jval *r;

    if (!m->quiesced)
      continue;
    m->quiesced = false;
    r = call (gr, m, "resume", false, err, sizeof err);
    if (r == NULL) {
      if (!m->error[0])
        snprintf (m->error, sizeof m->error, "resume: %.400s", err);
      group_fail (gr, "%s: resume: %s (its hold ends at its timeout, "
                  "%u s after quiesce)", m->ctl, err, gr->hold);
      continue;
    }
    if (jv_true (jv_get (r, "ok"))) {
      m->held_known = jv_u64 (jv_get (r, "held_ms"), &m->held_ms);
    }
    else {
      if (!m->error[0])
        snprintf (m->error, sizeof m->error, "resume: %.400s", reply_error (r));
      group_fail (gr, "%s: resume: %s", m->ctl, reply_error (r));
    }
    jv_free (r);
  }
}

/* Undo one member's snapshot and checkpoint.  An unknown begin (no
 * reply) is undone as far as the server has it: "no such" errors are
 * then expected and not failures.
 */
static void
rollback_member (struct group *gr, struct member *m)
{
  char line[256], err[1024];
  struct jval *r;
  bool unknown = m->begun == -1, ok = true;

  snprintf (line, sizeof line, "snapshot-end%s%s",
            gr->name ? " name=" : "", gr->name ? gr->name : "");
  r = call (gr, m, line, false, err, sizeof err);
  if (r == NULL || (!jv_true (jv_get (r, "ok")) && !unknown)) {
    fc_error ("%s: rollback: %s: %s", m->ctl, line,
              r ? reply_error (r) : err);
    ok = false;
  }
  jv_free (r);

  if (gr->checkpoint) {
    snprintf (line, sizeof line, "checkpoint-delete %s", gr->checkpoint);
    r = call (gr, m, line, false, err, sizeof err);
    if (r == NULL || (!jv_true (jv_get (r, "ok")) && !unknown)) {
      fc_error ("%s: rollback: %s: %s", m->ctl, line,
                r ? reply_error (r) : err);
      ok = false;
    }
    jv_free (r);
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

/* Hidden: --pause-after-quiesce=SECONDS (tests: kill the coordinator
 * while it holds).
 */
enum { OPT_NAME = 512, OPT_HOLD, OPT_PAUSE_AFTER };

static const struct option group_opts[] = {
  { "control", required_argument, NULL, 'c' },
  { "json", no_argument, NULL, OPT_JSON },
  { "progress", required_argument, NULL, OPT_PROGRESS },
  { "quiet", no_argument, NULL, 'q' },
  { "timeout", required_argument, NULL, OPT_HOLD },
  { "checkpoint", required_argument, NULL, OPT_CHECKPOINT },
  { "name", required_argument, NULL, OPT_NAME },
  { "pause-after-quiesce", required_argument, NULL, OPT_PAUSE_AFTER },
  { NULL, 0, NULL, 0 }
};

int
cmd_group_snapshot (struct globals *g, int argc, char **argv)
{
  struct group gr = { .g = g, .hold = 10 };
  struct sigaction sa, old_int, old_term;
  uint64_t v, max_held = 0;
  bool ok;
  int c, r;
  size_t i, j;

  optind = 1;
  while ((c = getopt_long (argc, argv, "+" GLOBAL_SHORT_OPTS, group_opts,
                           NULL)) != -1) {
    switch (c) {
    case OPT_CHECKPOINT: gr.checkpoint = optarg; break;
    case OPT_NAME: gr.name = optarg; break;
    case OPT_HOLD:
      if (fleece_parse_uint (optarg, 3600, &v, &(const char *){ NULL })
          == -1 || v < 1) {
        fc_usage_error ("--timeout=%s: expected whole seconds, 1 to 3600",
                        optarg);
        return EXIT_USAGE;
      }
      gr.hold = v;
      break;
    case OPT_PAUSE_AFTER:
      if (fleece_parse_uint (optarg, 3600, &v, &(const char *){ NULL })
          == -1) {
        fc_usage_error ("--pause-after-quiesce=%s: expected seconds", optarg);
        return EXIT_USAGE;
      }
      gr.pause_after = v;
      break;
    default:
      r = fc_global_option (g, c, optarg);
      if (r == -1)
        return EXIT_USAGE;
      if (r == 1) {
        fc_usage_error ("group-snapshot: unknown option or missing value: %s",
                        argv[optind - 1]);
        return EXIT_USAGE;
      }
    }
  }
  if (gr.name && !fleece_valid_name (gr.name)) {
    fc_usage_error ("--name=%s: not a valid snapshot name (1-64 of A-Z a-z "
                    "0-9 _ . -, not starting with . or -)", gr.name);
    return EXIT_USAGE;
  }
  if (gr.checkpoint && !fleece_valid_name (gr.checkpoint)) {
    fc_usage_error ("--checkpoint=%s: not a valid checkpoint name (1-64 of "
                    "A-Z a-z 0-9 _ . -, not starting with . or -)",
                    gr.checkpoint);
    return EXIT_USAGE;
  }

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
  memset (&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigemptyset (&sa.sa_mask);
  sigaction (SIGINT, &sa, &old_int);
  sigaction (SIGTERM, &sa, &old_term);

  ok = quiesce_all (&gr);
  if (ok && gr.pause_after > 0)
    sleep_s (gr.pause_after);
  ok = ok && begin_all (&gr);
  resume_all (&gr);
  if (ok && interrupted)
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

  sigaction (SIGINT, &old_int, NULL);
  sigaction (SIGTERM, &old_term, NULL);
  free (gr.m);
  return ok ? EXIT_OK : EXIT_FAIL;
}
