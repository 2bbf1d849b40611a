#!/usr/bin/python3
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# NBD client helpers for test-security.sh (libnbd, Debian's python3).
#
#   sec_nbd.py try-uri URI
#       connect and read the first 4 KiB; exit 0 if that worked, 3 if
#       the server refused (connect or read failed)
#   sec_nbd.py try-export SOCK NAME
#       the same with the raw export name NAME (may hold '/', '..',
#       newlines) on Unix socket SOCK
#   sec_nbd.py patch URI SRC CHUNK OFFSET...
#       write CHUNK bytes of file SRC, taken at each OFFSET, to the
#       same OFFSET of URI, then flush
#   sec_nbd.py sha URI OFFSET LENGTH
#       print the SHA-256 of LENGTH bytes at OFFSET of URI

import hashlib
import sys

import nbd

from fleece_lib import connect, connect_uri as lib_connect_uri


def connect_uri(uri):
    # Our URIs name a tls-psk-file, which libnbd only reads if allowed.
    return lib_connect_uri(uri, local_files=True)


def try_open(make):
    try:
        h = make()
        h.pread(4096, 0)
        h.shutdown()
    except nbd.Error as e:
        print("refused: %s" % e, file=sys.stderr)
        return 3
    return 0


def main(argv):
    cmd = argv[1]
    if cmd == "try-uri":
        return try_open(lambda: connect_uri(argv[2]))
    if cmd == "try-export":
        sock, name = argv[2], argv[3]
        return try_open(lambda: connect(sock, name))
    if cmd == "patch":
        uri, src, chunk = argv[2], argv[3], int(argv[4])
        h = connect_uri(uri)
        with open(src, "rb") as f:
            for off in map(int, argv[5:]):
                f.seek(off)
                h.pwrite(f.read(chunk), off)
        h.flush()
        h.shutdown()
        return 0
    if cmd == "sha":
        uri, off, length = argv[2], int(argv[3]), int(argv[4])
        h = connect_uri(uri)
        digest = hashlib.sha256()
        pos = off
        while pos < off + length:
            n = min(1 << 20, off + length - pos)
            digest.update(h.pread(n, pos))
            pos += n
        h.shutdown()
        print(digest.hexdigest())
        return 0
    print("unknown command %s" % cmd, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
