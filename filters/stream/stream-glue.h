/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * The callbacks stream.c gives glue.c for the nbdkit_filter struct.
 */

#ifndef FLEECE_STREAM_GLUE_H
#define FLEECE_STREAM_GLUE_H

#include <nbdkit-filter.h>

#include "glue.h"

extern void *stream_open (nbdkit_next_open *next, nbdkit_context *nxdata,
                          int readonly, const char *exportname, int is_tls);
extern int stream_can_cache (nbdkit_next *next, void *handle);
extern int stream_pread (nbdkit_next *next, void *handle, void *buf,
                         uint32_t count, uint64_t offset, uint32_t flags,
                         int *err);
extern int stream_write (nbdkit_next *next, void *handle,
                         enum fleece_write_op op, const void *buf,
                         uint32_t count, uint64_t offset, uint32_t flags,
                         int *err);
extern int stream_flush (nbdkit_next *next, void *handle, uint32_t flags,
                         int *err);
extern int stream_extents (nbdkit_next *next, void *handle, uint32_t count,
                           uint64_t offset, uint32_t flags,
                           struct nbdkit_extents *extents, int *err);

/* Start-up steps (stream.c): .after_fork's work and .cleanup's. */
extern int stream_start (nbdkit_backend *backend);
extern void stream_stop (void);
extern void stream_free (void);

#endif /* FLEECE_STREAM_GLUE_H */
