/* nbdkit-fleece
 * SPDX-License-Identifier: BSD-3-Clause
 *
 * Reading the kernel's boot id (see bootid.h).
 */

#include <config.h>

#include <ctype.h>
#include <stdbool.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bootid.h"

#define BOOT_ID_PATH "/proc/sys/kernel/random/boot_id"

/* 32 hex digits (dashes and a final newline ignored) into id. */
static int
parse (const char *s, unsigned char id[FLEECE_BOOT_ID_LEN])
{
  size_t n = 0;
  bool any = false;

  memset (id, 0, FLEECE_BOOT_ID_LEN);
  for (; *s && *s != '\n'; s++) {
    int v;

    if (*s == '-')
      continue;
    if (!isxdigit ((unsigned char) *s) || n >= 2 * FLEECE_BOOT_ID_LEN)
      goto bad;
    v = isdigit ((unsigned char) *s) ? *s - '0'
      : tolower ((unsigned char) *s) - 'a' + 10;
    id[n / 2] |= v << (n % 2 ? 0 : 4);
    any |= v != 0;
    n++;
  }
  if (n == 2 * FLEECE_BOOT_ID_LEN && any)
    return 0;
 bad:
  memset (id, 0, FLEECE_BOOT_ID_LEN);
  return -1;
}

int
fleece_boot_id (unsigned char id[FLEECE_BOOT_ID_LEN])
{
  const char *test = getenv ("FLEECE_TEST_BOOT_ID");
  char buf[64];
  ssize_t r;
  int fd;

  if (test)
    return parse (test, id);
  memset (id, 0, FLEECE_BOOT_ID_LEN);
  fd = open (BOOT_ID_PATH, O_RDONLY | O_CLOEXEC);
  if (fd == -1)
    return -1;
  r = read (fd, buf, sizeof buf - 1);
  close (fd);
  if (r <= 0)
    return -1;
  buf[r] = '\0';
  return parse (buf, id);
}
