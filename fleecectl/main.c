/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * fleecectl: the usage text, subcommands, pass-through control lines,
 * the status command and error reporting.  See fleecectl.pod.
 */

#include <config.h>

#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fleecectl.h"
#include "opts.h"

static const char usage_text[] =
  "Usage:\n"
  "  fleecectl -c CTL status [--json]\n"
  "  fleecectl -c CTL backup [--since C] [--checkpoint N] [--speed RATE]\n"
  "                          [--target-zeroed] TARGET\n"
  "  fleecectl [-c CTL] pull [--since C] [--connections N]\n"
  "                          [--granularity SIZE] [--dest-zeroed] URI DEST\n"
  "  fleecectl -c CTL restore\n"
  "  fleecectl group-snapshot [--checkpoint N] [--name NAME] [--timeout S]\n"
  "                          [--json] CTL...\n"
  "  fleecectl -c CTL COMMAND [KEY=VALUE ...]   (any other control line)\n"
  "\n"
  "Talk to the control socket of an nbdkit running the fleece filters\n"
  "(control=CTL), run and follow push backups, and pull snapshot or\n"
  "incremental exports to a file or an NBD server.\n"
  "\n"
  "Options:\n"
  "  -c, --control=CTL     the control socket (control= of nbdkit)\n"
  "      --json            print the raw JSON reply (status)\n"
  "      --timeout=SECS    longest wait for a control reply (default 30)\n"
  "      --progress=MODE   auto (bar on a terminal, else lines), bar,\n"
  "                        lines or none\n"
  "  -q, --quiet           no progress output (--progress=none)\n"
  "  -h, --help            this text\n"
  "  -V, --version         the version\n"
  "\n"
  "backup: starts backup-start target=TARGET (a path, made absolute, or\n"
  "an NBD URI), sync=incremental iff --since, then follows the job;\n"
  "exit status 0 only if it completed.  Ctrl-C cancels the job.\n"
  "\n"
  "pull: reads URI (the snapshot export, nbd+unix:///snapshot?socket=S)\n"
  "or, with --since C, its delta view snapshot/since/C, and writes DEST\n"
  "(a file, or an NBD URI).  Full: DEST is created or truncated (a file)\n"
  "and only data is written.  Incremental: DEST holds the previous\n"
  "backup and exactly the changed blocks are written, zeroes included.\n"
  "\n"
  "restore: follows a live restore (the stream filter's population)\n"
  "with a progress bar; exit status 0 once every cluster is populated.\n"
  "\n"
  "group-snapshot: one consistent point across several servers (the\n"
  "disks of one VM): quiesce every CTL (writes are held, never failed,\n"
  "for at most --timeout S seconds, default 10), snapshot-begin on each\n"
  "[name=NAME] [checkpoint=N], resume each; on any failure, or if a hold\n"
  "ended at its timeout first, roll back (snapshot-end, checkpoint-delete\n"
  "N) and exit 1.  Prints the hold time per server.\n"
  "\n"
  "Exit status: 0 success, 1 failure, 2 usage error.  See fleecectl(1).\n";

void
fc_error (const char *fmt, ...)
{
  va_list ap;

  fflush (stdout);
  fprintf (stderr, "fleecectl: ");
  va_start (ap, fmt);
  vfprintf (stderr, fmt, ap);
  va_end (ap);
  fprintf (stderr, "\n");
}

const char *
fc_reply_error (const struct jval *reply, const char *dflt)
{
  const char *e = jv_str (jv_get (reply, "error"));

  return e ? e : dflt;
}

int
cmd_status (struct globals *g, int argc, char **argv)
{
  static const struct fc_opt opts[] = { FC_END };
  struct jval *reply;
  char *raw, err[1024];
  int ret = EXIT_OK;

  if (fc_options (g, "status", argc, argv, opts) == -1)
    return EXIT_USAGE;
  if (optind != argc) {
    fc_usage_error ("status takes no arguments, got '%s'", argv[optind]);
    return EXIT_USAGE;
  }
  if (!fc_have_ctl (g, "status"))
    return EXIT_USAGE;

  reply = ctl_call (g->ctl, "status", g->timeout_ms, &raw, err, sizeof err);
  if (reply == NULL) {
    fc_error ("%s", err);
    return EXIT_FAIL;
  }
  if (g->json)
    printf ("%s\n", raw);
  if (!jv_true (jv_get (reply, "ok"))) {
    fc_error ("status: %s", fc_reply_error (reply, raw));
    ret = EXIT_FAIL;
  }
  else if (!g->json)
    status_print (stdout, reply, time (NULL));
  jv_free (reply);
  free (raw);
  return ret;
}

/* Any other command: the words joined by spaces make one control
 * line; the reply is printed as it is, exit status 0 iff "ok":true.
 */
int
cmd_passthrough (struct globals *g, int argc, char **argv)
{
  size_t len = 1, i;
  char *line, *raw, err[1024];
  struct jval *reply;
  int ret;

  if (g->ctl == NULL) {
    fc_usage_error ("'%s' is a control command and needs the control "
                    "socket: -c CTL", argv[0]);
    return EXIT_USAGE;
  }
  for (i = 0; i < (size_t) argc; i++) {
    if (strchr (argv[i], '\n') || strchr (argv[i], '\r')) {
      fc_usage_error ("control line words may not contain newlines");
      return EXIT_USAGE;
    }
    len += strlen (argv[i]) + 1;
  }
  line = malloc (len);
  if (line == NULL) {
    fc_error ("out of memory");
    return EXIT_FAIL;
  }
  line[0] = '\0';
  for (i = 0; i < (size_t) argc; i++) {
    if (i)
      strcat (line, " ");
    strcat (line, argv[i]);
  }

  reply = ctl_call (g->ctl, line, g->timeout_ms, &raw, err, sizeof err);
  if (reply == NULL) {
    fc_error ("%s", err);
    free (line);
    return EXIT_FAIL;
  }
  printf ("%s\n", raw);
  if (jv_true (jv_get (reply, "ok")))
    ret = EXIT_OK;
  else {
    fc_error ("%s: %s", argv[0],
              fc_reply_error (reply, "the server answered ok:false"));
    ret = EXIT_FAIL;
  }
  jv_free (reply);
  free (raw);
  free (line);
  return ret;
}

static int
show_help (const char *name, const char *arg, void *dest)
{
  fputs (usage_text, stdout);
  exit (EXIT_OK);
}

static int
show_version (const char *name, const char *arg, void *dest)
{
  printf ("fleecectl %s\n", PACKAGE_VERSION);
  exit (EXIT_OK);
}

int
main (int argc, char *argv[])
{
  static const struct fc_opt opts[] = {
    { "help", no_argument, show_help, NULL, 'h' },
    { "version", no_argument, show_version, NULL, 'V' },
    FC_END
  };
  struct globals g = { NULL, false, 30000, PROGRESS_AUTO };
  const char *cmd;

  opterr = 0;                   /* our own one-line messages */
  if (fc_options (&g, NULL, argc, argv, opts) == -1)
    return EXIT_USAGE;
  if (optind >= argc) {
    fc_usage_error ("no command given");
    return EXIT_USAGE;
  }

  cmd = argv[optind];
  argc -= optind;
  argv += optind;
  if (strcmp (cmd, "status") == 0)
    return cmd_status (&g, argc, argv);
  if (strcmp (cmd, "backup") == 0)
    return cmd_backup (&g, argc, argv);
  if (strcmp (cmd, "pull") == 0)
    return cmd_pull (&g, argc, argv);
  if (strcmp (cmd, "restore") == 0)
    return cmd_restore (&g, argc, argv);
  if (strcmp (cmd, "group-snapshot") == 0)
    return cmd_group_snapshot (&g, argc, argv);
  if (strcmp (cmd, "help") == 0) {
    fputs (usage_text, stdout);
    return EXIT_OK;
  }
  return cmd_passthrough (&g, argc, argv);
}
