/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * fleecectl: the command-line tool for the control socket and for
 * pulling backups (see fleecectl.pod).  Declarations shared by its
 * files; each file does one job:
 *
 *   main.c      usage, subcommands, status, pass-through control lines
 *   opts.c      the option loop of every subcommand (opts.h)
 *   ctl.c       control socket client (one line out, one JSON line in)
 *   jsonr.c     the JSON reader (pure)
 *   status.c    the human-readable status summary
 *   follow.c    following a job or restore until it ends; signals
 *   backup.c    backup-start and following the job
 *   restore.c   following a live restore
 *   progress.c  progress bar / progress lines, byte and time formatting
 *   pull.c      pull a snapshot or delta export with libnbd (pull.h):
 *   pull-copy.c   the workers that read the source
 *   pull-dest.c   the destination: opening, writing, zeroing
 *   group.c     group-snapshot: one point across several servers
 *
 * The tool is single-threaded except pull's workers, whose shared
 * state is documented in pull.h.
 */

#ifndef FLEECECTL_H
#define FLEECECTL_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include "jsonr.h"
#include "monotime.h"

/* Exit statuses. */
#define EXIT_OK     0
#define EXIT_FAIL   1
#define EXIT_USAGE  2

enum progress_mode {
  PROGRESS_AUTO,                /* a bar on a terminal, else lines */
  PROGRESS_BAR,
  PROGRESS_LINES,
  PROGRESS_NONE,
};

/* Options before the subcommand (and --json/--timeout anywhere). */
struct globals {
  const char *ctl;              /* -c: control socket path, or NULL */
  bool json;                    /* --json: raw replies */
  int timeout_ms;               /* --timeout: longest wait for a reply */
  enum progress_mode progress;  /* --progress= */
};

/* main.c */
/* "fleecectl: MESSAGE" on stderr. */
extern void fc_error (const char *fmt, ...)
  __attribute__ ((format (printf, 1, 2)));
/* The same for a command line that is wrong (fmt a string literal). */
#define fc_usage_error(fmt, ...) \
  fc_error (fmt " (fleecectl --help for usage)", ##__VA_ARGS__)
/* The error text of a reply, or dflt if it has none. */
extern const char *fc_reply_error (const struct jval *reply,
                                   const char *dflt);

/* ctl.c: send line to the control socket at path, wait at most
 * timeout_ms (<= 0: 30 s) for the one-line reply.  Returns the reply
 * (malloc'd, without its newline), or NULL with a message in err.
 */
extern char *ctl_request (const char *path, const char *line,
                          int timeout_ms, char *err, size_t errlen);
/* The same, parsed: a JSON object, or NULL with a message in err
 * (connection problems and replies that are not a JSON object; an
 * {"ok":false} reply is returned, not an error).  *raw, if not NULL,
 * gets the reply text (caller frees).
 */
extern struct jval *ctl_call (const char *path, const char *line,
                              int timeout_ms, char **raw,
                              char *err, size_t errlen);
/* A value for key=value on a control line: no spaces, tabs, control
 * characters or '=' problems.  False if str cannot be sent.
 */
extern bool ctl_word_ok (const char *str);

/* status.c */
extern void status_print (FILE *fp, const struct jval *reply, time_t now);
/* "2026-11-22T15:00:00Z" to a time_t; -1 if it is not one. */
extern time_t parse_iso_time (const char *s);
/* The job id as text ("7" for 7 or "7"), into buf; false if absent. */
extern bool job_id_text (const struct jval *v, char *buf, size_t len);

/* progress.c */
#define PROGRESS_WINDOW 16
struct progress {
  enum progress_mode mode;      /* resolved: BAR, LINES or NONE */
  FILE *fp;
  char label[160];
  double t0;                    /* when progress_start ran */
  double last_line;             /* when the last plain line was printed */
  double line_interval;         /* seconds between plain lines */
  bool drawn;                   /* a bar is on the current line */
  /* Recent (time, bytes) samples for the rate, oldest first. */
  size_t nsamples;
  double st[PROGRESS_WINDOW];
  uint64_t sb[PROGRESS_WINDOW];
};
extern void progress_start (struct progress *p, enum progress_mode mode,
                            FILE *fp, const char *label);
/* Record and (when due) show done of total bytes; extra is appended
 * (e.g. the job's state), may be NULL.
 */
extern void progress_update (struct progress *p, uint64_t done,
                             uint64_t total, const char *extra);
/* End the bar's line (if any) and print one final line with the
 * average rate: "LABEL: WHAT, N bytes in T s (R/s)".
 */
extern void progress_end (struct progress *p, uint64_t done,
                          const char *what);
/* End a drawn bar's line, so that a message starts on its own line. */
extern void progress_break (struct progress *p);
/* Bytes per second over the recent window; 0 if unknown. */
extern double progress_rate (const struct progress *p);
/* "1.5 GiB", "512 KiB", "17 B". */
extern void fmt_bytes (char *buf, size_t len, double bytes);
/* "0:05", "1:02:03", "?" for an unknown duration. */
extern void fmt_duration (char *buf, size_t len, double secs);

/* follow.c: SIGINT and SIGTERM while a command waits.  fc_interrupted
 * counts the signals caught (written only by the handler).
 */
extern volatile sig_atomic_t fc_interrupted;
struct fc_signals {
  struct sigaction old_int, old_term;
};
extern void fc_catch_signals (struct fc_signals *s);
extern void fc_restore_signals (const struct fc_signals *s);
/* Sleep ms milliseconds, or less when a signal comes. */
extern void fc_sleep_ms (int ms);

/* What one status reply says about the thing followed. */
enum follow_state {
  FOLLOW_WAIT,                  /* not there (yet): ask again */
  FOLLOW_RUNNING,
  FOLLOW_DONE,                  /* ended well: exit status 0 */
  FOLLOW_FAILED,                /* ended badly: state and error say why */
  FOLLOW_LOST,                  /* cannot be followed: why says why */
};
struct follow_view {
  uint64_t done, total;         /* bytes (kept while a reply lacks them) */
  const char *state;            /* the state word in the reply, or NULL */
  const char *error;            /* FOLLOW_FAILED: the reason, or NULL */
  char why[512];                /* FOLLOW_LOST: the whole message */
};
struct follower {
  const char *label;            /* of the progress output */
  const char *what;             /* in messages ("backup job 7") */
  int interval_ms;              /* between status requests */
  /* Read an ok status reply into v. */
  enum follow_state (*look) (struct follower *f, const struct jval *reply,
                             struct follow_view *v);
  /* After a signal: the exit status (p may have a bar drawn). */
  int (*interrupted) (struct globals *g, struct follower *f,
                      struct progress *p);
  void *opaque;                 /* the command's own state */
};
/* Poll status until f->look says the end; the exit status.  SIGINT and
 * SIGTERM are caught meanwhile.
 */
extern int fc_follow (struct globals *g, struct follower *f);

/* Subcommands. */
extern int cmd_status (struct globals *g, int argc, char **argv);
extern int cmd_backup (struct globals *g, int argc, char **argv);
extern int cmd_restore (struct globals *g, int argc, char **argv);
extern int cmd_pull (struct globals *g, int argc, char **argv);
extern int cmd_group_snapshot (struct globals *g, int argc, char **argv);
extern int cmd_passthrough (struct globals *g, int argc, char **argv);

#endif /* FLEECECTL_H */
