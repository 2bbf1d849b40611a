/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * CRC-32 (the IEEE 802.3 polynomial, as used by zlib and gzip), for
 * checking files the filters write.
 */

#ifndef FLEECE_CRC32_H
#define FLEECE_CRC32_H

#include <stddef.h>
#include <stdint.h>

/* Continue a CRC: start with crc = 0. */
extern uint32_t fleece_crc32 (uint32_t crc, const void *buf, size_t len);

#endif /* FLEECE_CRC32_H */
