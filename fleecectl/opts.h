/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * Options every fleecectl subcommand accepts (main.c handles them),
 * so "fleecectl status -c CTL --json" works as well as
 * "fleecectl -c CTL --json status".
 */

#ifndef FLEECECTL_OPTS_H
#define FLEECECTL_OPTS_H

#include <getopt.h>

#include "fleecectl.h"

enum {
  OPT_JSON = 256,
  OPT_TIMEOUT,
  OPT_PROGRESS,
  /* Subcommand options. */
  OPT_SINCE,
  OPT_CHECKPOINT,
  OPT_SPEED,
  OPT_TARGET_ZEROED,
  OPT_CONNECTIONS,
  OPT_GRANULARITY,
  OPT_DEST_ZEROED,
  OPT_INTERVAL,
};

#define GLOBAL_SHORT_OPTS "c:q"
#define GLOBAL_LONG_OPTS                                   \
  { "control", required_argument, NULL, 'c' },             \
  { "json", no_argument, NULL, OPT_JSON },                 \
  { "timeout", required_argument, NULL, OPT_TIMEOUT },     \
  { "progress", required_argument, NULL, OPT_PROGRESS },   \
  { "quiet", no_argument, NULL, 'q' }

/* 0, -1 (usage error reported), 1 (not a global option). */
extern int fc_global_option (struct globals *g, int c, const char *arg);

#endif /* FLEECECTL_OPTS_H */
