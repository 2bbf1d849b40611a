#!/usr/bin/env bash
# nbdkit-fleece
# SPDX-License-Identifier: BSD-3-Clause
#
# install-packages.sh WHO PACKAGE...: install the Debian packages that
# are missing, with apt-get (as root, or through sudo).  WHO names the
# caller in the message.  Does nothing with FLEECE_NO_APT=1 or on a
# machine without apt-get.

set -euo pipefail

who=$1
shift
[ "${FLEECE_NO_APT:-0}" != 1 ] || exit 0
command -v apt-get >/dev/null || exit 0

missing=()
for p in "$@"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' ||
    missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "$who: installing ${missing[*]}"
sudo=
[ "$(id -u)" -eq 0 ] || sudo=sudo
$sudo apt-get update -q
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q \
  --no-install-recommends "${missing[@]}"
