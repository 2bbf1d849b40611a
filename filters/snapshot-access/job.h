/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * Push backup jobs (product contract, sections 4 and 9): backup-start,
 * job-cancel, job-pause, job-resume, job-set-speed and the "jobs"
 * member of status.  The engine and its locking are described at the
 * top of job.c.
 */

#ifndef FLEECE_SA_JOB_H
#define FLEECE_SA_JOB_H

#include <nbdkit-filter.h>

#include "fleece-api.h"

#include "control.h"
#include "json.h"

/* From .get_ready: nbdkit's thread model (one worker unless parallel). */
extern void job_set_thread_model (int thread_model);
/* From .after_fork: the backend below snapshot-access, on which jobs
 * open their own read-only contexts.
 */
extern void job_set_backend (nbdkit_backend *backend);

/* The control commands above (a ctl_handler-like function, without
 * the opaque pointer; a command table row can point at it).
 */
extern const struct fleece_command job_commands[];
/* Append ,"jobs":[...] to a status reply. */
extern void job_status (struct jbuf *reply);
/* Fail every running job with reason why and wait until it has ended
 * (snapshot ended, checkpoint merged back); refuse new jobs from then
 * on.  Idempotent.
 */
extern void job_stop_all (const char *why);

#endif /* FLEECE_SA_JOB_H */
