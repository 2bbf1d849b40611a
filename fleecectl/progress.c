/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * Progress display for backup and pull.  On a terminal a bar redrawn
 * in place on one line:
 *
 *   backup 3 [#########...........]  45.0%  450 MiB / 1.0 GiB  120 MiB/s  ETA 0:05
 *
 * otherwise one plain line about every second:
 *
 *   backup 3: 45.0% 471859200/1073741824 bytes, 120 MiB/s, ETA 0:05
 *
 * The rate is measured over the last PROGRESS_WINDOW samples (a few
 * seconds at the usual polling rates), so it follows changes of speed.
 */

#include <config.h>

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fleecectl.h"

#define BAR_WIDTH 24

void
fmt_bytes (char *buf, size_t len, double bytes)
{
  static const char *units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB" };
  size_t u = 0;

  while (bytes >= 1024 && u < sizeof units / sizeof units[0] - 1) {
    bytes /= 1024;
    u++;
  }
  if (u == 0)
    snprintf (buf, len, "%.0f B", bytes);
  else
    snprintf (buf, len, "%.*f %s", bytes < 10 ? 1 : 0, bytes, units[u]);
}

void
fmt_duration (char *buf, size_t len, double secs)
{
  unsigned long s;

  if (!(secs >= 0) || secs > 100 * 24 * 3600.0) {
    snprintf (buf, len, "?");
    return;
  }
  s = (unsigned long) (secs + 0.5);
  if (s >= 3600)
    snprintf (buf, len, "%lu:%02lu:%02lu", s / 3600, s / 60 % 60, s % 60);
  else
    snprintf (buf, len, "%lu:%02lu", s / 60, s % 60);
}

void
progress_start (struct progress *p, enum progress_mode mode, FILE *fp,
                const char *label)
{
  memset (p, 0, sizeof *p);
  if (mode == PROGRESS_AUTO)
    mode = isatty (fileno (fp)) ? PROGRESS_BAR : PROGRESS_LINES;
  p->mode = mode;
  p->fp = fp;
  snprintf (p->label, sizeof p->label, "%s", label);
  p->t0 = fleece_now_mono ();
  p->last_line = -1;
  p->line_interval = 1.0;
}

double
progress_rate (const struct progress *p)
{
  double dt;

  if (p->nsamples < 2)
    return 0;
  dt = p->st[p->nsamples - 1] - p->st[0];
  if (dt <= 0 || p->sb[p->nsamples - 1] < p->sb[0])
    return 0;
  return (p->sb[p->nsamples - 1] - p->sb[0]) / dt;
}

static void
add_sample (struct progress *p, double t, uint64_t done)
{
  /* A counter that went back (a new job?) restarts the window. */
  if (p->nsamples > 0 && done < p->sb[p->nsamples - 1])
    p->nsamples = 0;
  if (p->nsamples == PROGRESS_WINDOW) {
    memmove (p->st, p->st + 1, (PROGRESS_WINDOW - 1) * sizeof p->st[0]);
    memmove (p->sb, p->sb + 1, (PROGRESS_WINDOW - 1) * sizeof p->sb[0]);
    p->nsamples--;
  }
  p->st[p->nsamples] = t;
  p->sb[p->nsamples] = done;
  p->nsamples++;
}

void
progress_update (struct progress *p, uint64_t done, uint64_t total,
                 const char *extra)
{
  double t = fleece_now_mono (), rate, pct, eta;
  char sdone[32], stotal[32], srate[32], seta[32];

  add_sample (p, t, done);
  if (p->mode == PROGRESS_NONE)
    return;

  rate = progress_rate (p);
  pct = total ? 100.0 * (done > total ? total : done) / total : 0;
  eta = rate > 0 && total >= done ? (total - done) / rate : -1;
  if (total > 0 && done >= total)
    eta = 0;
  fmt_bytes (sdone, sizeof sdone, done);
  fmt_bytes (stotal, sizeof stotal, total);
  if (rate > 0) {
    fmt_bytes (srate, sizeof srate, rate);
    strcat (srate, "/s");
  }
  else
    strcpy (srate, "-- B/s");
  fmt_duration (seta, sizeof seta, eta);

  if (p->mode == PROGRESS_BAR) {
    char bar[BAR_WIDTH + 1];
    int fill = (int) (pct / 100 * BAR_WIDTH);

    memset (bar, '#', fill);
    memset (bar + fill, '.', BAR_WIDTH - fill);
    bar[BAR_WIDTH] = '\0';
    /* \r back to the start of the line, \033[K clears the rest. */
    fprintf (p->fp, "\r%s [%s] %5.1f%%  %s / %s  %s  ETA %s%s%s\033[K",
             p->label, bar, pct, sdone, stotal, srate, seta,
             extra ? "  " : "", extra ? extra : "");
    p->drawn = true;
    fflush (p->fp);
    return;
  }

  /* Plain lines: the first one at once, then one per interval. */
  if (p->last_line >= 0 && t - p->last_line < p->line_interval)
    return;
  p->last_line = t;
  fprintf (p->fp, "%s: %.1f%% %llu/%llu bytes, %s, ETA %s%s%s\n",
           p->label, pct, (unsigned long long) done,
           (unsigned long long) total, srate, seta,
           extra ? ", " : "", extra ? extra : "");
  fflush (p->fp);
}

void
progress_break (struct progress *p)
{
  if (p->drawn) {
    fputc ('\n', p->fp);
    p->drawn = false;
  }
}

void
progress_end (struct progress *p, uint64_t done, const char *what)
{
  double secs = fleece_now_mono () - p->t0;
  char srate[32];

  if (p->mode == PROGRESS_NONE)
    return;
  progress_break (p);
  fmt_bytes (srate, sizeof srate, secs > 0 ? done / secs : 0);
  fprintf (p->fp, "%s: %s, %llu bytes in %.1f s (%s/s)\n",
           p->label, what, (unsigned long long) done, secs, srate);
  fflush (p->fp);
}
