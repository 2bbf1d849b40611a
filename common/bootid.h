/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * The kernel's boot id: a random 128-bit value the kernel picks at
 * each boot (/proc/sys/kernel/random/boot_id).  Two equal boot ids mean
 * the same boot, so the page cache of that boot was never lost.
 */

#ifndef FLEECE_BOOTID_H
#define FLEECE_BOOTID_H

#define FLEECE_BOOT_ID_LEN 16

/* This boot's id into id.  0, or -1 (id all zeroes: unknown, which
 * never equals a recorded id).
 *
 * Test-only: if FLEECE_TEST_BOOT_ID is set in the environment, its
 * value is read instead of the kernel's file (the tests use it to load
 * a file as after a reboot).  It is read here and nowhere else.
 */
extern int fleece_boot_id (unsigned char id[FLEECE_BOOT_ID_LEN]);

#endif /* FLEECE_BOOTID_H */
